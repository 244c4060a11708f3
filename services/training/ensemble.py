"""One horizon end to end: labels, purged CV, tuned members, stacking, calibration, quantiles, export."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from services.features.frame import FeatureFrame, Panel
from services.features.sequences import sequence_index, sequences
from services.training.calibration import (
    Calibrator,
    brier,
    ece,
    fit_calibrator,
    shrink_tables,
    skill_evidence,
)
from services.training.cv import walk_forward
from services.training.labels import direction_labels, forward_log_returns
from services.training.members import (
    MEMBERS,
    OPSET,
    Dataset,
    QuantileModels,
    make_member,
)
from services.training.tuning import TuneResult, tune_member
from shared.errors import CstError
from shared.settings import Budget, HorizonSpec, Settings, timeframe_ms
from shared.storage import Lake

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    ds: Dataset
    fwd: np.ndarray  # forward log return of each labeled row
    excluded: dict[str, int]


@dataclass
class Rows:
    """Every frame row's forward return, label and sequence window (training and evaluation share it)."""

    fwd: np.ndarray  # forward log return; NaN where not yet observed
    y: np.ndarray  # 1 up / 0 down; NaN unobserved or in the dead zone
    idx: np.ndarray  # sequence window positions
    full: np.ndarray  # complete window

    def excluded(self, among: np.ndarray) -> dict[str, int]:
        observed = np.isfinite(self.fwd)
        labeled = np.isfinite(self.y)
        return {
            "label_not_yet_observed": int((among & ~observed).sum()),
            "dead_zone": int((among & observed & ~labeled).sum()),
            "sequence_window": int((among & labeled & ~self.full).sum()),
        }


def label_rows(frame: FeatureFrame, panel: Panel, spec: HorizonSpec, dead_zone: float) -> Rows:
    fwd = forward_log_returns(panel, frame, spec.bars)
    idx, full = sequence_index(frame.ts, frame.coin, timeframe_ms(spec.timeframe), spec.sequence_length)
    return Rows(fwd, direction_labels(fwd, dead_zone), idx, full)


def prepare(frame: FeatureFrame, panel: Panel, spec: HorizonSpec, dead_zone: float) -> Prepared:
    """Rows with an observed label outside the dead zone and a complete sequence window."""
    r = label_rows(frame, panel, spec, dead_zone)
    keep = r.full & np.isfinite(r.y) & frame.members()
    rows = np.flatnonzero(keep)
    ds = Dataset(frame.X[rows], sequences(frame.X, r.idx[rows]), r.y[rows], frame.ts[rows], frame.coin[rows],
                 spec.length_ms)
    return Prepared(ds, r.fwd[rows], r.excluded(frame.members()))


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


def _meta_model():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=1000)


def calibration_split(ts: np.ndarray, horizon_ms: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows the members fit on and rows that calibrate them: the last `share` of distinct decision times calibrate;
    a member row is kept only if its label window and one more horizon (the embargo) end before that block."""
    times = np.unique(ts)
    start = int(times[min(int(times.size * (1 - share)), times.size - 1)])
    return np.flatnonzero(ts + 2 * horizon_ms <= start), np.flatnonzero(ts >= start)


def train_horizon(horizon: str, frame: FeatureFrame, panel: Panel, settings: Settings, budget: Budget,
                  lake: Lake | None, tick: Callable[[str], None] | None = None) -> Trained:
    cfg = settings.training
    spec = cfg.horizons[horizon]
    seed = cfg.seed
    tick = tick or (lambda _msg: None)
    prep = prepare(frame, panel, spec, cfg.dead_zone)
    ds = prep.ds
    if len(ds) < cfg.min_training_rows:
        raise CstError("too_few_rows", f"{horizon}: {len(ds)} labeled rows with full sequence windows before the "
                                       f"cut-off (excluded: {prep.excluded}); at least {cfg.min_training_rows} "
                                       "are needed")
    horizon_ms = spec.length_ms
    # The latest decision times form the calibration block, scored by the very models that serve: members are
    # fitted only on rows whose label window (plus an embargo of one horizon) ends before the block starts.
    fit_rows, cal_rows = calibration_split(ds.ts, horizon_ms, cfg.calibration_share)
    fit = ds.take(fit_rows)
    try:
        folds = walk_forward(fit.ts, horizon_ms, budget.folds)
    except ValueError as exc:
        raise CstError("too_few_rows", f"{horizon}: the {fit_rows.size} rows before the calibration block cannot "
                                       f"fill {budget.folds} walk-forward folds ({exc})") from None
    test_rows = np.concatenate([f.test for f in folds])
    tuned: dict[str, TuneResult] = {}
    for m in MEMBERS:
        tick(f"{horizon}: tuning {m}")
        tuned[m] = tune_member(m, fit, folds, budget, seed=seed, lake=lake, horizon=horizon,
                               first_trial=cfg.first_trial[m], warm_starts=cfg.warm_starts, threads=cfg.threads,
                               on_trial=lambda m=m: tick(f"{horizon}: {m} trial"))
    oof = np.column_stack([tuned[m].oof for m in MEMBERS])
    y_oof = fit.y[test_rows]
    meta = _meta_model().fit(oof, y_oof.astype(int))

    tick(f"{horizon}: final fit")
    members = {m: make_member(m, tuned[m].params, seed, cfg.threads).fit(fit, epochs=budget.epochs)
               for m in MEMBERS}
    cal_ds = ds.take(cal_rows)
    s_cal = meta.decision_function(np.column_stack([members[m].logit(cal_ds) for m in MEMBERS]))
    y_cal, ts_cal = cal_ds.y, cal_ds.ts
    base_rate = float(ds.y.mean())

    tick(f"{horizon}: calibrating")
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
    quant = QuantileModels(cfg.quantiles, n_estimators=min(cfg.quantile_max_estimators, budget.gbt_max_estimators),
                           num_leaves=cfg.quantile_num_leaves, learning_rate=cfg.quantile_learning_rate,
                           min_child_samples=cfg.quantile_min_child_samples, seed=seed,
                           threads=cfg.threads).fit(ds.X, prep.fwd)
    # Which training rows serve as the SHAP background: a seeded sample of real rows, no values made up.
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(ds), size=min(settings.training.shap_background, len(ds)), replace=False))
    trained = Trained(
        horizon=horizon, spec=spec, names=list(frame.names), members=members, meta=meta, calibrator=cal,
        quantiles=quant, background={"X": ds.X[pick], "S": ds.S[pick]}, metrics=metrics,
        params={m: tuned[m].params for m in MEMBERS},
        tuning={m: tuned[m].summary() for m in MEMBERS},
        window={"first": int(ds.ts.min()), "last": int(ds.ts.max()), "rows": len(ds),
                "coins": sorted(set(ds.coin.tolist())), "folds": len(folds), "members_fitted_until":
                int(fit.ts.max()), "calibration_from": int(ts_cal.min()), "calibration_rows": int(cal_rows.size)},
        excluded=prep.excluded,
        ds=ds,
        val_idx=cal_rows,
    )
    tick(f"{horizon}: exporting")
    trained.blobs = export(trained, ds)
    return trained


def export(t: Trained, ds: Dataset) -> dict[str, bytes]:
    from skl2onnx import to_onnx

    F = len(t.names)
    blobs = {f"{m}.onnx": t.members[m].to_onnx(F) for m in MEMBERS}
    blobs["meta.onnx"] = to_onnx(t.meta, np.zeros((1, len(MEMBERS)), np.float32),
                                 target_opset={"": OPSET, "ai.onnx.ml": 3},
                                 options={id(t.meta): {"zipmap": False}}).SerializeToString()
    blobs["calibrator.onnx"] = t.calibrator.to_onnx()
    for q, blob in zip(("q10", "q50", "q90"), t.quantiles.to_onnx(F)):
        blobs[f"{q}.onnx"] = blob
    buf = io.BytesIO()
    np.savez(buf, X=t.background["X"], S=t.background["S"])
    blobs["background.npz"] = buf.getvalue()
    # What exact SHAP needs at serving (services/predict/explain.py): the meta-learner's and the logistic member's
    # weights and the trees as arrays.
    coef, intercept = t.members["lr"].linear()
    trees = {f"gbt_{k}": v for k, v in t.members["gbt"].tree_arrays().items()}
    buf = io.BytesIO()
    np.savez(buf, meta_coef=t.meta.coef_.reshape(-1), meta_intercept=t.meta.intercept_.reshape(-1),
             lr_coef=coef, lr_intercept=np.asarray([intercept]), **trees)
    blobs["explain.npz"] = buf.getvalue()
    return blobs


def native_meta_logit(t: Trained, ds: Dataset) -> np.ndarray:
    """The same stack evaluated with the native (scikit-learn, LightGBM, torch) models: the parity reference."""
    z = np.column_stack([t.members[m].logit(ds) for m in MEMBERS])
    return t.meta.decision_function(z)


def native_p_up(t: Trained, ds: Dataset) -> np.ndarray:
    return t.calibrator.transform(native_meta_logit(t, ds))[0]


__all__ = ["export", "label_rows", "native_meta_logit", "native_p_up", "prepare", "train_horizon"]
