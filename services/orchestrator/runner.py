"""The local runner: walks the one pipeline definition in process, step by step, every hand-off through the lake.

Retries live in one layer per runtime. Here the runner retries a step's transient failures (its `retry` policy,
sleeping between attempts); in the cloud a handler makes one attempt and Step Functions retries the task, so no
attempt is billed twice and nothing sleeps inside a Lambda.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from services.orchestrator.entries import ENTRIES
from shared import runs
from shared.errors import CstError
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import RunRef, StepOutput
from shared.pipeline.definition import PIPELINE, STEPS, Step
from shared.records import Failure

log = logging.getLogger(__name__)


def items_of(step: Step, ref: RunRef) -> list[str | None]:
    return list(getattr(ref, step.map_over)) if step.map_over else [None]


def _step(name: str, item: str | None) -> Step:
    step = STEPS.get(name)
    if step is None:
        raise CstError("unknown_step", f"no pipeline step {name!r}; steps: {', '.join(STEPS)}")
    if step.map_over and item is None:
        example = "24h" if step.map_over == "horizons" else "0"
        raise CstError("step_needs_item", f"step {name} runs once per {step.item_noun}: give one (e.g. --item {example})")
    return step


def execute(ctx: StepContext, name: str, ref: RunRef, item: str | None = None) -> StepOutput:
    """One attempt at one step from what the lake holds, its output stored under the run; a step whose output is
    stored already (and complete) is not run again. What a Lambda handler and the SageMaker job call."""
    step = _step(name, item)
    done = None if step.rerun else ctx.output(ref.run_id, name, item)
    if done is not None and getattr(done, "complete", True):
        return done
    started = time.perf_counter()
    out = ENTRIES[name](ctx, ref.model_copy(update={"item": item}))
    out.step, out.item, out.seconds = name, item, round(time.perf_counter() - started, 3)
    runs.store_output(ctx.lake, out)
    return out


def run_step(ctx: StepContext, name: str, ref: RunRef, item: str | None = None) -> StepOutput:
    """One step as the local runner runs it: `execute`, with the step's retries of transient error codes."""
    step = _step(name, item)
    attempt = 0
    while True:
        attempt += 1
        try:
            return execute(ctx, name, ref, item)
        except CstError as exc:
            if exc.code not in step.retry.codes or attempt >= step.retry.max_attempts:
                raise
            wait = step.retry.interval_s * step.retry.backoff ** (attempt - 1)
            log.warning("step %s%s failed with %s (attempt %d); retrying in %.1f s", name,
                        f"[{item}]" if item else "", exc.code, attempt, wait)
            time.sleep(wait)


def run_ingest(ctx: StepContext, ref: RunRef) -> StepOutput:
    """The run's staged series as the pipeline makes them: a live run's fetch batches, one after another, then the
    ingest step that joins them (a file import is the ingest step alone). A failed batch is in the ingest output's
    failures; the other batches' coins go on."""
    items = items_of(STEPS["fetch"], ref)
    errors = _run_items(ctx, STEPS["fetch"], ref, items)
    for item, exc in zip(items, errors, strict=True):
        if exc is not None:
            log.warning("fetch batch %s failed: %s", item, exc)
    if items and all(errors):
        raise errors[0]  # nothing was fetched: the first batch's error says why (e.g. which hosts are unreachable)
    return run_step(ctx, "ingest", ref)


def should_run(ctx: StepContext, step: Step, ref: RunRef) -> bool:
    if not step.when:
        return True
    name, _, attr = step.when.partition(".")
    out = ctx.output(ref.run_id, name)
    return bool(out is not None and getattr(out, attr))


def _failure(step: str, item: str | None, exc: Exception) -> Failure:
    code = exc.code if isinstance(exc, CstError) else "unexpected_error"
    message = exc.message if isinstance(exc, CstError) else f"{type(exc).__name__}: {exc}"
    return Failure(step=step, item=item, code=code, message=message)


def _attempt(ctx: StepContext, step: Step, ref: RunRef, item: str | None) -> Exception | None:
    try:
        run_step(ctx, step.name, ref, item)
    except Exception as exc:
        if not isinstance(exc, CstError):
            log.exception("step %s failed unexpectedly", step.name)
        return exc
    return None


def _run_items(ctx: StepContext, step: Step, ref: RunRef, items: list[str | None]) -> list[Exception | None]:
    """Each item's error (None when it ran). A Map's items run side by side (ONNX and SHAP release the GIL), as the
    state machine's Map runs them, at most the step's concurrency."""
    if not step.map_over:
        return [_attempt(ctx, step, ref, None)]
    workers = max(1, min(len(items), step.max_concurrency or ctx.settings.run.horizon_workers))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(_attempt, [ctx] * len(items), [step] * len(items), [ref] * len(items), items))


def run_pipeline(ctx: StepContext, ref: RunRef, on_step: Callable[[str], None] | None = None) -> StepOutput:
    """Every step in the definition's order. A failed Map item leaves the other items running; any other
    failed step stops the run there. The summary step always runs and names every failure."""
    failures: list[Failure] = list(ref.failures)
    final = PIPELINE[-1]
    for step in PIPELINE[:-1]:
        if not should_run(ctx, step, ref):
            continue
        if on_step is not None:
            on_step(step.name)
        items = items_of(step, ref)
        errors = _run_items(ctx, step, ref, items)
        failed = [(item, exc) for item, exc in zip(items, errors, strict=True) if exc is not None]
        failures.extend(_failure(step.name, item, exc) for item, exc in failed)
        if failed and step.map_over is None:
            break
    if on_step is not None:
        on_step(final.name)
    return run_step(ctx, final.name, ref.model_copy(update={"failures": failures}))
