"""Lambda handlers, one per pipeline step that runs in Lambda, generated from the one definition.

Each parses the event (the state machine's task input) into the step's input contract, runs the step exactly
as `cst step` does, and returns the step's output contract. A retryable error code is raised as the transient
error type the state machine retries; any other error reaches its Catch and the run's summary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.runner import run_step
from shared.errors import CstError
from shared.pipeline import PIPELINE, STEPS, TRANSIENT_ERROR, RunRef, StepContext
from shared.settings import get_settings
from shared.storage import open_lake


class TransientStepError(Exception):
    """A failure a later attempt can fix (its class name is what the state machine's Retry matches)."""


assert TransientStepError.__name__ == TRANSIENT_ERROR


def _context() -> StepContext:
    settings = get_settings()
    return StepContext(settings, open_lake(settings.lake.uri, region=settings.aws_region))


def make_handler(name: str) -> Callable[[dict, Any], dict]:
    step = STEPS[name]

    def handler(event: dict, context: Any = None) -> dict:
        ref = RunRef.model_validate(event)
        try:
            return run_step(_context(), name, ref, ref.item).model_dump(mode="json")
        except CstError as exc:
            if exc.code in step.retry.codes:
                raise TransientStepError(str(exc)) from exc
            raise

    handler.__name__ = handler.__qualname__ = name
    return handler


HANDLERS: dict[str, Callable[[dict, Any], dict]] = {s.name: make_handler(s.name) for s in PIPELINE
                                                    if s.runtime != "sagemaker"}
globals().update(HANDLERS)  # services.handlers.<step> is each function's handler setting
