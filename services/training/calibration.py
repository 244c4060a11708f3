"""Calibration and its uncertainty: Venn-Abers bounds for the interval, the point calibrator chosen on validation.

Every calibrator is tabulated on a grid of scores (the meta-learner's logit) and served as a step
lookup: the ONNX graph and the numpy reference below compute the same thing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from shared.metrics import (  # noqa: F401 - re-exported
    brier,
    brier_gain_by_window,
    ece,
    horizon_windows,
    logit,
    sigmoid,
)

METHODS = ("venn_abers", "isotonic", "platt")


def _isotonic(s: np.ndarray, y: np.ndarray, w: np.ndarray | None = None):
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y, sample_weight=w)


def effective_weight(ts: np.ndarray | None, horizon_ms: int | None) -> float:
    """Weight of one calibration row as a share of an independent outcome.

    Labels of consecutive decision times overlap (a 30-day label moves one day per row), and coins at the
    same time share the market's move. The independent outcomes in a set are taken as the non-overlapping
    horizon windows its decision times span (one per window, across all coins); each row weighs
    n_eff / n. Without timestamps every row counts as one outcome.
    """
    if ts is None or horizon_ms is None or ts.size == 0:
        return 1.0
    n_eff = (float(ts.max() - ts.min()) + horizon_ms) / horizon_ms
    return float(min(1.0, n_eff / ts.size))


def venn_abers_bounds(s_cal: np.ndarray, y_cal: np.ndarray, grid: np.ndarray,
                      weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Inductive Venn-Abers (Vovk & Petej 2014): for a test score g, p0 / p1 are the isotonic fits
    on the calibration set plus (g, 0) / plus (g, 1), evaluated at g.

    Calibration rows weigh `weight` each and the test point one whole outcome, so overlapping labels
    do not pose as independent evidence: the interval is as wide as the independent outcomes allow.
    """
    p0 = np.empty(grid.size)
    p1 = np.empty(grid.size)
    s_ext = np.concatenate([s_cal, [0.0]])
    y_ext = np.concatenate([y_cal, [0.0]])
    w_ext = np.concatenate([np.full(s_cal.size, weight), [1.0]])
    for i, g in enumerate(grid):
        s_ext[-1] = g
        y_ext[-1] = 0.0
        p0[i] = _isotonic(s_ext, y_ext, w_ext).predict([g])[0]
        y_ext[-1] = 1.0
        p1[i] = _isotonic(s_ext, y_ext, w_ext).predict([g])[0]
    return p0, p1


def _grid(s: np.ndarray, size: int) -> np.ndarray:
    """Score grid: quantiles of the calibration scores (dense where predictions are), widened at both ends."""
    q = np.quantile(s, np.linspace(0, 1, size - 2))
    span = float(s.max() - s.min()) or 1.0
    return np.unique(np.concatenate([[s.min() - span], q, [s.max() + span]]))


def _point_table(method: str, s: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    if method == "isotonic":
        return _isotonic(s, y).predict(grid)
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000).fit(s.reshape(-1, 1), y.astype(int))
        return lr.predict_proba(grid.reshape(-1, 1))[:, 1]
    if method == "venn_abers":
        p0, p1 = venn_abers_bounds(s, y, grid)
        return p1 / (1.0 - p0 + p1)  # the log-loss-optimal merge of the two probabilities
    raise ValueError(f"unknown calibration method {method!r}")


@dataclass
class Calibrator:
    method: str
    grid: np.ndarray
    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    selection: dict

    def index(self, score: np.ndarray) -> np.ndarray:
        """Step lookup: the table entry of the largest grid score <= score (the first entry below the grid)."""
        return np.maximum(np.sum(np.asarray(score, dtype=np.float64)[:, None] >= self.grid[None, :], axis=1) - 1, 0)

    def transform(self, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.index(score)
        return self.point[idx], self.low[idx], self.high[idx]

    def to_onnx(self) -> bytes:
        from onnx import TensorProto, helper, numpy_helper

        g = self.grid.astype(np.float32).reshape(1, -1)
        inits = [
            numpy_helper.from_array(g, "grid"),
            numpy_helper.from_array(self.point.astype(np.float32), "t_point"),
            numpy_helper.from_array(self.low.astype(np.float32), "t_low"),
            numpy_helper.from_array(self.high.astype(np.float32), "t_high"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(np.array(0, np.int64), "zero"),
        ]
        nodes = [
            helper.make_node("Unsqueeze", ["score", "axis1"], ["s2"]),
            helper.make_node("GreaterOrEqual", ["s2", "grid"], ["ge"]),
            helper.make_node("Cast", ["ge"], ["ge_i"], to=TensorProto.INT64),
            helper.make_node("ReduceSum", ["ge_i", "axis1"], ["count"], keepdims=0),
            helper.make_node("Sub", ["count", "one"], ["idx0"]),
            helper.make_node("Max", ["idx0", "zero"], ["idx"]),
            helper.make_node("Gather", ["t_point", "idx"], ["p"]),
            helper.make_node("Gather", ["t_low", "idx"], ["low"]),
            helper.make_node("Gather", ["t_high", "idx"], ["high"]),
        ]
        graph = helper.make_graph(
            nodes, "calibrator",
            [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n"]) for n in ("p", "low", "high")],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
        model.ir_version = 8
        return model.SerializeToString()


def recentre(table: np.ndarray, at: np.ndarray, rate: float) -> float:
    """The logit shift that makes the table's mean over the calibration scores `at` equal `rate`."""
    from scipy.optimize import brentq

    z = logit(table[at])
    return float(brentq(lambda d: float(np.mean(sigmoid(z + d))) - rate, -20, 20))


def fit_calibrator(s: np.ndarray, y: np.ndarray, grid_size: int, *, probe_grid: int, ts: np.ndarray | None = None,
                   horizon_ms: int | None = None, base_rate: float | None = None) -> Calibrator:
    """Choose the point method on the later half (fit on the earlier), then refit it on all of s.

    The interval is always the Venn-Abers pair [p0, p1] (widened to contain the point): its bounds
    are valid under exchangeability whatever the underlying model, which a spread of ensemble
    members or a conformal interval on a probability would not give per prediction. Rows are weighted
    by `effective_weight(ts, horizon_ms)`. The tables that only choose the method have at most `probe_grid` points.

    With `base_rate` (the up-rate over ALL training labels) the table's level is moved, in logit space,
    to that rate: the calibration rows span a few years at most, one or two market regimes, and their
    up-rate is a handful of independent outcomes (about 24 for 30-day labels over two years). The
    calibration set decides the shape (how the probability rises with the score), the whole history
    the level. Measured by `cst evaluate` (see the model card).
    """
    order = np.arange(s.size)  # s arrives in time order
    half = s.size // 2
    fit_i, val_i = order[:half], order[half:]
    grid_fit = _grid(s[fit_i], min(grid_size, probe_grid))
    scores = {}
    for method in METHODS:
        table = _point_table(method, s[fit_i], y[fit_i], np.clip(grid_fit, s[fit_i].min(), s[fit_i].max()))
        probe = Calibrator(method, grid_fit, table, table, table, {})
        scores[method] = brier(probe.transform(s[val_i])[0], y[val_i])
    best = min(scores, key=scores.get)
    grid = _grid(s, grid_size)
    # A calibrator knows nothing of scores it never saw: outside the calibration scores the table holds its
    # edge values (Platt would extrapolate its slope; serving scores do leave that range, measured on 1h).
    point = _point_table(best, s, y, np.clip(grid, s.min(), s.max()))
    w = effective_weight(ts, horizon_ms)
    p0, p1 = venn_abers_bounds(s, y, grid, w)
    low, high = np.minimum(p0, point), np.maximum(p1, point)
    selection = {"validation_brier": scores, "chosen": best, "fit_rows": int(half),
                 "validation_rows": int(s.size - half), "row_weight": w,
                 "effective_outcomes": round(w * s.size, 1),
                 # Where the calibration scores lie: evaluation compares the served scores with these.
                 "score_range": [float(s.min()), float(s.max())],
                 "score_quantiles": [float(v) for v in np.quantile(s, [0.05, 0.5, 0.95])]}
    cal = Calibrator(best, grid, point, low, high, selection)
    if base_rate is not None:
        at = cal.index(s)
        shift = recentre(point, at, base_rate)
        selection["level"] = {"calibration_rows_rate": float(np.mean(point[at])), "training_base_rate": base_rate,
                              "logit_shift": shift}
        cal.point, cal.low, cal.high = (sigmoid(logit(t) + shift) for t in (point, low, high))
    return cal


def shrink_tables(cal: Calibrator, base_rate: float, strength: float) -> None:
    """Pull every table toward the base rate in logit space: p -> sigmoid(b + strength * (logit p - b)).

    strength 1 serves the calibrator as fitted, 0 serves the base rate everywhere (no demonstrated skill). The map
    is monotone, so low <= point <= high still holds."""
    b = float(logit(np.asarray(base_rate)))
    cal.point, cal.low, cal.high = (sigmoid(b + strength * (logit(t) - b)) for t in (cal.point, cal.low, cal.high))


@dataclass
class SkillEvidence:
    """What the calibration block says about skill, scored out of sample (cross-fitted over time blocks)."""

    strength: float  # the shrinkage toward the base rate finally served (0 = base rate)
    demonstrated: bool
    summary: dict
    p: np.ndarray  # out-of-sample point, low and high per calibration row, at the served strength
    low: np.ndarray
    high: np.ndarray


def _no_evidence(base: dict, why: str, base_rate: float, n: int) -> SkillEvidence:
    flat = np.full(n, base_rate)
    summary = {**base, "strength": 0.0, "best_strength": None, "demonstrated": False, "brier_gain_per_window": None,
               "gain_standard_error": None, "verdict": "no demonstrated skill", "why": why}
    return SkillEvidence(0.0, False, summary, flat, flat.copy(), flat.copy())


def skill_evidence(s: np.ndarray, y: np.ndarray, ts: np.ndarray, horizon_ms: int, base_rate: float, *,
                   blocks: int, grid: int, z: float, min_windows: int) -> SkillEvidence:
    """Estimate how far the calibrated stack may move away from the base rate, from evidence it was not fitted on.

    The calibration block is cut into `blocks` contiguous time blocks; each is scored by a calibrator fitted on the
    others, leaving out every row whose label window overlaps it (purged). The shrinkage strength is the one in
    [0, 1] that minimises the held-out Brier score with each horizon window weighing the same (independent
    outcomes, not rows). Skill counts as demonstrated only when the held-out Brier gain over the base rate, averaged
    over windows, stays above zero by `z` standard errors of the window means and at least `min_windows` windows
    hold it; otherwise the strength is 0 and the horizon serves its base rate.
    """
    order = np.argsort(ts, kind="stable")
    s, y, ts = s[order], y[order], ts[order]
    windows = horizon_windows(ts, horizon_ms)
    _, w = np.unique(windows, return_inverse=True)
    n_w = int(w.max()) + 1 if w.size else 0
    base = {"blocks": blocks, "z": z, "min_windows": min_windows, "windows": n_w, "rows": int(s.size)}
    if n_w < min_windows:
        return _no_evidence(base, f"{n_w} independent horizon windows (< {min_windows})", base_rate, s.size)
    times = np.unique(ts)
    edges = np.linspace(0, times.size, blocks + 1).astype(int)
    p = np.empty(s.size)
    lo = np.empty(s.size)
    hi = np.empty(s.size)
    for a, b in itertools.pairwise(edges):
        start, end = int(times[a]), int(times[b - 1])
        held = (ts >= start) & (ts <= end)
        train = (ts + horizon_ms < start) | (ts > end + horizon_ms)
        if train.sum() < 2 or len(np.unique(y[train])) < 2:
            return _no_evidence(base, "a held-out block leaves too few purged calibration rows to fit on", base_rate,
                                s.size)
        cal = fit_calibrator(s[train], y[train], grid, probe_grid=grid, ts=ts[train], horizon_ms=horizon_ms,
                             base_rate=base_rate)
        p[held], lo[held], hi[held] = cal.transform(s[held])
    b = float(logit(np.asarray(base_rate)))
    zp = logit(p) - b
    strengths = np.linspace(0.0, 1.0, 101)
    per_window = np.bincount(w)
    # Brier at every strength, each window weighing the same.
    loss = np.array([np.mean(np.bincount(w, weights=(sigmoid(b + k * zp) - y) ** 2, minlength=n_w) / per_window)
                     for k in strengths])
    best = float(strengths[int(np.argmin(loss))])
    shrunk = sigmoid(b + best * zp)
    gain = brier_gain_by_window(shrunk, np.full(s.size, base_rate), y, windows)
    mean = float(gain.mean())
    se = float(gain.std(ddof=1) / np.sqrt(n_w)) if n_w > 1 else float("inf")
    demonstrated = bool(best > 0 and n_w >= min_windows and mean - z * se > 0)
    strength = best if demonstrated else 0.0
    summary = {**base, "strength": strength, "best_strength": best, "demonstrated": demonstrated,
               "brier_gain_per_window": mean, "gain_standard_error": se,
               "verdict": "skill demonstrated out of sample" if demonstrated else "no demonstrated skill"}
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    out = [sigmoid(b + strength * (logit(v) - b))[inverse] for v in (p, lo, hi)]
    return SkillEvidence(strength, demonstrated, summary, *out)
