"""The training steps of the pipeline: first training of horizons without a model, and retraining of drifting ones."""

from __future__ import annotations

from services.predict.model import current_version
from services.training.train import train
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import RunRef, TrainOutput
from shared.records import TrainingFailure, TrainingResult


def train_missing(ctx: StepContext, ref: RunRef) -> TrainOutput:
    """Horizons without a CURRENT model are trained on the run's stored history before anything is predicted."""
    settings, lake = ctx.settings, ctx.lake
    missing = [h for h in ref.horizons if current_version(lake, h) is None]
    out = TrainOutput(run_id=ref.run_id)
    if not missing:
        return out
    # Live or files alike: the run's stored series are the history (a live run fetches `exchange.history` of
    # candles and the full sentiment history); a horizon they cannot fill says so and stays without a model.
    ctx.tick(f"no CURRENT model for {', '.join(missing)}: training them first with the quick budget "
             f"(data before {ref.as_of})")
    results = train(settings, lake, ref.run_id, until=ref.as_of, horizons=missing, budget="quick", tick=ctx.tick)
    _record(out, results)
    return out


def _record(out: TrainOutput, results: dict[str, TrainingResult]) -> None:
    for h, m in results.items():
        if isinstance(m, TrainingFailure):
            out.trained[h] = f"not trained: [{m.error}] {m.message}"
            out.results[h] = {"version": None, "promoted": None, "error": m.message}
            if m.failed:
                out.failed[h] = {"code": m.error, "message": m.message}
            continue
        out.trained[h] = m.version
        out.results[h] = {"version": m.version, "promoted": m.promoted, "error": None,
                          "gate": m.gate.reason if m.gate else None}


def retrain(ctx: StepContext, ref: RunRef) -> TrainOutput:
    """The horizons the drift step flagged, retrained with the run budget; CURRENT moves only through the gate."""
    settings = ctx.settings
    drift = ctx.output(ref.run_id, "drift")
    horizons = list(drift.retrain) if drift is not None else []
    out = TrainOutput(run_id=ref.run_id)
    earlier = ctx.output(ref.run_id, "retrain")
    if earlier is not None:
        # A run finished again after a failed retrain: what was retrained stays, only the failures are retried.
        out = earlier.model_copy(update={"failed": {}}, deep=True)
        horizons = [h for h in horizons if h in earlier.failed]
    if not horizons:
        return out
    why = {h: "; ".join(drift.report[h].reasons) or "drift" for h in horizons}
    if ref.no_retrain:
        out.deferred = why
        return out
    ctx.tick("retraining " + ", ".join(f"{h} ({why[h]})" for h in horizons) + f", {settings.run.retrain_budget} budget")
    results = train(settings, ctx.lake, ref.run_id, until=ref.as_of, horizons=horizons,
                    budget=settings.run.retrain_budget, tick=ctx.tick)
    _record(out, results)
    return out
