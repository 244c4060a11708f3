"""The serving steps of the pipeline: predict one horizon, consensus and risk, outcomes, performance, drift, the summary.

Each step reads what earlier steps stored in the lake (feature and panel partitions, the quality report, the
prediction log, earlier step outputs) and writes its own results there; nothing is handed over in memory.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from itertools import groupby

import numpy as np

from services.features.frame import Panel, coin_of
from services.features.sequences import sequence_index, sequences
from services.features.store import read_frame, read_panel
from services.predict import conformal, drift as drift_mod, logbook
from services.predict.model import (
    HorizonModel,
    current_version,
    top_features,
)
from services.predict.pool import explain_rows
from services.predict.signals import actionable
from shared.contracts import QualityReport, iso_to_ms, ms_to_iso
from shared.errors import CstError
from shared.metrics import brier, ece
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import (
    DriftOutput,
    OutcomesOutput,
    PerformanceOutput,
    PredictOutput,
    RunRef,
)
from shared.records import (
    CoinPerformance,
    DriftVerdict,
    ModelMetadata,
    NoOutcome,
    Outcome,
    Prediction,
    RangeSeed,
    TargetModel,
)
from shared.registry import load_metadata
from shared.runs import quality_key
from shared.settings import Settings, timeframe_ms
from shared.storage import Lake


def certification(metadata: ModelMetadata | TargetModel | None, threshold: float, min_n: int) -> str | None:
    """None when the model (or a version's cross-sectional stack) showed skill out of sample and its held-out
    confident bucket backs its confidences; otherwise why not."""
    if metadata is None:
        return "no cross-sectional model in this version"
    skill = metadata.skill
    if not skill or not skill.get("demonstrated"):
        return "no demonstrated skill" + ("" if skill else " (the model predates the skill test; retrain)")
    conf = metadata.metrics.get("confident", {})
    n, hit = int(conf.get("n") or 0), conf.get("hit_rate")
    if n < min_n:
        return f"held-out evidence at confidence >= {threshold}: {n} rows (< {min_n})"
    if hit is None or hit < threshold:
        return f"held-out hit rate at confidence >= {threshold} is {hit:.3f} over {n} rows"
    return None


class QualityIndex:
    """The run's quality report indexed by coin and timeframe: an excluded coin's reason is one lookup."""

    def __init__(self, report: QualityReport):
        self.by_coin_tf: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for key, s in report.series.items():
            layer, tf, symbol = key.split("/", 2)
            if layer == "ohlcv":
                self.by_coin_tf[(coin_of(symbol)[0], tf)].append(s.model_dump())
        self.coins = sorted({c for c, _ in self.by_coin_tf})

    def why_missing(self, coin: str, tf: str, t_now: int, panel: Callable[[], Panel | None], row_exists: bool) -> str:
        """Why a coin has no prediction at t_now; `panel` (the candle before t_now) is read only if it decides."""
        reports = self.by_coin_tf.get((coin, tf), [])
        if not reports:
            return f"no {tf} price series"
        if all(r["status"] == "excluded" for r in reports):
            codes = sorted({c for r in reports for c in r["issues"] if c in ("stale", "no_data")})
            return f"{tf} series excluded by the quality gate ({', '.join(codes) or 'excluded'})"
        if not row_exists:
            panel = panel()
            if panel is None or coin not in panel.coins:
                return f"{tf} series not used"
            step = timeframe_ms(tf)
            j = panel.coins.index(coin)
            slot = (t_now - step - panel.open_ts[0]) // step if panel.open_ts.size else -1
            if slot < 0 or slot >= panel.open_ts.size or not np.isfinite(panel.fields["close"][slot, j]):
                return f"no candle closing at {ms_to_iso(t_now)}"
            return "features incomplete at as-of (warm-up, a gap in a window, or a missing layer)"
        return "sequence window incomplete (a missing row among the last L)"


def quality_index(ctx: StepContext, run_id: str) -> QualityIndex:
    return QualityIndex(QualityReport.model_validate(ctx.lake.get_json(quality_key(run_id))))


def decision_time(settings: Settings, horizon: str, as_of_ms: int) -> int:
    """The latest candle close at or before as-of on the horizon's timeframe."""
    step = timeframe_ms(settings.training.horizons[horizon].timeframe)
    return (as_of_ms // step) * step


def predict(ctx: StepContext, ref: RunRef) -> PredictOutput:
    settings, lake, h = ctx.settings, ctx.lake, ref.item
    if h not in settings.training.horizons:
        raise CstError("unknown_horizon", f"unknown horizon {h!r}; known: {list(settings.training.horizons)}")
    spec = settings.training.horizons[h]
    tf, step = spec.timeframe, timeframe_ms(spec.timeframe)
    t_now = decision_time(settings, h, iso_to_ms(ref.as_of))
    out = PredictOutput(run_id=ref.run_id, horizon=h, decision_ts=t_now)
    version = current_version(lake, h)
    if version is None:
        trained = ctx.output(ref.run_id, "train")
        out.no_model = (trained.trained.get(h) if trained else None) or "no CURRENT model"
        return out
    done = logbook.logged_decision(lake, h, t_now)
    if done is not None and done[0] != ref.run_id:
        # This decision time was predicted by an earlier run (an hourly run meets the daily close many times):
        # its predictions stand, and this run serves them instead of predicting the same decision again. Logged by
        # this run itself (stopped after writing them, before recording the step), they are its own: predicted
        # again below, the same rows, the logged file kept, so the step says what an uninterrupted one says.
        by, key, rows = done
        earlier = ctx.output(by, "predict", h)
        out.predicted_by, out.log_key, out.predictions = by, key, len(rows)
        out.model_version = rows[0].model_version
        out.coins = sorted(r.coin for r in rows)
        if earlier is not None:
            out.excluded, out.uncertified = earlier.excluded, earlier.uncertified
        return out
    ctx.tick(f"predicting {h}")
    model = HorizonModel.load(lake, h, version)
    out.model_version = version
    thr = settings.confidence_threshold
    out.uncertified = certification(model.metadata, thr, settings.run.certify_min_n)
    out.beats_uncertified = certification(model.metadata.beats, thr, settings.run.certify_min_n)
    quality = quality_index(ctx, ref.run_id)
    frame = read_frame(lake, tf, since_ms=t_now - (spec.sequence_length - 1) * step, until_ms=t_now)
    panel = functools.cache(lambda: read_panel(lake, tf, since_ms=t_now - step, until_ms=t_now - step))
    features = ctx.output(ref.run_id, "features")
    universe = features.frames[tf].universe if features and tf in features.frames else None
    outside = universe.excluded if universe is not None and universe.decision_ms == t_now else {}

    def why_missing(c: str, row_exists: bool) -> str:
        if c in outside and outside[c] != "no candle at this time":
            return f"outside the {tf} universe at this decision: {outside[c]}"
        return quality.why_missing(c, tf, t_now, panel, row_exists)

    if frame is None or len(frame) == 0:
        out.excluded = {c: why_missing(c, False) for c in quality.coins}
        return out
    if frame.names != model.names:
        raise CstError("feature_mismatch", f"model {h}/{model.version} was trained on other features; retrain")
    idx, full = sequence_index(frame.ts, frame.coin, step, spec.sequence_length)
    now_rows = np.flatnonzero((frame.ts == t_now) & frame.members())
    have = {frame.coin[i]: i for i in now_rows}
    rows = np.asarray([i for i in now_rows if full[i]], dtype=np.int64)
    for c in quality.coins:
        if c not in have or not full[have[c]]:
            out.excluded[c] = why_missing(c, c in have)
    if not rows.size:
        return out
    X, S = frame.X[rows], sequences(frame.X, idx[rows])
    pred = model.predict(X, S)
    phi, base = explain_rows(model, lake.uri, X, S, permutations=settings.training.shap_permutations,
                             seed=settings.training.seed, workers=settings.run.process_workers,
                             min_rows=settings.run.pool_min_rows)
    tops = top_features(phi, model.names, settings.training.shap_top_k)
    beats = _beats_fields(model, pred, X, S, lake.uri, settings, thr, out.beats_uncertified)
    ranges = conformal.load(lake, h, settings.run.range_alpha, settings.run.range_bins,
                            _range_seed(model.metadata))
    served_all = ranges.serve(pred.quantiles[:, 1], pred.vol) if pred.vol is not None else None
    verdict = (model.metadata.skill or {}).get("verdict", "no demonstrated skill")
    records = []
    for k, i in enumerate(rows):
        sigma = float(pred.vol[k]) if pred.vol is not None else None
        served = None if served_all is None or np.isnan(served_all[k, 0]) else \
            (float(served_all[k, 0]), float(served_all[k, 1]))
        records.append(Prediction(
            run_id=ref.run_id, coin=str(frame.coin[i]), horizon=h, as_of=ref.as_of,
            decision_ts=int(frame.ts[i]), p_up=float(pred.p_up[k]), p_low=float(pred.low[k]),
            p_high=float(pred.high[k]), direction=int(pred.direction[k]),
            confidence=float(pred.confidence[k]), q10=float(pred.quantiles[k, 0]),
            q50=float(pred.quantiles[k, 1]), q90=float(pred.quantiles[k, 2]),
            model_version=model.version,
            actionable=out.uncertified is None and actionable(float(pred.confidence[k]), thr),
            shap_base=float(base[k]), top_features=json.dumps(tops[k]),
            range_low=served[0] if served else None, range_high=served[1] if served else None,
            vol_forecast=sigma, skill=verdict, **beats[k],
        ))
    out.log_key = logbook.write_predictions(lake, ref.run_id, h, t_now, records)
    out.predictions = out.new = len(records)
    out.predicted_by = ref.run_id
    out.coins = sorted(r.coin for r in records)
    return out


def _beats_fields(model: HorizonModel, pred, X: np.ndarray, S: np.ndarray, lake_uri: str, settings: Settings,
                  thr: float, uncertified: str | None) -> list[dict]:
    """Each row's cross-sectional forecast (P(beats the universe's median), interval, score, SHAP), or nothing
    when the version has no cross-sectional stack."""
    if pred.beats is None:
        return [{} for _ in range(X.shape[0])]
    phi, _ = explain_rows(model, lake_uri, X, S, permutations=settings.training.shap_permutations,
                          seed=settings.training.seed, workers=settings.run.process_workers,
                          min_rows=settings.run.pool_min_rows, stack="beats/")
    tops = top_features(phi, model.names, settings.training.shap_top_k)
    verdict = (model.metadata.beats.skill or {}).get("verdict", "no demonstrated skill")
    conf = pred.beats_confidence
    return [{"p_beats": float(pred.beats[k]), "p_beats_low": float(pred.beats_low[k]),
             "p_beats_high": float(pred.beats_high[k]), "beats_score": float(pred.beats_logit[k]),
             "beats_confidence": float(conf[k]), "beats_actionable": uncertified is None and actionable(float(conf[k]), thr),
             "beats_skill": verdict, "beats_top_features": json.dumps(tops[k])} for k in range(X.shape[0])]


def served_predictions(ctx: StepContext, ref: RunRef) -> list[Prediction]:
    """The predictions this run serves: each horizon's current decision time, whichever run logged it."""
    out = []
    for h in ref.horizons:
        p = ctx.output(ref.run_id, "predict", h)
        if p is not None and p.log_key:
            out.extend(logbook.read_predictions(ctx.lake, p.log_key, p.decision_ts))
    return out


def outcomes(ctx: StepContext, ref: RunRef) -> OutcomesOutput:
    """Every prediction that matured since the horizon's watermark and whose prices are known gets its outcome,
    once. A missing price is never guessed: that outcome stays unknown."""
    settings, lake = ctx.settings, ctx.lake
    as_of = iso_to_ms(ref.as_of)
    out = OutcomesOutput(run_id=ref.run_id)
    for h in ref.horizons:
        spec = settings.training.horizons[h]
        tf, step, length = spec.timeframe, timeframe_ms(spec.timeframe), spec.length_ms
        mark = logbook.watermark(lake, h)
        if mark is not None and mark >= as_of:
            continue
        lo = None if mark is None else mark - length
        preds = logbook.maturing(lake, h, lo, as_of - length)
        records: list[Outcome] = []
        missing: list[NoOutcome] = []
        if preds:
            first = min(p.decision_ts for p in preds)
            panel = read_panel(lake, tf, since_ms=first - step, until_ms=as_of)
            column = {c: j for j, c in enumerate(panel.coins)} if panel is not None else {}
            for row in preds:
                r = _realized(panel, column, row, step, spec.bars)
                if r is None:
                    # Checked once (the watermark moves past it): reported with its reason, never dropped.
                    reason, last = _why_no_outcome(panel, column, row, step, spec.bars)
                    missing.append(NoOutcome(run_id=row.run_id, coin=row.coin, horizon=h,
                                             decision_ts=row.decision_ts, matured_ts=int(row.decision_ts + length),
                                             recorded_by=ref.run_id, reason=reason, last_price_ts=last))
                    continue
                records.append(Outcome(
                    run_id=row.run_id, coin=row.coin, horizon=h, decision_ts=row.decision_ts,
                    matured_ts=int(row.decision_ts + length), recorded_as_of=ref.as_of,
                    recorded_by=ref.run_id, realized_return=r, direction=row.direction,
                    hit=bool((r > 0 and row.direction == 1) or (r < 0 and row.direction == -1)),
                    p_up=row.p_up, confidence=row.confidence, actionable=row.actionable,
                    model_version=row.model_version, q10=row.q10, q90=row.q90,
                    range_low=row.range_low, range_high=row.range_high,
                    in_range=(None if row.range_low is None else bool(row.range_low <= r <= row.range_high)),
                    q50=row.q50, vol_forecast=row.vol_forecast))
        if records:
            _absorb_ranges(ctx, ref, h, records)
            out.keys.append(logbook.write_outcomes(lake, h, as_of, ref.run_id, records))
        if missing:
            out.no_outcome_keys.append(logbook.write_no_outcomes(lake, h, as_of, ref.run_id, missing))
            out.no_outcome[h] = dict(sorted(Counter(m.reason for m in missing).items()))
        out.recorded[h] = len(records)
        logbook.set_watermark(lake, h, as_of, ref.run_id)
    return out


def _why_no_outcome(panel: Panel | None, column: dict[str, int], row: Prediction, step: int,
                    bars: int) -> tuple[str, int | None]:
    """Why a matured prediction has no realized return: its coin has no price from before the horizon's end on
    (stopped trading), or a price it needs is missing while the coin traded on. (reason, the coin's last candle)"""
    if panel is None or not panel.open_ts.size:
        return "price_missing", None
    if row.coin not in column:
        return "stopped_trading", None
    closes = panel.fields["close"][:, column[row.coin]]
    seen = np.flatnonzero(np.isfinite(closes))
    if not seen.size:
        return "stopped_trading", None
    last = int(panel.open_ts[seen[-1]])
    end_open = row.decision_ts - step + bars * step  # the candle whose close ends the horizon
    return ("stopped_trading" if last < end_open else "price_missing"), last


def _absorb_ranges(ctx: StepContext, ref: RunRef, horizon: str, records: list[Outcome]) -> None:
    """The horizon's adaptive range learns from this run's matured outcomes, one decision time at a time, once per
    run; an outcome whose prediction carried no volatility forecast has no normalized score and teaches nothing."""
    cfg = ctx.settings.run
    meta = _metadata(ctx.lake, horizon)
    state = conformal.load(ctx.lake, horizon, cfg.range_alpha, cfg.range_bins, _range_seed(meta))
    if state.last_run == ref.run_id:
        return
    bars = ctx.settings.training.horizons[horizon].bars
    usable = sorted((r for r in records if r.vol_forecast is not None and r.q50 is not None),
                    key=lambda d: (d.decision_ts, d.coin))
    for ts, group in groupby(usable, key=lambda d: d.decision_ts):
        g = list(group)
        served = np.array([(r.range_low, r.range_high) if r.range_low is not None else (np.nan, np.nan) for r in g])
        state.absorb(ts, np.array([r.q50 for r in g]), np.array([r.vol_forecast for r in g]),
                     np.array([r.realized_return for r in g]), served, cfg.range_alpha, cfg.range_gamma,
                     cfg.range_window, bars)
    state.last_run = ref.run_id
    ctx.lake.put_json(conformal.state_key(horizon), state.to_json())


def _realized(panel: Panel | None, column: dict[str, int], row: Prediction, step: int, bars: int) -> float | None:
    if panel is None or row.coin not in column or not panel.open_ts.size:
        return None
    j = column[row.coin]
    a = (row.decision_ts - step - panel.open_ts[0]) // step
    b = a + bars
    if a < 0 or b >= panel.open_ts.size:
        return None
    c0, c1 = panel.fields["close"][a, j], panel.fields["close"][b, j]
    if not (np.isfinite(c0) and np.isfinite(c1)):
        return None
    return float(np.log(c1 / c0))


def performance(ctx: StepContext, ref: RunRef) -> PerformanceOutput:
    """Rolling hit rate, Brier and ECE per coin over its last `performance_window` outcomes, for the coins whose
    outcomes this run recorded; the rolling state is updated once per run."""
    settings, lake = ctx.settings, ctx.lake
    recorded = ctx.output(ref.run_id, "outcomes")
    out = PerformanceOutput(run_id=ref.run_id)
    if recorded is None:
        return out
    w = settings.run.performance_window
    by_h: dict[str, list[Outcome]] = defaultdict(list)
    for r in logbook.read_outcomes(lake, recorded.keys):
        by_h[r.horizon].append(r)
    for h, new in sorted(by_h.items()):
        state = logbook.absorb(lake, h, ref.run_id, new, w, settings.run.recent_outcomes)
        by_coin: dict[str, list[Outcome]] = defaultdict(list)
        for d in state:  # in decision order: each coin's list ends with its latest outcomes
            by_coin[d.coin].append(d)
        rows = []
        for c in sorted({r.coin for r in new}):
            docs = by_coin[c][-w:]
            p = np.array([d.p_up for d in docs])
            y = np.array([1.0 if d.realized_return > 0 else 0.0 for d in docs])
            rows.append(CoinPerformance(
                horizon=h, coin=c, run_id=ref.run_id, window=len(docs),
                hit_rate=float(np.mean([d.hit for d in docs])), brier=brier(p, y), ece=ece(p, y),
                actionable_hit_rate=(float(np.mean([d.hit for d in docs if d.actionable]))
                                     if any(d.actionable for d in docs) else None),
                actionable_outcomes=sum(1 for d in docs if d.actionable)))
        out.keys.append(logbook.write_performance(lake, h, iso_to_ms(ref.as_of), ref.run_id, rows))
        out.coins[h] = len(rows)
    return out


def _range_seed(meta: ModelMetadata | None) -> RangeSeed | None:
    """The held-out scores a horizon's range starts from: the serving model's, when it has them."""
    return meta.vol.range_seed if meta is not None and meta.vol is not None else None


def _metadata(lake: Lake, horizon: str) -> ModelMetadata | None:
    version = current_version(lake, horizon)
    return None if version is None else load_metadata(lake, horizon, version)


def _recent_frame(lake: Lake, tf: str, since_ms: int, until_ms: int, window: int):
    """Feature rows of the last `window` decision times in [since, until]: the span of `window` bars first (what
    an unbroken store holds), the whole span only when gaps leave fewer times in it. The cost stays that of the
    window however long the model has served."""
    start = max(since_ms, until_ms - (window - 1) * timeframe_ms(tf))
    frame = read_frame(lake, tf, since_ms=start, until_ms=until_ms)
    if start > since_ms and (frame is None or np.unique(frame.ts).size < window):
        frame = read_frame(lake, tf, since_ms=since_ms, until_ms=until_ms)
    return frame


def drift(ctx: StepContext, ref: RunRef) -> DriftOutput:
    settings, lake = ctx.settings, ctx.lake
    as_of = iso_to_ms(ref.as_of)
    out = DriftOutput(run_id=ref.run_id)
    for h in ref.horizons:
        meta = _metadata(lake, h)
        if meta is None:
            continue
        spec = settings.training.horizons[h]
        tf = spec.timeframe
        # Only rows the model never saw can drift from what it saw: after its last label window.
        seen = iso_to_ms(meta.training_window.last) + spec.length_ms
        window = settings.run.drift_window[tf]
        frame = _recent_frame(lake, tf, seen + 1, as_of, window)
        if frame is None or len(frame) == 0:
            out.report[h] = DriftVerdict(note=f"no {tf} rows at this as-of")
            continue
        frame.keep(frame.members())  # drift compares the universe's rows with the training rows
        times = np.unique(frame.ts)[-window:]
        # Slow features (30-day volatility, sentiment level) barely move within a few weeks: a window
        # shorter than the configured one would compare one regime snapshot with a year and always "drift".
        recent = frame.X[np.isin(frame.ts, times)] if times.size >= window else frame.X[:0]
        state, info = logbook.recent_outcomes(lake, h)
        # Calibration and decay are judged on the serving model's own outcomes: outcomes of a model it replaced say
        # nothing about it (and would retrain it again on every run until they age out).
        overall = [r for r in state if r.model_version == meta.version]
        report = drift_mod.judge(meta.features, meta.drift_reference, recent, overall,
                                 float(meta.metrics["cv_brier"]), settings.run, age_ms=as_of - seen,
                                 max_age_ms=timeframe_ms(settings.run.retrain_every[tf]))
        report.outcomes = int(info.get("total", 0))
        report.outcomes_of_this_model = len(overall)  # on record in the rolling state
        out.report[h] = report
    if ref.retrain:
        # The scheduled full retrain (every horizon with a model) or an operator's (the horizons asked),
        # whatever drift says.
        for h, d in out.report.items():
            if ref.retrain_only and h not in ref.retrain_only:
                continue
            d.retrain = True
            d.reasons.append("retrain asked by an operator" if ref.retrain_only else "scheduled full retrain")
    out.retrain = [h for h, d in out.report.items() if d.retrain]
    return out
