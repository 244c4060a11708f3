"""Lambda handlers: the run's start and one per pipeline step that runs in Lambda, generated from the one definition.

Each handler has the cookbook's shape: Powertools Logger (JSON, the run id as correlation id), Metrics (EMF:
the step's duration and counts, from its output contract) and Tracer around one call: the event (the state
machine's task input) parsed into the step's input contract, the step run exactly as `cst step` runs it, the step's
output contract returned. A handler makes one attempt: a retryable error code is raised as the transient error type
the state machine retries (retries live there, never sleeping inside a Lambda); any other error reaches its Catch and
the run's summary. Settings come from the environment and secrets from
Secrets Manager through the settings tree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from services.orchestrator.runner import execute
from shared.contracts import iso_to_ms
from shared.errors import CstError
from shared.pipeline.asl import START, TRANSIENT_ERROR
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import RunRef, RunStart
from shared.pipeline.definition import PIPELINE, STEPS
from shared.runs import new_ref, save_ref
from shared.settings import get_settings
from shared.storage import open_lake

SERVICE = "cst"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="cst", service=SERVICE)


class TransientStepError(Exception):
    """A failure a later attempt can fix (its class name is what the state machine's Retry matches)."""


assert TransientStepError.__name__ == TRANSIENT_ERROR


def _context(secrets: bool = False) -> StepContext:
    """Settings from the environment; the source credentials only for a step that calls the sources (only its role
    may read the secret)."""
    settings = get_settings(secrets)
    return StepContext(settings, open_lake(settings.lake.uri, region=settings.aws_region))


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler
def start(event: dict, context: Any = None) -> dict:
    """EventBridge Scheduler -> the run's reference (stored in the lake, then the state every step receives)."""
    req = RunStart.model_validate(event)
    ctx = _context()
    ref = new_ref(ctx.settings, req.source, iso_to_ms(req.as_of) if req.as_of else None, retrain=req.retrain,
                  retrain_only=req.retrain_only)
    logger.set_correlation_id(ref.run_id)
    save_ref(ctx.lake, ref)
    metrics.add_dimension(name="step", value=START)
    metrics.add_metric(name="RunsStarted", unit=MetricUnit.Count, value=1)
    return ref.model_dump(mode="json")


def make_handler(name: str) -> Callable[[dict, Any], dict]:
    step = STEPS[name]

    @logger.inject_lambda_context(log_event=False)
    @metrics.log_metrics
    @tracer.capture_lambda_handler
    def handler(event: dict, context: Any = None) -> dict:
        ref = RunRef.model_validate(event)
        logger.set_correlation_id(ref.run_id)
        logger.append_keys(step=name, item=ref.item)
        try:
            out = execute(_context(step.secrets), name, ref, ref.item)
        except CstError as exc:
            logger.warning("step failed", extra={"code": exc.code})
            if exc.code in step.retry.codes:
                raise TransientStepError(str(exc)) from exc
            raise
        metrics.add_dimension(name="step", value=name)
        for metric, value in out.metrics().items():
            metrics.add_metric(name=metric, unit=MetricUnit.Seconds if metric == "Seconds" else MetricUnit.Count,
                               value=value)
        return out.model_dump(mode="json")

    handler.__name__ = handler.__qualname__ = name
    return handler


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler
def alerts(event: dict, context: Any = None) -> dict:
    """The alerts topic (SNS) -> each message's alerts: a run's, delivered once per decision, or an operator's test.
    Its role alone reads the channels' URLs (the secret's `alert_urls`)."""
    import json

    from services.alerts.notify import on_message

    ctx = _context(secrets=True)
    handled = [on_message(ctx.settings, ctx.lake, json.loads(r["Sns"]["Message"])).model_dump(mode="json")
               for r in event.get("Records", [])]
    metrics.add_dimension(name="step", value="alerts")
    metrics.add_metric(name="AlertsSent", unit=MetricUnit.Count,
                       value=sum(sum(h.get("sent", {}).values()) for h in handled))
    return {"handled": handled}


HANDLERS: dict[str, Callable[[dict, Any], dict]] = {s.name: make_handler(s.name) for s in PIPELINE
                                                    if s.runtime != "sagemaker"}
globals().update(HANDLERS)  # services.orchestrator.handlers.<step> is each function's handler setting
