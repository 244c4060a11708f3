"""The summary step of the pipeline: what ran, what was excluded and why, the signals and every failure, in the run's
summary (`shared.runs`). It reads every earlier step's stored output, so it sits with the orchestrator that ran them."""

from __future__ import annotations

from collections import defaultdict

from services.predict.steps import quality_index
from shared.errors import LakeKeyNotFound
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import RunRef, SummaryOutput
from shared.records import Failure, RunSummary
from shared.runs import put_summary


def summary(ctx: StepContext, ref: RunRef) -> SummaryOutput:
    """What ran, what was excluded and why, the signals and every failure, in runs/run_id=<id>/summary.json."""
    run = ref.run_id
    o = {name: ctx.output(run, name) for name in ("ingest", "validate", "features", "train", "risk", "outcomes",
                                                   "performance", "drift", "retrain")}
    preds = {h: ctx.output(run, "predict", h) for h in ref.horizons}
    predicted = sorted({c for p in preds.values() if p for c in p.coins})
    excluded_by_coin: dict[str, dict[str, str]] = defaultdict(dict)
    for h, p in preds.items():
        for c, why in (p.excluded if p else {}).items():
            excluded_by_coin[c][h] = why
    coins_total = sorted(set(predicted) | set(excluded_by_coin))
    try:
        coins_total = quality_index(ctx, run).coins or coins_total
    except LakeKeyNotFound:
        pass
    risk_out, drift_out = o["risk"], o["drift"]
    timings = {name: out.seconds for name, out in o.items() if out is not None}
    timings["predict"] = round(sum(p.seconds for p in preds.values() if p), 3)
    failures = list(ref.failures) + [
        Failure(step=name, item=h, **f) for name in ("train", "retrain") if o[name] is not None
        for h, f in sorted(o[name].failed.items())]
    status = "failed" if failures else "complete"
    doc = RunSummary(
        run_id=run, as_of=ref.as_of, source=ref.source, status=status, failures=failures,
        coins_total=len(coins_total), coins_predicted=len(predicted),
        excluded={c: "; ".join(f"{h}: {why}" for h, why in sorted(hs.items()))
                  for c, hs in sorted(excluded_by_coin.items()) if c not in predicted},
        partially_excluded={c: hs for c, hs in sorted(excluded_by_coin.items()) if c in predicted},
        predictions=risk_out.predictions if risk_out else sum(p.predictions for p in preds.values() if p),
        new_predictions=sum(p.new for p in preds.values() if p),
        served_from_earlier_runs={h: p.predicted_by for h, p in preds.items()
                                  if p and p.predicted_by and p.predicted_by != run},
        actionable=risk_out.actionable if risk_out else 0,
        uncertified_horizons={h: p.uncertified for h, p in preds.items() if p and p.uncertified},
        signals=risk_out.signals if risk_out else [], tradable_signals=risk_out.tradable if risk_out else 0,
        cross_section_signals=risk_out.cross_section if risk_out else [],
        cross_section_uncertified={h: p.beats_uncertified for h, p in preds.items() if p and p.beats_uncertified},
        basket=risk_out.basket if risk_out else None, basket_note=risk_out.basket_note if risk_out else None,
        outcomes_recorded=sum(o["outcomes"].recorded.values()) if o["outcomes"] else 0,
        no_outcome=o["outcomes"].no_outcome if o["outcomes"] else {},
        drift=drift_out.report if drift_out else {},
        universes={tf: f.universe for tf, f in o["features"].frames.items() if f.universe} if o["features"] else {},
        trained=o["train"].trained if o["train"] else {},
        retrained=o["retrain"].results if o["retrain"] else {},
        retrain_deferred=o["retrain"].deferred if o["retrain"] else {},
        horizons_without_model={h: p.no_model for h, p in preds.items() if p and p.no_model},
        quality_key=o["validate"].quality_key if o["validate"] else None,
        fetch_failures=len(o["ingest"].failures) if o["ingest"] else None,
        timings=timings,
    )
    key = put_summary(ctx.lake, doc)
    from services.alerts.notify import dispatch

    told = dispatch(ctx.settings, ctx.lake, run)  # once per decision: a summary written again sends nothing new
    return SummaryOutput(run_id=run, status=status, summary_key=key, alerts=told.sent,
                         alerts_already_sent=told.already_sent, alert_deliveries_failed=told.failed_deliveries)
