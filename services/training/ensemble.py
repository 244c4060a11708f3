"""One horizon end to end: labels, purged CV, tuned members, stacking, calibration, quantiles, export."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from services.features.frame import FeatureFrame, Panel
from services.features.sequences import sequence_index, sequences
from services.predict.conformal import range_seed
from services.training.calibration import (
    Calibrator,
    brier,
    ece,
    fit_calibrator,
    shrink_tables,
    skill_evidence,
)
from services.training.cv import walk_forward
from services.training.labels import beats_labels, direction_labels, forward_log_returns
from services.training.members import (
    MEMBERS,
    OPSET,
    Dataset,
    QuantileModels,
    make_member,
)
from services.training.tuning import TuneResult, tune_member
from services.training.volatility import VolStack, fit_vol, forward_variance
from shared.errors import CstError
from shared.ranking import MIN_COINS, decisions, rank_ic, window_interval
from shared.settings import Budget, HorizonSpec, Settings, timeframe_ms
from shared.storage import Lake

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    ds: Dataset
    fwd: np.ndarray  # forward log return of each labeled row
    excluded: dict[str, int]


TARGETS = ("direction", "beats")


@dataclass
class Rows:
    """Every frame row's forward return, labels and sequence window (training and evaluation share it)."""

    fwd: np.ndarray  # forward log return; NaN where not yet observed
    y: np.ndarray  # direction: 1 up / 0 down; NaN unobserved or in the dead zone
    idx: np.ndarray  # sequence window positions
    full: np.ndarray  # complete window
    beats: np.ndarray | None = None  # 1 beat the universe's median coin / 0 not; NaN unobserved, tie or no universe

    def labels(self, target: str) -> np.ndarray:
        if target == "beats":
            if self.beats is None:
                raise ValueError("these rows carry no cross-sectional labels")
            return self.beats
        return self.y

    def excluded(self, among: np.ndarray, target: str = "direction") -> dict[str, int]:
        observed = np.isfinite(self.fwd)
        labeled = np.isfinite(self.labels(target))
        return {
            "label_not_yet_observed": int((among & ~observed).sum()),
            ("dead_zone" if target == "direction" else "tie_or_no_universe"): int((among & observed & ~labeled).sum()),
            "sequence_window": int((among & labeled & ~self.full).sum()),
        }


def label_rows(frame: FeatureFrame, panel: Panel, spec: HorizonSpec, dead_zone: float,
               min_coins: int = 5) -> Rows:
    fwd = forward_log_returns(panel, frame, spec.bars)
    idx, full = sequence_index(frame.ts, frame.coin, timeframe_ms(spec.timeframe), spec.sequence_length)
    return Rows(fwd, direction_labels(fwd, dead_zone), idx, full, beats_labels(fwd, frame.ts, frame.members(), min_coins))


def prepare(frame: FeatureFrame, panel: Panel, spec: HorizonSpec, dead_zone: float, target: str = "direction",
            min_coins: int = 5, rows_: Rows | None = None) -> Prepared:
    """Rows of the universe with an observed label for `target` and a complete sequence window."""
    r = rows_ or label_rows(frame, panel, spec, dead_zone, min_coins)
    y = r.labels(target)
    keep = r.full & np.isfinite(y) & frame.members()
    rows = np.flatnonzero(keep)
    ds = Dataset(frame.X[rows], sequences(frame.X, r.idx[rows]), y[rows], frame.ts[rows], frame.coin[rows],
                 spec.length_ms)
    return Prepared(ds, r.fwd[rows], r.excluded(frame.members(), target))


@dataclass
class Stack:
    """One target's stacked ensemble: tuned members, the meta-learner, the served calibrator and its held-out
    figures, with the labeled rows it learned from and which of them calibrated it."""

    target: str
    members: dict
    meta: object
    calibrator: Calibrator
    metrics: dict
    params: dict
    tuning: dict
    ds: Dataset
    cal_rows: np.ndarray
    folds: int
    fitted_until: int
    excluded: dict = field(default_factory=dict)


@dataclass
class Trained:
    horizon: str
    spec: HorizonSpec
    names: list[str]
    members: dict
    meta: object
    calibrator: Calibrator
    quantiles: QuantileModels
    background: dict[str, np.ndarray]
    metrics: dict
    params: dict
    tuning: dict
    window: dict
    excluded: dict
    blobs: dict[str, bytes] = field(default_factory=dict)
    # The labeled rows and which of them formed the held-out validation half (for the registry gate).
    ds: Dataset | None = None
    val_idx: np.ndarray | None = None
    # The cross-sectional target (P(the coin beats its universe's median)), or why this horizon has none.
    beats: Stack | None = None
    beats_note: str | None = None
    # The volatility forecast (realized variance over the horizon), or why this horizon has none.
    vol: VolStack | None = None
    vol_note: str | None = None


def _meta_model():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=1000)


def calibration_split(ts: np.ndarray, horizon_ms: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows the members fit on and rows that calibrate them: the last `share` of distinct decision times calibrate;
    a member row is kept only if its label window and one more horizon (the embargo) end before that block."""
    times = np.unique(ts)
    start = int(times[min(int(times.size * (1 - share)), times.size - 1)])
    return np.flatnonzero(ts + 2 * horizon_ms <= start), np.flatnonzero(ts >= start)


def fit_stack(target: str, horizon: str, ds: Dataset, settings: Settings, budget: Budget, lake: Lake | None,
              tick: Callable[[str], None], fwd: np.ndarray | None = None) -> Stack:
    """Purged walk-forward search of every member, the meta-learner on their out-of-fold logits, the final fit on
    the member rows, and calibration with earned skill on the latest block they never saw."""
    cfg = settings.training
    seed = cfg.seed
    horizon_ms = ds.label_ms
    name = horizon if target == "direction" else f"{horizon} {target}"
    # The latest decision times form the calibration block, scored by the very models that serve: members are
    # fitted only on rows whose label window (plus an embargo of one horizon) ends before the block starts.
    fit_rows, cal_rows = calibration_split(ds.ts, horizon_ms, cfg.calibration_share)
    fit = ds.take(fit_rows)
    try:
        folds = walk_forward(fit.ts, horizon_ms, budget.folds)
    except ValueError as exc:
        raise CstError("too_few_rows", f"{name}: the {fit_rows.size} rows before the calibration block cannot "
                                       f"fill {budget.folds} walk-forward folds ({exc})") from None
    test_rows = np.concatenate([f.test for f in folds])
    tuned: dict[str, TuneResult] = {}
    for m in MEMBERS:
        tick(f"{name}: tuning {m}")
        tuned[m] = tune_member(m, fit, folds, budget, seed=seed, lake=lake, horizon=horizon, target=target,
                               first_trial=cfg.first_trial[m], warm_starts=cfg.warm_starts, threads=cfg.threads,
                               on_trial=lambda done, n, spent, left, m=m: tick(
                                   f"{name}: {m} trial {done}/{n}, {spent:.0f} s"
                                   + ("" if left is None else f", about {left:.0f} s left")))
    oof = np.column_stack([tuned[m].oof for m in MEMBERS])
    y_oof = fit.y[test_rows]
    meta = _meta_model().fit(oof, y_oof.astype(int))

    tick(f"{name}: final fit")
    members = {m: make_member(m, tuned[m].params, seed, cfg.threads).fit(fit, epochs=budget.epochs)
               for m in MEMBERS}
    cal_ds = ds.take(cal_rows)
    s_cal = meta.decision_function(np.column_stack([members[m].logit(cal_ds) for m in MEMBERS]))
    y_cal, ts_cal = cal_ds.y, cal_ds.ts
    base_rate = float(ds.y.mean())

    tick(f"{name}: calibrating")
    cal = fit_calibrator(s_cal, y_cal, cfg.calibration_grid, probe_grid=cfg.calibration_probe_grid, ts=ts_cal,
                         horizon_ms=horizon_ms, base_rate=base_rate)
    # How far the calibrated stack may leave the base rate, from held-out blocks of the calibration rows.
    skill = skill_evidence(s_cal, y_cal, ts_cal, horizon_ms, base_rate, blocks=cfg.skill_blocks,
                           grid=cfg.calibration_probe_grid, z=cfg.skill_z, min_windows=cfg.skill_min_windows)
    shrink_tables(cal, base_rate, skill.strength)
    cal.selection["skill"] = skill.summary

    # Held-out figures: every calibration row scored by a calibrator that did not see its time block.
    p_val, y_val = skill.p, y_cal
    ref = brier(np.full(y_val.size, base_rate), y_val)
    b = brier(p_val, y_val)
    conf = np.where(p_val >= 0.5, skill.low, 1 - skill.high)
    hit = np.where(p_val >= 0.5, y_val == 1, y_val == 0)
    confident = conf >= settings.confidence_threshold
    metrics = {
        "cv_brier": b, "brier_skill": 1 - b / ref if ref > 0 else 0.0, "ece": ece(p_val, y_val),
        "base_rate_train": base_rate, "validation_rows": int(y_val.size), "validation_start": int(ts_cal.min()),
        "member_cv_brier": {m: tuned[m].best_brier for m in MEMBERS},
        "confident": {"threshold": settings.confidence_threshold, "n": int(confident.sum()),
                      "hit_rate": float(hit[confident].mean()) if confident.any() else None},
        "hit_rate_all": float(hit.mean()),
        "skill": skill.summary,
    }
    if target == "beats" and fwd is not None:
        metrics["rank_ic"] = held_out_ic(s_cal, fwd[cal_rows], ts_cal, horizon_ms, seed)
    return Stack(target, members, meta, cal, metrics, {m: tuned[m].params for m in MEMBERS},
                 {m: tuned[m].summary() for m in MEMBERS}, ds, cal_rows, len(folds), int(fit.ts.max()))


def held_out_ic(score: np.ndarray, fwd: np.ndarray, ts: np.ndarray, horizon_ms: int, seed: int) -> dict:
    """How well the stack's score ranked the coins on the calibration rows (fitted on none of them): Spearman IC
    per decision time, its mean over non-overlapping horizon windows with a 90% bootstrap interval."""
    d = decisions(ts, score, fwd)
    if not d.groups:
        return {"mean": None, "interval": [None, None], "windows": 0, "decision_times": 0,
                "note": f"no calibration decision ranks {MIN_COINS} or more coins"}
    return {**window_interval(rank_ic(d, score, fwd), d.times, horizon_ms, seed=seed), "decision_times": len(d.groups)}


def _too_few(name: str, prep: Prepared, min_rows: int) -> CstError | None:
    if len(prep.ds) >= min_rows:
        return None
    return CstError("too_few_rows", f"{name}: {len(prep.ds)} labeled rows with full sequence windows before the "
                                    f"cut-off (excluded: {prep.excluded}); at least {min_rows} are needed")


def train_horizon(horizon: str, frame: FeatureFrame, panel: Panel, settings: Settings, budget: Budget,
                  lake: Lake | None, tick: Callable[[str], None] | None = None, rows: Rows | None = None) -> Trained:
    cfg = settings.training
    spec = cfg.horizons[horizon]
    seed = cfg.seed
    tick = tick or (lambda _msg: None)
    rows = rows or label_rows(frame, panel, spec, cfg.dead_zone, cfg.beats_min_coins)
    prep = prepare(frame, panel, spec, cfg.dead_zone, rows_=rows)
    ds = prep.ds
    short = _too_few(horizon, prep, cfg.min_training_rows)
    if short is not None:
        raise short
    stack = fit_stack("direction", horizon, ds, settings, budget, lake, tick)
    beats, beats_note = None, None
    if "beats" in cfg.targets:
        # The cross-sectional target: every prediction carries it when the horizon's universe allows it; when it
        # cannot be trained the direction model still serves, and the model card says why it lacks the second.
        prep_b = prepare(frame, panel, spec, cfg.dead_zone, "beats", rows_=rows)
        problem = _too_few(f"{horizon} beats", prep_b, cfg.min_training_rows)
        if problem is None:
            try:
                beats = fit_stack("beats", horizon, prep_b.ds, settings, budget, lake, tick, prep_b.fwd)
                beats.excluded = prep_b.excluded
            except CstError as exc:
                problem = exc
        if problem is not None:
            beats_note = f"[{problem.code}] {problem.message}"
            log.warning("horizon %s: no cross-sectional model: %s", horizon, beats_note)
    else:
        beats_note = "not configured (training.targets)"
    vol, vol_note = None, None
    try:
        tick(f"{horizon}: volatility")
        vol = train_vol(frame, panel, spec, settings, budget)
    except CstError as exc:
        vol_note = f"[{exc.code}] {exc.message}"
        log.warning("horizon %s: no volatility forecast: %s", horizon, vol_note)
    quant = QuantileModels(cfg.quantiles, n_estimators=min(cfg.quantile_max_estimators, budget.gbt_max_estimators),
                           num_leaves=cfg.quantile_num_leaves, learning_rate=cfg.quantile_learning_rate,
                           min_child_samples=cfg.quantile_min_child_samples, seed=seed,
                           threads=cfg.threads).fit(ds.X, prep.fwd)
    # Which training rows serve as the SHAP background: a seeded sample of real rows, no values made up.
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(ds), size=min(settings.training.shap_background, len(ds)), replace=False))
    ts_cal = ds.ts[stack.cal_rows]
    trained = Trained(
        horizon=horizon, spec=spec, names=list(frame.names), members=stack.members, meta=stack.meta,
        calibrator=stack.calibrator, quantiles=quant, background={"X": ds.X[pick], "S": ds.S[pick]},
        metrics=stack.metrics, params=stack.params, tuning=stack.tuning,
        window={"first": int(ds.ts.min()), "last": int(ds.ts.max()), "rows": len(ds),
                "coins": sorted(set(ds.coin.tolist())), "folds": stack.folds, "members_fitted_until":
                stack.fitted_until, "calibration_from": int(ts_cal.min()), "calibration_rows": int(stack.cal_rows.size)},
        excluded=prep.excluded,
        ds=ds,
        val_idx=stack.cal_rows,
        beats=beats,
        beats_note=beats_note,
        vol=vol,
        vol_note=vol_note,
    )
    tick(f"{horizon}: exporting")
    trained.blobs = export(trained, ds)
    return trained


def train_vol(frame: FeatureFrame, panel: Panel, spec: HorizonSpec, settings: Settings, budget: Budget) -> VolStack:
    """The horizon's volatility forecast on every universe row whose realized variance is observed (no dead zone:
    calm rows are what a volatility model must see most)."""
    cfg = settings.training
    rv = forward_variance(panel, frame, spec.bars)
    member = frame.members()
    keep = member & np.isfinite(rv)
    rows = np.flatnonzero(keep)
    excluded = {"variance_not_yet_observed": int((member & ~np.isfinite(rv)).sum())}
    if rows.size < cfg.min_training_rows:
        raise CstError("too_few_rows", f"volatility: {rows.size} rows with an observed realized variance "
                                       f"(excluded: {excluded}); at least {cfg.min_training_rows} are needed")
    ts = frame.ts[rows]
    fit_rows, cal_rows = calibration_split(ts, spec.length_ms, cfg.calibration_share)
    params = {**cfg.vol_gbt, "n_estimators": min(int(cfg.vol_gbt["n_estimators"]), budget.gbt_max_estimators)}
    vol = fit_vol(frame.X[rows], rv[rows], ts, list(frame.names), spec.bars, spec.length_ms, fit_rows, cal_rows,
                  budget.folds, params, cfg.seed, cfg.threads)
    vol.excluded = excluded
    # Where the served range starts: |r| / sigma on rows no model that forecast them saw: the calibration rows (the
    # served members) and, before them, the walk-forward folds' test rows (fold models). A long horizon's window
    # (60 thirty-day outcomes) reaches back past the calibration block, which holds only a few of its outcomes.
    held = np.concatenate([rows[fit_rows][vol.oof_rows], rows[cal_rows]])
    sigma = np.concatenate([vol.oof_sigma, vol.sigma(frame.X[rows[cal_rows]])])
    vol.range_seed = range_seed(frame.ts[held], sigma, forward_log_returns(panel, frame, spec.bars)[held],
                                settings.run.range_window * spec.bars)
    return vol


BEATS_PREFIX = "beats/"


def _stack_blobs(members: dict, meta, calibrator: Calibrator, F: int, prefix: str = "") -> dict[str, bytes]:
    from skl2onnx import to_onnx

    blobs = {f"{prefix}{m}.onnx": members[m].to_onnx(F) for m in MEMBERS}
    blobs[f"{prefix}meta.onnx"] = to_onnx(meta, np.zeros((1, len(MEMBERS)), np.float32),
                                          target_opset={"": OPSET, "ai.onnx.ml": 3},
                                          options={id(meta): {"zipmap": False}}).SerializeToString()
    blobs[f"{prefix}calibrator.onnx"] = calibrator.to_onnx()
    # What exact SHAP needs at serving (services/predict/explain.py): the meta-learner's and the logistic member's
    # weights and the trees as arrays.
    coef, intercept = members["lr"].linear()
    trees = {f"gbt_{k}": v for k, v in members["gbt"].tree_arrays().items()}
    buf = io.BytesIO()
    np.savez(buf, meta_coef=meta.coef_.reshape(-1), meta_intercept=meta.intercept_.reshape(-1),
             lr_coef=coef, lr_intercept=np.asarray([intercept]), **trees)
    blobs[f"{prefix}explain.npz"] = buf.getvalue()
    return blobs


def export(t: Trained, ds: Dataset) -> dict[str, bytes]:
    F = len(t.names)
    blobs = _stack_blobs(t.members, t.meta, t.calibrator, F)
    for q, blob in zip(("q10", "q50", "q90"), t.quantiles.to_onnx(F)):
        blobs[f"{q}.onnx"] = blob
    buf = io.BytesIO()
    np.savez(buf, X=t.background["X"], S=t.background["S"])
    blobs["background.npz"] = buf.getvalue()
    if t.beats is not None:
        blobs.update(_stack_blobs(t.beats.members, t.beats.meta, t.beats.calibrator, F, BEATS_PREFIX))
    if t.vol is not None:
        blobs.update(t.vol.blobs(F))
    return blobs


def native_meta_logit(t: Trained | Stack, ds: Dataset) -> np.ndarray:
    """The same stack evaluated with the native (scikit-learn, LightGBM, torch) models: the parity reference."""
    z = np.column_stack([t.members[m].logit(ds) for m in MEMBERS])
    return t.meta.decision_function(z)


def native_p_up(t: Trained | Stack, ds: Dataset) -> np.ndarray:
    return t.calibrator.transform(native_meta_logit(t, ds))[0]


__all__ = ["BEATS_PREFIX", "TARGETS", "Stack", "export", "fit_stack", "label_rows", "native_meta_logit",
           "native_p_up", "prepare", "train_horizon"]
