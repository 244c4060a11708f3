"""The local runner: walks the one pipeline definition in process, step by step, every hand-off through the lake."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from shared.contracts import ms_to_iso
from shared.errors import CstError, LakeKeyNotFound
from shared.pipeline import (
    PIPELINE,
    STEPS,
    RunRef,
    Step,
    StepContext,
    StepOutput,
    step_output_key,
    summary_key,
)
from shared.settings import Settings
from shared.storage import Lake

log = logging.getLogger(__name__)


def make_ref(settings: Settings, source: str, as_of_ms: int) -> RunRef:
    """A run is identified by its source and as-of: the same cycle always writes the same keys."""
    from services.ingest.logic import fetch_batches, run_id_for, source_id

    sid = source_id(source)
    return RunRef(run_id=run_id_for(sid, as_of_ms), as_of=ms_to_iso(as_of_ms), source=sid,
                  horizons=[h for h in settings.horizons if h in settings.training.horizons],
                  batches=fetch_batches(settings) if sid == "live" else [])


def ref_key(run_id: str) -> str:
    return f"runs/run_id={run_id}/ref.json"


def save_ref(lake: Lake, ref: RunRef) -> None:
    lake.put_json(ref_key(ref.run_id), ref.model_dump(mode="json"), if_absent=True)


def load_ref(lake: Lake, run_id: str) -> RunRef:
    try:
        return RunRef.model_validate(lake.get_json(ref_key(run_id)))
    except LakeKeyNotFound:
        raise CstError("unknown_run", f"no run {run_id!r} in {lake.uri}: start it with --source (and --as-of)") from None


def complete_summary(lake: Lake, run_id: str) -> dict | None:
    """The run's summary when the run completed; a failed or unfinished run has none that counts."""
    try:
        doc = lake.get_json(summary_key(run_id))
    except LakeKeyNotFound:
        return None
    return doc if doc.get("status", "complete") == "complete" else None


def resolve(entry: str) -> Callable[[StepContext, RunRef], StepOutput]:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def items_of(step: Step, ref: RunRef) -> list[str | None]:
    return list(getattr(ref, step.map_over)) if step.map_over else [None]


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


def run_step(ctx: StepContext, name: str, ref: RunRef, item: str | None = None) -> StepOutput:
    """One step from what the lake holds; a step whose output is stored already is not run again."""
    step = STEPS.get(name)
    if step is None:
        raise CstError("unknown_step", f"no pipeline step {name!r}; steps: {', '.join(STEPS)}")
    if step.map_over and item is None:
        raise CstError("step_needs_item", f"step {name} runs once per {step.item_noun}: give one (e.g. --item "
                                            f"{'24h' if step.map_over == 'horizons' else '0'})")
    done = None if step.rerun else ctx.output(ref.run_id, name, item)
    if done is not None and getattr(done, "complete", True):
        return done
    fn = resolve(step.entry)
    attempt = 0
    while True:
        attempt += 1
        started = time.perf_counter()
        try:
            out = fn(ctx, ref.model_copy(update={"item": item}))
            break
        except CstError as exc:
            if exc.code not in step.retry.codes or attempt >= step.retry.max_attempts:
                raise
            wait = step.retry.interval_s * step.retry.backoff ** (attempt - 1)
            log.warning("step %s%s failed with %s (attempt %d); retrying in %.1f s", name,
                        f"[{item}]" if item else "", exc.code, attempt, wait)
            time.sleep(wait)
    out.step, out.item, out.seconds = name, item, round(time.perf_counter() - started, 3)
    store_output(ctx, out)
    return out


def store_output(ctx: StepContext, out: StepOutput) -> None:
    """The step's output contract under the run: the next steps' input and the mark that it has run."""
    ctx.lake.put_json(step_output_key(out.run_id, out.step, out.item), out.model_dump(mode="json"))


def _failure(step: str, item: str | None, exc: Exception) -> dict:
    code = exc.code if isinstance(exc, CstError) else "unexpected_error"
    message = exc.message if isinstance(exc, CstError) else f"{type(exc).__name__}: {exc}"
    return {"step": step, "item": item, "code": code, "message": message}


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
    failures: list[dict] = list(ref.failures)
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
