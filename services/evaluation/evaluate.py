"""`cst evaluate`: train before a split, predict every later timestep with the served (ONNX) models, score.

No label window of a training row crosses the split (training sees only data published before it), and
the test rows are the decision times at or after the split whose forward return is observed in the
source. By default the models are retrained at the production cadence, each through the registry gate and
trained only on data before its own window, so the figures measure the system users get.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.evaluation import cross_section, report
from services.evaluation import ranges as ranges_eval
from services.evaluation.backtest import (
    buy_and_hold,
    equal_weight,
    performance,
    run_backtest,
)
from services.evaluation.reference import PlainReference, naive_ranges, reference_for
from services.features.sequences import sequences
from services.ingest.steps import import_files
from services.predict import conformal
from services.predict.model import HorizonModel, current_version
from services.predict.signals import consensus
from services.risk.history import price_history_from_panel
from services.risk.orders import orders_from_signals
from services.training.ensemble import Trained
from services.training.train import History, load_history, train
from services.training.volatility import forward_variance, rolling_log_variance
from shared.contracts import iso_to_ms, ms_to_iso
from shared.errors import CstError
from shared.metrics import (
    block_bootstrap,
    brier,
    ece,
    horizon_windows,
    log_loss,
    wilson_low,
)
from shared.pipeline.context import StepContext
from shared.provenance import directory_digest, provenance
from shared.records import BookDecision, ModelMetadata, RangeSeed, Signal, TrainingFailure
from shared.runs import new_ref
from shared.settings import SECRET_FIELDS, Settings, timeframe_ms
from shared.storage import LocalLake

log = logging.getLogger(__name__)


@dataclass
class HorizonTest:
    """One horizon's out-of-sample predictions, from the served (ONNX) models, with what actually happened.

    With periodic retraining each row is served by the model CURRENT at its decision time, trained only on data
    before the start of its own window; per-row arrays say which model's base rate and calibration range apply."""

    horizon: str
    split_ms: int
    ts: np.ndarray  # decision times (candle close)
    coin: np.ndarray
    p_up: np.ndarray
    low: np.ndarray
    high: np.ndarray
    confidence: np.ndarray
    direction: np.ndarray
    quantiles: np.ndarray  # (n, 3) forward log-return q10, q50, q90
    score: np.ndarray  # the meta-learner's logit that the calibrator reads
    fwd: np.ndarray  # realized forward log return
    y: np.ndarray  # label (NaN in the dead zone)
    base_rate: np.ndarray  # climatology: the serving model's training base rate
    cal_range: np.ndarray  # (n, 2) the serving model's calibration score range
    reference: np.ndarray  # the plain gradient-boosting reference's P(up) on the same row
    # The cross-sectional target: served P(beats the universe's median), the stack's score that ranks the coins,
    # the label (NaN for a tie or outside the universe), and the plain reference on the same target (its
    # calibrated probability and its raw score); NaN where a served version has no cross-sectional stack.
    p_beats: np.ndarray
    beats_score: np.ndarray
    y_beats: np.ndarray
    beats_reference: np.ndarray
    beats_reference_score: np.ndarray
    excluded: dict[str, int]
    horizon_ms: int = 0
    models: list[dict] = field(default_factory=list)  # one entry per retrain window
    search: dict = field(default_factory=dict)  # the last served model's per-member search summary
    # The volatility forecast: realized variance over the horizon (NaN where a candle is missing), the served sd
    # of the forward log return, the HAR member's alone, and the 30-bar rolling mean's (NaN without a forecast).
    rv: np.ndarray | None = None
    vol: np.ndarray | None = None
    vol_har: np.ndarray | None = None
    vol_stack: np.ndarray | None = None
    vol_roll: np.ndarray | None = None
    ranges: np.ndarray | None = None  # (n, 2) the 80% range served (conformal, replayed); NaN before any outcome
    naive: np.ndarray | None = None  # (n, 2) rolling-volatility range of the same nominal level
    references: dict[str, np.ndarray] = field(default_factory=dict)  # every range, served included, by name
    # The held-out scores the served range starts from: the first window's model's (the range carries on after).
    range_seed: RangeSeed | None = None

    def labeled(self) -> np.ndarray:
        return np.isfinite(self.y)

    ARRAYS = ("ts", "coin", "p_up", "low", "high", "confidence", "direction", "quantiles", "score", "fwd", "y",
              "base_rate", "cal_range", "reference", "p_beats", "beats_score", "y_beats", "beats_reference",
              "beats_reference_score", "rv", "vol", "vol_har", "vol_stack", "vol_roll")

    @classmethod
    def join(cls, parts: list[HorizonTest]) -> HorizonTest:
        """The windows of one horizon, in time order, as one test."""
        first = parts[0]
        arrays = {a: np.concatenate([getattr(p, a) for p in parts]) for a in cls.ARRAYS
                  if all(getattr(p, a) is not None for p in parts)}
        excluded: dict[str, int] = defaultdict(int)
        for p in parts:
            for k, v in p.excluded.items():
                excluded[k] += v
        return cls(first.horizon, first.split_ms, excluded=dict(excluded), horizon_ms=first.horizon_ms,
                   models=[m for p in parts for m in p.models], search=parts[-1].search,
                   range_seed=first.range_seed, **arrays)


def retrain_points(start_ms: int, end_ms: int, every_ms: int | None) -> list[int]:
    """The decision times at which a model is (re)trained: the split, then every `every_ms` while test rows remain."""
    if not every_ms:
        return [start_ms]
    return list(range(start_ms, end_ms + 1, every_ms))


def predict_window(settings: Settings, market: History, lake: LocalLake, horizon: str, version: str, start_ms: int,
                   end_ms: int, reference: PlainReference, beats_reference: PlainReference | None) -> HorizonTest:
    """Decision times in [start_ms, end_ms) whose label the source holds, predicted by model `version`."""
    spec = settings.training.horizons[horizon]
    frame = market.frames[spec.timeframe]
    r = market.labels(settings, horizon)
    inside = (frame.ts >= start_ms) & (frame.ts < end_ms) & frame.members()
    rows = np.flatnonzero(inside & r.full & np.isfinite(r.fwd))
    model = HorizonModel.load(lake, horizon, version)
    if frame.names != model.names:
        raise CstError("feature_mismatch", f"{horizon}: the model's features differ from the source's")
    X = frame.X[rows]
    pred = model.predict(X, sequences(frame.X, r.idx[rows]))
    cal = model.metadata.calibration
    n = rows.size
    lo, hi = cal.get("score_range", [-np.inf, np.inf])
    nan = np.full(n, np.nan)
    with_ref = beats_reference is not None and n
    t = HorizonTest(horizon, start_ms, frame.ts[rows], frame.coin[rows], pred.p_up, pred.low, pred.high,
                    pred.confidence, pred.direction, pred.quantiles, pred.meta_logit, r.fwd[rows], r.y[rows],
                    np.full(n, float(model.metadata.metrics["base_rate_train"])), np.tile([lo, hi], (n, 1)),
                    reference.predict(X) if n else np.zeros(0),
                    nan if pred.beats is None else pred.beats, nan if pred.beats is None else pred.beats_logit,
                    r.labels("beats")[rows], beats_reference.predict(X) if with_ref else nan,
                    beats_reference.score(X) if with_ref else nan, r.excluded(inside), spec.length_ms)
    t.rv = forward_variance(market.panels[spec.timeframe], frame, spec.bars)[rows]
    t.vol = pred.vol if pred.vol is not None else nan
    t.vol_har = model.har_sigma(X) if model.has_vol and n else nan
    t.vol_stack = model.stack_sigma(X) if model.has_vol and n else nan
    t.vol_roll = np.sqrt(np.exp(rolling_log_variance(X, frame.names, spec.bars))) if n else nan
    skill = model.metadata.skill or {}
    beats = (model.metadata.beats.skill or {}) if model.metadata.beats is not None else {}
    t.models = [{"from": ms_to_iso(start_ms), "version": version, "rows": int(n),
                 "trained_on_data_before": model.metadata.training_window.last,
                 "skill": skill.get("verdict"), "strength": skill.get("strength"),
                 "beats_skill": beats.get("verdict", model.metadata.beats_note), "beats_strength": beats.get("strength"),
                 "vol_served": model.metadata.vol.served if model.has_vol else None}]
    t.search = model.metadata.tuning
    t.range_seed = model.metadata.vol.range_seed if model.has_vol else None
    return t


def level_by_chance(settings: Settings, market: History, horizon: str, split_ms: int, test_windows: int) -> dict:
    """How far the up-rate of a stretch as long as the test lies from the long-run up-rate by chance alone, over the
    history before the split: what ECE a forecast without skill must expect (it serves the long-run rate)."""
    spec = settings.training.horizons[horizon]
    frame = market.frames[spec.timeframe]
    r = market.labels(settings, horizon)
    hist = np.isfinite(r.y) & (frame.ts + spec.length_ms < split_ms) & frame.members()
    if not hist.any() or test_windows < 1:
        return {"stretches": 0}
    _, w = np.unique(horizon_windows(frame.ts[hist], spec.length_ms), return_inverse=True)
    ups, counts = np.bincount(w, weights=r.y[hist]), np.bincount(w)
    k = int(test_windows)
    if ups.size <= k:
        return {"stretches": 0, "history_windows": int(ups.size)}
    cu, cc = np.concatenate([[0], np.cumsum(ups)]), np.concatenate([[0], np.cumsum(counts)])
    dev = np.abs((cu[k:] - cu[:-k]) / (cc[k:] - cc[:-k]) - ups.sum() / counts.sum())
    return {"history_windows": int(ups.size), "stretch_windows": k, "stretches": int(dev.size),
            "median_distance": float(np.median(dev)), "share_farther_than_0.03": float(np.mean(dev > 0.03))}


def _rate(hits: np.ndarray) -> dict:
    n = int(hits.size)
    k = int(hits.sum())
    return {"n": n, "hit_rate": k / n if n else None, "wilson_low": wilson_low(k, n)}


def _scored(p: np.ndarray, base: np.ndarray, y: np.ndarray, windows: np.ndarray, seed: int) -> dict:
    """Brier, skill against climatology and ECE, each headline figure with its block-bootstrap 90% interval."""
    b, ref = brier(p, y), brier(base, y)
    boot = block_bootstrap(p, base, y, windows, seed=seed)
    return {"brier": b, "brier_skill": 1 - b / ref if ref > 0 else None, "brier_skill_interval": boot["brier_skill"],
            "ece": ece(p, y, 10), "ece_interval": boot["ece"]}


def _range_figures(t: HorizonTest) -> dict:
    """Coverage and median width of the served 80% range, the model's raw q10-q90 and the naive range, on the rows
    where a served range existed."""
    if t.ranges is None:
        return {}
    has = np.isfinite(t.ranges[:, 0])
    fwd = t.fwd[has]

    def cov(r):
        return float(np.mean((fwd >= r[:, 0]) & (fwd <= r[:, 1]))) if fwd.size else None

    def width(r):
        return float(np.median(r[:, 1] - r[:, 0])) if fwd.size else None

    raw = t.quantiles[has][:, [0, 2]]
    out = {"range_coverage": cov(t.ranges[has]), "range_median_width": width(t.ranges[has]),
           "range_rows": int(has.sum()), "range_rows_without_range": int((~has).sum()),
           "range_model_q10_q90_coverage": cov(raw), "range_model_q10_q90_median_width": width(raw)}
    if t.naive is not None:
        ok = has & np.isfinite(t.naive[:, 0])
        nv = t.naive[ok]
        f = t.fwd[ok]
        out["range_naive_coverage"] = float(np.mean((f >= nv[:, 0]) & (f <= nv[:, 1]))) if f.size else None
        out["range_naive_median_width"] = float(np.median(nv[:, 1] - nv[:, 0])) if f.size else None
    return out


def horizon_metrics(t: HorizonTest, threshold: float, seed: int = 0, alpha: float = 0.2) -> dict:
    m = t.labeled()
    p, y, base = t.p_up[m], t.y[m], t.base_rate[m]
    n = int(m.sum())
    hit = np.where(t.direction[m] == 1, y == 1, y == 0)
    conf = t.confidence[m] >= threshold
    windows = horizon_windows(t.ts[m], t.horizon_ms)
    stack = _scored(p, base, y, windows, seed) if n else {}
    return {
        "n": n, "coins": len(set(t.coin[m].tolist())),
        "first": ms_to_iso(int(t.ts[m].min())) if n else None, "last": ms_to_iso(int(t.ts[m].max())) if n else None,
        "base_rate": float(y.mean()) if n else None, "base_rate_train": float(base.mean()) if n else None,
        "brier": stack.get("brier"), "brier_reference": brier(base, y) if n else None,
        "brier_skill": stack.get("brier_skill"), "brier_skill_interval": stack.get("brier_skill_interval"),
        "log_loss": log_loss(p, y) if n else None, "ece": stack.get("ece"), "ece_interval": stack.get("ece_interval"),
        # Mean forecast minus realized up-rate: for a forecast that barely moves, ECE's equal-width bins split the
        # rows by which side of a bin edge each window's base rate fell; this is the level error alone.
        "calibration_in_the_large": float(p.mean() - y.mean()) if n else None,
        # References for reading the ECE: what predicting the training base rate everywhere scores, and how
        # many independent outcomes (non-overlapping horizon windows, coins moving together) the test holds.
        "ece_constant_base_rate": ece(base, y, 10) if n else None,
        "independent_outcomes": round((float(t.ts[m].max() - t.ts[m].min()) + t.horizon_ms) / t.horizon_ms, 1)
        if n and t.horizon_ms else None,
        "references": {"climatology": {"brier": brier(base, y), "brier_skill": 0.0, "ece": ece(base, y, 10)},
                       "plain_gbt": _scored(t.reference[m], base, y, windows, seed)} if n else {},
        "hit_rate_all": float(hit.mean()) if n else None,
        "scores": score_shift(t),
        **_range_figures(t),
        "ranges": ranges_eval.range_metrics(t.ts, t.coin, t.fwd, t.references, t.vol, t.horizon_ms, alpha,
                                            seed) if t.references else {},
        "volatility": {**ranges_eval.vol_metrics(
            t.rv, {"served": t.vol ** 2, "stack": t.vol_stack ** 2, ranges_eval.HAR: t.vol_har ** 2,
                   "rolling 30-bar mean": t.vol_roll ** 2}, t.ts, t.horizon_ms, seed),
            "served_by_window": [m.get("vol_served") for m in t.models]} if t.vol is not None else {},
        "excluded": int(sum(t.excluded.values())), "excluded_by_reason": t.excluded,
        "confident": {"threshold": threshold, **_rate(hit[conf])},
        "models": t.models,
        "model_version": t.models[-1]["version"] if t.models else None,
        "search": t.search,
    }


def score_shift(t: HorizonTest) -> dict | None:
    """The served meta scores against the range of the scores each serving model's calibrator was fitted on.

    A served score outside that range falls where the calibrator saw nothing: a train/serve skew calibration cannot
    see from inside training."""
    finite = np.isfinite(t.cal_range).all(axis=1)
    if not t.score.size or not finite.any():
        return None
    s, r = t.score[finite], t.cal_range[finite]
    return {"served_q05_q50_q95": [round(float(v), 4) for v in np.quantile(s, [0.05, 0.5, 0.95])],
            "calibration_range": [round(float(r[:, 0].min()), 4), round(float(r[:, 1].max()), 4)],
            "served_outside_calibration_range": float(np.mean((s < r[:, 0]) | (s > r[:, 1])))}


@dataclass(frozen=True)
class ReplayedVote:
    """A test row as consensus reads a served prediction, with its realized forward return."""

    coin: str
    horizon: str
    direction: int
    confidence: float
    p_up: float
    actionable: bool
    q10: float
    q50: float
    q90: float
    decision_ts: int
    fwd: float
    vol_forecast: float | None = None


class ReplayedSignal(Signal):
    """A consensus signal at a test decision time, with the realized forward return of every agreeing horizon."""

    ts: int
    fwd: dict[str, float]


def consensus_signals(tests: dict[str, HorizonTest], threshold: float, min_horizons: int) -> list[ReplayedSignal]:
    """The main job's consensus rule replayed at every test decision time."""
    by_ts: dict[int, list[ReplayedVote]] = defaultdict(list)
    for h, t in tests.items():
        for i in range(t.ts.size):
            q10, q50, q90 = t.quantiles[i].tolist()
            by_ts[int(t.ts[i])].append(ReplayedVote(
                coin=str(t.coin[i]), horizon=h, direction=int(t.direction[i]), confidence=float(t.confidence[i]),
                p_up=float(t.p_up[i]), actionable=bool(t.confidence[i] >= threshold), q10=q10, q50=q50, q90=q90,
                decision_ts=int(t.ts[i]), fwd=float(t.fwd[i]),
                vol_forecast=float(t.vol[i]) if t.vol is not None and np.isfinite(t.vol[i]) else None))
    signals = []
    for ts in sorted(by_ts):
        votes = by_ts[ts]
        for s in consensus(votes, min_horizons):
            agreeing = [v for v in votes if v.coin == s.coin and v.horizon in s.horizons]
            signals.append(ReplayedSignal(**s.model_dump(), ts=ts, fwd={v.horizon: v.fwd for v in agreeing}))
    return signals


def consensus_metrics(settings: Settings, signals: list[ReplayedSignal]) -> dict:
    """A signal is a hit when its direction came true over the shortest agreeing horizon (its first exit)."""
    hits = []
    for s in signals:
        shortest = min(s.horizons, key=lambda h: settings.training.horizons[h].length_ms)
        sign = 1 if s.direction == "up" else -1
        hits.append(sign * s.fwd[shortest] > 0)
    return {"min_horizons": settings.consensus_min_horizons, "threshold": settings.confidence_threshold,
            "rule": "hit = direction came true over the shortest agreeing horizon", **_rate(np.asarray(hits, bool))}


def splits_for(settings: Settings, horizons: list[str], train_until: str, train_until_1h: str | None) -> dict[str, str]:
    return {h: (train_until_1h or train_until) if settings.training.horizons[h].timeframe == "1h" else train_until
            for h in horizons}


def cadence_ms(settings: Settings, horizon: str, retrain_every: str | None) -> int | None:
    """How often the evaluation retrains a horizon: "production" = the main job's cadence for its timeframe,
    "none" = trained once before the split, else a duration such as 30d."""
    if retrain_every in (None, "none"):
        return None
    if retrain_every == "production":
        return timeframe_ms(settings.run.retrain_every[settings.training.horizons[horizon].timeframe])
    return timeframe_ms(retrain_every)


def walk_forward_tests(settings: Settings, lake: LocalLake, run_id: str, market: History, splits: dict[str, str],
                       cadence: dict[str, int | None], budget: str,
                       tick: Callable[[str], None]) -> tuple[dict[str, HorizonTest], list[dict]]:
    """Retrain at each horizon's cadence from its split on, through the registry's gate as production does, and
    predict each window with the model CURRENT at its start (trained only on data before it)."""
    cfg = settings.training
    groups: dict[tuple[str, int | None, str], list[str]] = defaultdict(list)
    for h, until in splits.items():
        groups[(until, cadence[h], cfg.horizons[h].timeframe)].append(h)
    pieces: dict[str, list[HorizonTest]] = defaultdict(list)
    failures: list[dict] = []
    references: dict[str, PlainReference] = {}
    beats_refs: dict[str, PlainReference | None] = {}

    def keep(t: Trained) -> None:
        references[t.horizon] = reference_for(settings).fit(t.ds, t.spec.length_ms, cfg.calibration_share)
        # The plain reference on the cross-sectional target: fitted on the same rows as the served beats stack.
        beats_refs[t.horizon] = (reference_for(settings).fit(t.beats.ds, t.spec.length_ms, cfg.calibration_share)
                                 if t.beats is not None else None)

    for (until, every, tf), hs in groups.items():
        frame = market.frames[tf]
        split_ms = iso_to_ms(until)
        last = int(frame.ts.max()) if len(frame) else split_ms
        points = retrain_points(split_ms, last, every)
        for k, start in enumerate(points):
            stop = points[k + 1] if k + 1 < len(points) else last + 1
            tick(f"training {','.join(hs)} on data before {ms_to_iso(start)[:10]} ({k + 1}/{len(points)})")
            results = train(settings, lake, run_id, until=ms_to_iso(start), horizons=hs, budget=budget, tick=tick,
                            on_trained=keep)
            for h in hs:
                meta = results[h]
                if isinstance(meta, TrainingFailure):
                    log.error("%s: retrain before %s failed: %s", h, ms_to_iso(start), meta.message)
                    failures.append({"horizon": h, "from": ms_to_iso(start), "error": meta.error,
                                     "message": meta.message})
                # Production keeps serving CURRENT when a retrain fails or the gate keeps the new version out.
                version = current_version(lake, h)
                if version is None or h not in references:
                    continue
                piece = predict_window(settings, market, lake, h, version, start, stop, references[h],
                                       beats_refs.get(h))
                trained = isinstance(meta, ModelMetadata)
                piece.models[0].update(trained=meta.version if trained else None,
                                       promoted=meta.promoted if trained else None)
                pieces[h].append(piece)
    tests = {h: HorizonTest.join(ps) for h, ps in pieces.items() if ps}
    for h, t in tests.items():
        replay_ranges(settings, market, t, tick)
    return tests, failures


def replay_ranges(settings: Settings, market: History, t: HorizonTest, tick: Callable[[str], None]) -> None:
    """The served range replayed as the outcome step serves it, and every reference range on the same rows."""
    run, spec = settings.run, settings.training.horizons[t.horizon]
    panel = market.panels[spec.timeframe]
    t.naive = naive_ranges(panel, t.coin, t.ts, spec.bars, run.range_naive_window[spec.timeframe], run.range_alpha)
    starts = sorted({iso_to_ms(m["from"]) for m in t.models})
    tick(f"{t.horizon}: GARCH(1,1) per coin")
    garch = ranges_eval.garch_sigma(panel, t.coin, t.ts, spec.bars, starts, tick=tick)
    t.references = {ranges_eval.NAIVE: t.naive, ranges_eval.GARCH: ranges_eval.normal_range(garch, run.range_alpha)}
    serve_ranges(settings, t)


def serve_ranges(settings: Settings, t: HorizonTest) -> None:
    """The ranges that follow from the rows and the range settings alone: the served one and the previous served
    one (each replayed as the outcome step serves it) and HAR's, beside the references already on `t`."""
    run, spec = settings.run, settings.training.horizons[t.horizon]
    adapt = {"alpha": run.range_alpha, "gamma": run.range_gamma, "window": run.range_window, "overlap": spec.bars,
             "bins": run.range_bins}
    t.ranges = conformal.replay(t.ts, t.quantiles[:, 1], t.vol, t.fwd, t.horizon_ms, seed=t.range_seed, **adapt)
    t.references = {
        ranges_eval.SERVED: t.ranges,
        ranges_eval.PREVIOUS: conformal.replay(t.ts, t.quantiles[:, 0], t.quantiles[:, 2], t.fwd, t.horizon_ms,
                                               kind=conformal.CQR, **adapt),
        ranges_eval.NAIVE: t.references[ranges_eval.NAIVE],
        ranges_eval.HAR: ranges_eval.normal_range(t.vol_har, run.range_alpha),
        ranges_eval.GARCH: t.references[ranges_eval.GARCH],
    }


ROWS = "rows"  # OUT/rows/<horizon>.npz and .json: every test row, so the ranges can be judged again


def save_rows(out: Path, tests: dict[str, HorizonTest]) -> None:
    """Every horizon's test rows (predictions, outcomes, volatility forecasts, every range) beside the report."""
    folder = out / ROWS
    folder.mkdir(parents=True, exist_ok=True)
    for h, t in tests.items():
        arrays = {a: getattr(t, a) for a in HorizonTest.ARRAYS if getattr(t, a) is not None}
        arrays["coin"] = np.asarray(t.coin, dtype=str)
        arrays.update({f"range:{name}": r for name, r in t.references.items()})
        np.savez_compressed(folder / f"{h}.npz", **arrays)
        about = {"horizon": h, "split_ms": t.split_ms, "horizon_ms": t.horizon_ms, "excluded": t.excluded,
                 "models": t.models, "search": t.search,
                 "range_seed": t.range_seed.model_dump() if t.range_seed is not None else None}
        (folder / f"{h}.json").write_text(json.dumps(about, indent=1, default=_json_default))


def load_rows(out: Path) -> dict[str, HorizonTest]:
    folder = out / ROWS
    if not folder.is_dir():
        raise CstError("no_rows", f"{out} holds no test rows ({ROWS}/): it was written by an older cst evaluate; "
                                  "run the evaluation again (cst evaluate --from OUT/experiment.json)")
    tests = {}
    for path in sorted(folder.glob("*.json")):
        about = json.loads(path.read_text())
        with np.load(path.with_suffix(".npz")) as z:
            arrays = {k: z[k] for k in z.files}
        refs = {k.split(":", 1)[1]: arrays.pop(k) for k in list(arrays) if k.startswith("range:")}
        t = HorizonTest(about["horizon"], int(about["split_ms"]), excluded=about["excluded"],
                        horizon_ms=int(about["horizon_ms"]), models=about["models"], search=about["search"],
                        **{k: arrays[k] for k in HorizonTest.ARRAYS if k in arrays})
        t.references, t.naive, t.ranges = refs, refs.get(ranges_eval.NAIVE), refs.get(ranges_eval.SERVED)
        t.range_seed = RangeSeed(**about["range_seed"]) if about.get("range_seed") else None
        tests[t.horizon] = t
    return tests


def judge_ranges_again(settings: Settings, out: Path) -> dict:
    """The ranges of a finished evaluation served and judged again with these settings' range rules, on its stored
    rows, without training again: metrics.json (every horizon's range and volatility figures; its cross-section,
    chance level and backtest as they were), the report and the rows are rewritten, and metrics.json says so."""
    tests = load_rows(out)
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        bt = json.loads((out / "backtest.json").read_text())
    except (OSError, ValueError) as exc:
        raise CstError("bad_evaluation", f"cannot read the evaluation in {out}: {exc}") from None
    thr = settings.confidence_threshold
    for h, t in tests.items():
        serve_ranges(settings, t)
        kept = {k: v for k, v in metrics["horizons"].get(h, {}).items() if k in ("level_by_chance", "cross_section")}
        metrics["horizons"][h] = {**horizon_metrics(t, thr, settings.training.seed, settings.run.range_alpha), **kept}
    run = settings.run
    metrics["ranges_judged_again"] = {
        "code_revision": provenance(settings)["code_revision"],
        "settings": {k: getattr(run, k) for k in ("range_alpha", "range_gamma", "range_window", "range_bins")},
        "note": "the served and previous served ranges replayed on the stored rows; the models were not retrained"}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    write_report(out, metrics, tests, bt, thr, 1 - run.range_alpha)
    save_rows(out, tests)
    return {"metrics": metrics, "tests": tests, "backtest": bt}


def evaluate(settings: Settings, source: str | Path, out: Path, *, train_until: str,
             train_until_1h: str | None = None, horizons: list[str] | None = None, budget: str = "quick",
             tick: Callable[[str], None] | None = None, backtest_threshold: float | None = None,
             retrain_every: str | None = "production") -> dict:
    """Writes OUT/metrics.json, OUT/backtest.json, OUT/report.html and its PNGs; the models stay in OUT/lake."""
    tick = tick or (lambda _m: None)
    horizons = horizons or list(settings.horizons)
    unknown = [h for h in horizons if h not in settings.training.horizons]
    if unknown:
        raise CstError("unknown_horizon", f"unknown horizons {unknown}; known: {list(settings.training.horizons)}")
    splits = splits_for(settings, horizons, train_until, train_until_1h)
    cadence = {h: cadence_ms(settings, h, retrain_every) for h in horizons}
    out.mkdir(parents=True, exist_ok=True)
    # The whole experiment in one file: `cst evaluate --from OUT/experiment.json` runs it again.
    experiment = {"command": "evaluate",
                  "args": {"source": str(Path(source).resolve()), "train_until": train_until,
                           "train_until_1h": train_until_1h, "horizons": horizons, "budget": budget,
                           "backtest_threshold": backtest_threshold, "retrain_every": retrain_every},
                  **provenance(settings), "data_fingerprint": directory_digest(source)}
    (out / "experiment.json").write_text(json.dumps(experiment, indent=2))
    lake = LocalLake(out / "lake")
    # The files reach training as they reach every run: imported into the lake, then read from there.
    ref = new_ref(settings, str(source))
    import_files(StepContext(settings, lake), ref)
    now = iso_to_ms(ref.as_of)
    # The whole recording for the test rows (features look only back, labels only forward from each row).
    market = load_history(settings, lake, ref.run_id, {settings.training.horizons[h].timeframe for h in horizons}, now)
    tests, failures = walk_forward_tests(settings, lake, ref.run_id, market, splits, cadence, budget, tick)
    tick("scoring")
    thr = settings.confidence_threshold
    signals = consensus_signals(tests, thr, settings.consensus_min_horizons)
    metrics = {
        "train_until": train_until, "train_until_1h": splits.get("1h"), "budget": budget,
        "retraining": {h: (f"every {cadence[h] / 86_400_000:g} days from the split, through the registry gate; each "
                           "window served by the model CURRENT at its start" if cadence[h] else
                           "none: trained once before the split and used for the whole test") for h in tests},
        "retrain_failures": failures,
        "horizons": {h: horizon_metrics(t, thr, settings.training.seed, settings.run.range_alpha)
                     for h, t in tests.items()},
        "not_evaluated": sorted(set(horizons) - set(tests)),
        "consensus": consensus_metrics(settings, signals),
        "long_short_costs": costs_said(cross_section.Costs.of(settings.risk.basket)),
    }
    for h, t in tests.items():
        m = metrics["horizons"][h]
        if m["n"]:
            m["level_by_chance"] = level_by_chance(settings, market, h, iso_to_ms(splits[h]),
                                                   int(round(m["independent_outcomes"])))
        tick(f"cross-section {h}")
        m["cross_section"] = cross_section_metrics(settings, market, t)
    tick("backtest")
    bt = run_backtests(settings, tests, market, backtest_threshold or thr, out)
    strat = bt.get("table", {}).get("strategy (guards)", {})
    metrics["backtest"] = {
        "threshold": bt.get("threshold"), "trades": strat.get("trades"),
        "total_return": strat.get("total_return"), "sharpe": strat.get("sharpe"),
        "max_drawdown": strat.get("max_drawdown"),
        "benchmark_total_return": bt.get("table", {}).get("buy and hold BTC", {}).get("total_return"),
        "equal_weight_total_return": bt.get("table", {}).get("equal weight", {}).get("total_return"),
        "details": "backtest.json", **({"skipped": bt["skipped"]} if "skipped" in bt else {}),
    }
    stopped = {h: sorted(m for m, v in t.search.items() if v.get("stopped_by_time")) for h, t in tests.items()}
    metrics["experiment"] = {**{k: v for k, v in experiment.items() if k not in ("settings", "args")},
                             "search_stopped_by_time": {h: ms for h, ms in stopped.items() if ms}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    write_report(out, metrics, tests, bt, thr, 1 - settings.run.range_alpha)
    save_rows(out, tests)
    return {"metrics": metrics, "tests": tests, "signals": signals, "market": market, "backtest": bt}


def costs_said(c: cross_section.Costs) -> str:
    return (f"taker fee {c.fee_bps:g} bps a side (settings.risk.basket; Binance USDT-M base tier by default), impact: "
            f"half spread {c.half_spread_bps:g} bps + {c.impact_k:g} x daily volatility x sqrt(notional / 30-day "
            f"average daily quote volume) at {c.capital:,.0f} per leg; funding {c.funding_said()}; capacity: the "
            "capital per leg at which impact eats half the gross spread")


def cross_section_metrics(settings: Settings, market: History, t: HorizonTest) -> dict[str, dict]:
    """Which coins beat the others, judged per decision time on the test rows (the universe's members): the served
    cross-sectional stack's score and the plain reference on the same target, and the field's momentum and
    reversal ranks, on the same rows and forward returns; the probabilities of beating the median are scored
    against the coin flip (0.5) by Brier skill and ECE."""
    tf = settings.training.horizons[t.horizon].timeframe
    panel = market.panels[tf]
    step = timeframe_ms(tf)
    if not panel.open_ts.size:
        return {}
    close = panel.fields["close"]
    scores = {"stack P(beats)": t.beats_score, "plain GBT P(beats)": t.beats_reference_score,
              **cross_section.reference_scores(close, list(panel.coins), int(panel.open_ts[0]), step, t.ts, t.coin)}
    probabilities = {"stack P(beats)": t.p_beats, "plain GBT P(beats)": t.beats_reference}
    # What the long-short book's impact model reads at each row: the 30 days before the decision.
    adv, vol = cross_section.liquidity(close, panel.quote_volume(), step)
    index = {c: k for k, c in enumerate(panel.coins)}
    row = np.clip((t.ts - step - int(panel.open_ts[0])) // step, 0, close.shape[0] - 1)
    col = np.asarray([index.get(c, 0) for c in t.coin.tolist()], dtype=np.int64)
    costs = cross_section.Costs.of(settings.risk.basket)
    out = {}
    for name, s in scores.items():
        d = cross_section.decisions(t.ts, s, t.fwd)
        r = cross_section.report(t.ts, t.coin, s, t.fwd, t.horizon_ms, seed=settings.training.seed, d=d)
        if "note" not in r:
            r["long_short"] = cross_section.long_short_report(
                d, t.coin, s, t.fwd, adv[row, col], vol[row, col], t.horizon_ms, r["decisions_per_window"], costs,
                seed=settings.training.seed)
        if name in probabilities:
            r["probability"] = _against_half(probabilities[name], t.y_beats, t.ts, t.horizon_ms, settings.training.seed)
        out[name] = r
    return out


def _against_half(p: np.ndarray, y: np.ndarray, ts: np.ndarray, horizon_ms: int, seed: int) -> dict:
    """P(beats the median) against the coin flip it must beat: Brier skill vs 0.5 (interval over horizon windows)
    and ECE, on the labeled rows."""
    ok = np.isfinite(p) & np.isfinite(y)
    if not ok.any():
        return {"n": 0}
    half = np.full(int(ok.sum()), 0.5)
    m = _scored(p[ok], half, y[ok], horizon_windows(ts[ok], horizon_ms), seed)
    return {"n": int(ok.sum()), "brier": m["brier"], "brier_skill_vs_half": m["brier_skill"],
            "brier_skill_vs_half_interval": m["brier_skill_interval"], "ece": m["ece"],
            "ece_interval": m["ece_interval"]}


def write_report(out: Path, metrics: dict, tests: dict[str, HorizonTest], bt: dict, threshold: float,
                 nominal: float = 0.8) -> Path:
    lab = {h: t.labeled() for h, t in tests.items()}
    images = [report.reliability_png(out / "reliability.png", {h: (t.p_up[lab[h]], t.y[lab[h]]) for h, t in tests.items()}),
              report.reliability_png(out / "reliability_plain_gbt.png",
                                     {f"{h} plain GBT": (t.reference[lab[h]], t.y[lab[h]]) for h, t in tests.items()}),
              report.confidence_hist_png(out / "confidence.png", {h: t.confidence for h, t in tests.items()}, threshold),
              report.range_coverage_png(out / "ranges.png", {h: _inside(t) for h, t in tests.items()}, nominal),
              report.cross_section_png(out / "cross_section.png",
                                       {h: m.get("cross_section", {}) for h, m in metrics["horizons"].items()})]
    images += [out / name for name in bt.get("images", [])]

    def ci(m: dict, key: str) -> str | None:
        v, iv = m.get(key), m.get(f"{key}_interval")
        if v is None:
            return None
        return f"{v:+.4f} [{iv[0]:+.4f}, {iv[1]:+.4f}]" if iv and iv[0] is not None else f"{v:+.4f}"

    per_h = [{"horizon": h, **{k: m[k] for k in ("n", "coins", "first", "last", "base_rate", "base_rate_train",
                                                 "brier", "log_loss", "independent_outcomes", "hit_rate_all")},
              "Brier skill [90%]": ci(m, "brier_skill"), "ECE [90%]": ci(m, "ece"),
              "confident n": m["confident"]["n"], "confident hit": m["confident"]["hit_rate"],
              "wilson low": m["confident"]["wilson_low"],
              "served scores outside calibration": (m["scores"] or {}).get("served_outside_calibration_range"),
              "skill verdicts": ", ".join(sorted({str(x.get("skill")) for x in m["models"]}))}
             for h, m in metrics["horizons"].items()]
    refs = [{"horizon": h, "forecast": name, "Brier": r["brier"],
             "Brier skill [90%]": ci(r, "brier_skill") if name != "climatology" else "+0 (the reference)",
             "ECE [90%]": ci(r, "ece") if name != "climatology" else f"{r['ece']:.4f}"}
            for h, m in metrics["horizons"].items()
            for name, r in (("stack (served)", {k: m[k] for k in ("brier", "brier_skill", "brier_skill_interval",
                                                                    "ece", "ece_interval")}),
                            *m["references"].items())]
    ranges = [{"horizon": h, **{k: m.get(k) for k in ("range_rows", "range_rows_without_range", "range_coverage",
                                                      "range_median_width", "range_model_q10_q90_coverage",
                                                      "range_model_q10_q90_median_width", "range_naive_coverage",
                                                      "range_naive_median_width")}}
              for h, m in metrics["horizons"].items()]
    models = [{"horizon": h, **x} for h, m in metrics["horizons"].items() for x in m["models"]]

    def iv(r: dict, key: str, scale: float = 1.0) -> str | None:
        x = r.get(key) or {}
        if x.get("mean") is None:
            return None
        lo, hi = x.get("interval") or [None, None]
        return (f"{scale * x['mean']:+.4f} [{scale * lo:+.4f}, {scale * hi:+.4f}]" if lo is not None
                else f"{scale * x['mean']:+.4f}")

    def pct(x: float | None) -> str | None:
        return None if x is None else f"{x:.3f}"

    def range_row(h: str, m: dict, name: str, r: dict, rows: int | None) -> dict:
        pair = m["ranges"].get("served_minus_reference_pairwise", {}).get(name)
        return {"horizon": h, "range": name, "rows": rows,
                "coverage": pct(r["coverage"]),
                "coverage [90%]": _cov_interval(r.get("coverage_interval")),
                "by vol tercile (low / mid / high)": " / ".join(pct(c) or "-" for c in r["coverage_by_vol_tercile"]),
                "by tercile [90%]": " / ".join(_cov_interval(x) or "-"
                                               for x in r.get("coverage_by_vol_tercile_interval", [])) or None,
                "by coin: median [min, max]": (f"{r['coverage_by_coin']['median']:.3f} "
                                               f"[{r['coverage_by_coin']['min']:.3f}, {r['coverage_by_coin']['max']:.3f}]"
                                               if r["coverage_by_coin"].get("coins") else None),
                "coins in [0.70, 0.90]": pct(r["coverage_by_coin"].get("share_within_0.70_0.90")),
                "misses below / above": (f"{r['miss_below']:.3f} / {r['miss_above']:.3f}" if "miss_below" in r
                                         else None),
                "median width": pct(r["median_width"]), "interval score [90%]": iv(r, "interval_score"),
                "served minus this [90%]": (iv({"d": m["ranges"]["served_minus_best_reference"]}, "d")
                                            if name == m["ranges"].get("best_reference") else
                                            (f"{m['ranges']['served_minus_reference'][name]:+.4f}"
                                             if name in m["ranges"].get("served_minus_reference", {}) else None)),
                "served minus this, on every row both have [90%]": (f"{iv({'d': pair}, 'd')} ({pair['rows']} rows)"
                                                                    if pair else None)}

    range_rows = [range_row(h, m, name, r, m["ranges"].get("common_rows"))
                  for h, m in metrics["horizons"].items() for name, r in (m.get("ranges") or {}).get("kinds", {}).items()]
    range_rows += [range_row(h, m, f"{ranges_eval.SERVED}, on every row it served", m["ranges"]["served_own_rows"],
                             m["ranges"]["served_own_rows"]["rows"])
                   for h, m in metrics["horizons"].items() if (m.get("ranges") or {}).get("served_own_rows")]
    vol_rows = [{"horizon": h, "forecast": name, "rows": m["volatility"]["rows"], "QLIKE": f"{r['qlike']:.4f}",
                 "QLIKE [90%]": f"[{r['qlike_interval'][0]:.4f}, {r['qlike_interval'][1]:.4f}]"
                 if r["qlike_interval"][0] is not None else None, "R2 of log variance": f"{r['r2_log']:.3f}",
                 "minus HAR, QLIKE [90%]": iv(m["volatility"].get("minus_HAR_qlike", {}), name)}
                for h, m in metrics["horizons"].items() for name, r in (m.get("volatility") or {}).get("forecasts", {}).items()]
    cross = [{"horizon": h, "score": name, "decisions": r.get("decision_times"),
              "coins per decision": r.get("coins_per_decision"), "rank IC [90%]": iv(r, "ic"), "ICIR": r.get("icir"),
              "IC > 0 share": r.get("ic_positive_share"), "top - bottom decile, % [90%]": iv(r, "top_minus_bottom", 100),
              "turnover top / bottom": (f"{r['turnover_decile']['top']:.2f} / {r['turnover_decile']['bottom']:.2f}"
                                        if r.get("turnover_decile", {}).get("top") is not None else None),
              "long-short net, % a window [90%]": iv(r.get("long_short", {}), "net", 100),
              "gross, %": iv(r.get("long_short", {}), "gross", 100),
              "capacity per leg": (r.get("long_short") or {}).get("capacity_per_leg"),
              "P(beats) Brier skill vs 0.5 [90%]": ci(r.get("probability") or {}, "brier_skill_vs_half"),
              "P(beats) ECE": (r.get("probability") or {}).get("ece"),
              "note": r.get("note")}
             for h, m in metrics["horizons"].items() for name, r in m.get("cross_section", {}).items()]
    sections = [
        ("Setup", {"train until": metrics["train_until"], "train until (1h)": metrics["train_until_1h"],
                   "budget": metrics["budget"], "confidence threshold": threshold,
                   **{f"retraining {h}": v for h, v in metrics["retraining"].items()}}),
        ("Per horizon (test period, served ONNX models; 90% block-bootstrap intervals over horizon windows)", per_h),
        ("Does the stack earn its place? Climatology and one plain gradient-boosting classifier on the same rows", refs),
        (f"{nominal:.0%} return ranges: served (conformal, adapted by outcomes) vs the model's q10-q90 vs naive "
         "rolling volatility; rows before the first matured outcome have no served range", ranges),
        (f"{nominal:.0%} return ranges against every standard baseline, on the rows where all exist: served = the "
         "model's median +- the normalized conformal multiple of the volatility forecast (adapted online); previous "
         "served = the model's q10-q90 conformalized with ACI; naive, HAR and GARCH(1,1) ranges are +-z sd of their "
         "forecast. Interval score (Gneiting & Raftery 2007; lower is better) = width + 2/alpha x the miss; "
         "'served minus this' is negative where the served range is better (interval for the best reference). The "
         "same rows leave out the served range's first horizon (the previous served range had no outcome yet) and "
         "young coins (GARCH needs 250 returns): the last rows judge the served range on every row it served, and "
         "the last column against each reference on every row the two share",
         range_rows),
        (f"How finely the served range's own rows tell coverage from {nominal:.0%}: a range at exactly {nominal:.0%} "
         "there (the rows' own |r| / forecast volatility, the lowest share of each volatility tercile covered), its "
         "coverage over resampled horizon windows; a test of few independent windows cannot tell a coverage from "
         "nominal more finely than these intervals",
         [_resolution_row(h, m["ranges"]["served_own_rows"]) for h, m in metrics["horizons"].items()
          if "calibrated_resolution" in ((m.get("ranges") or {}).get("served_own_rows") or {})]),
        ("Volatility forecast: realized Parkinson variance over the horizon; QLIKE (lower is better) and R2 of log "
         "variance, the stack against HAR alone and the 30-bar rolling mean", vol_rows),
        ("Which coins beat the others (per decision time, over the universe's coins; intervals resample "
         "non-overlapping horizon windows). The served cross-sectional stack ranks by its score (the logit behind "
         "P(beats the universe's median)); the plain GBT on the same target by its raw probability; momentum = "
         "return from 4 weeks to 1 week before, reversal = minus the last day's return. "
         "Long-short: long the top decile, short the bottom, equal weight, one book per horizon window; "
         f"{metrics.get('long_short_costs', '')}", cross),
        ("Models served, window by window", models),
        ("Consensus", metrics["consensus"]),
    ]
    if metrics.get("retrain_failures"):
        sections.append(("Retrains that failed (the previous CURRENT kept serving)", metrics["retrain_failures"]))
    if "table" in bt:
        heading = (f"Backtest {bt['from']} to {bt['to']}: {bt['policy']}; threshold {bt['threshold']}, "
                   f"{bt['signals']} signals")
        sections.append((heading, [{"curve": k, **v} for k, v in bt["table"].items()]))
        sections.append(("Guard decisions (rejections and scale-downs)", bt["decisions_with_guards"] or "none"))
    return report.html_report(out / "report.html", f"cst evaluation, trained until {metrics['train_until']}",
                              sections, images)


def _cov_interval(x: dict | None) -> str | None:
    if not x or x.get("interval", [None])[0] is None:
        return None
    return f"[{x['interval'][0]:.3f}, {x['interval'][1]:.3f}]"


def _resolution_row(h: str, own: dict) -> dict:
    """How finely the served range's own rows tell coverage from nominal: what a range at exactly nominal would
    measure there (90% intervals, overall and by tercile; how often within +-band), beside what the served one did."""
    x = own["calibrated_resolution"]
    ivs = [x["interval"], *x["by_vol_tercile_interval"]]
    has = x["interval"][0] is not None
    return {"horizon": h, "independent windows": x["windows"],
            "served: coverage (low / mid / high)": f"{own['coverage']:.3f} ("
            + " / ".join(f"{c:.3f}" if c is not None else "-" for c in own["coverage_by_vol_tercile"]) + ")",
            "served: misses below / above": f"{own['miss_below']:.3f} / {own['miss_above']:.3f}",
            "exact range: coverage [90%], overall / low / mid / high": " / ".join(
                f"[{lo:.3f}, {hi:.3f}]" if lo is not None else "-" for lo, hi in ivs) if has else None,
            f"exact range within +-{x['band']:.2f}: overall": f"{x['within_band_overall']:.0%}" if has else None,
            f"exact range within +-{x['band']:.2f}: overall and every tercile":
                f"{x['within_band_everywhere']:.0%}" if has else None}


def _inside(t: HorizonTest) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per kind of range: (decision times where it exists, whether the outcome fell inside, its width)."""
    kinds = t.references or {"served": t.ranges, "model q10-q90": t.quantiles[:, [0, 2]], "naive volatility": t.naive}
    return ranges_eval.through_time(t.ts, t.fwd, {k: r for k, r in kinds.items() if r is not None})


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


def run_backtests(settings: Settings, tests: dict[str, HorizonTest], market: History, threshold: float,
                  out: Path) -> dict:
    """Consensus signals at `threshold`, traded with and without the guards; BTC and an equal-weight universe as
    benchmarks; equity and drawdown PNGs."""
    daily = {h: t for h, t in tests.items() if settings.training.horizons[h].timeframe == "1d"}
    if not daily or "1d" not in market.panels:
        return {"skipped": "no daily horizon evaluated"}
    history = price_history_from_panel(market.panels["1d"])
    signals = consensus_signals(daily, threshold, settings.consensus_min_horizons)
    orders = orders_from_signals(signals, settings.training.horizons)
    start = min(int(t.ts.min()) for t in daily.values() if t.ts.size)
    end = int(history.close_ts[-1])
    cfg = settings.risk
    runs = {}
    for name, guards in (("with_guards", True), ("without_guards", False)):
        res = run_backtest(history, orders, cfg.model_copy(update={"guards": guards}), start, end)
        runs[name] = {"result": res, "equity": res.equity / cfg.initial_equity}
    ts = history.close_ts[history.window(start, end)]
    curves = {"strategy (guards)": runs["with_guards"]["equity"], "strategy (no guards)": runs["without_guards"]["equity"],
              "buy and hold BTC": buy_and_hold(history, "BTC", start, end, cfg.fee_bps),
              "equal weight": equal_weight(history, start, end, 1, cfg.fee_bps)}
    table = {name: performance(c, ts, cfg.periods_per_year) for name, c in curves.items()}
    for name in ("with_guards", "without_guards"):
        res = runs[name]["result"]
        label = "strategy (guards)" if name == "with_guards" else "strategy (no guards)"
        table[label] = {**res.metrics, "skipped": res.skipped}
    images = [report.equity_png(out / "equity.png", ts, curves),
              report.drawdown_png(out / "drawdown.png", ts, curves)]
    guarded = runs["with_guards"]["result"]
    doc = {
        "threshold": threshold, "min_horizons": settings.consensus_min_horizons, "signals": len(signals),
        "orders": len(orders), "from": ms_to_iso(start), "to": ms_to_iso(end),
        "policy": f"consensus signals, long only (spot), sized by fractional Kelly and vol targeting, held for the "
                  f"shortest agreeing horizon; fees {cfg.fee_bps:g} bps per side plus the labelled sqrt-impact model per side",
        "table": table,
        "decisions_with_guards": _count_reasons(guarded.decisions),
        "images": [p.name for p in images],
    }
    (out / "backtest.json").write_text(json.dumps(doc, indent=2, default=_json_default))
    return doc


def _count_reasons(decisions: list[BookDecision]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for d in decisions:
        if not d.allow or d.scale < 1.0:
            # Grouped by the reason's wording: figures and coins vary per decision.
            reason = re.sub(r"-?[0-9][0-9.,%]*", "#", d.reason.split(":")[0])
            counts[f"{d.guard}: {re.sub(r' with [A-Z]+$', '', reason)}"] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def load_experiment(path: str | Path, source: str | None = None) -> tuple[Settings, dict]:
    """The settings and arguments of a stored evaluation, checked against the data it names (or `source`)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CstError("bad_experiment", f"cannot read experiment snapshot {path}: {exc}") from None
    args = dict(doc["args"])
    if source:
        args["source"] = source
    found = directory_digest(args["source"])
    if found != doc["data_fingerprint"]:
        raise CstError("data_changed", f"{args['source']} holds other data than the experiment was run on "
                                       f"(fingerprint {found}, snapshot {doc['data_fingerprint']})")
    # Init values win over the environment: the snapshot alone decides every knob (secrets are never in it).
    secret_free = {k: v for k, v in doc["settings"].items() if k != "secrets_manager_id"}
    for section, field_name in SECRET_FIELDS.values():
        secret_free.get(section, {}).pop(field_name, None)
    return Settings(_env_file=None, **secret_free), args
