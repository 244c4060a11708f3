"""The volatility forecast of a horizon: how much a coin will move, as the realized variance of its log return over
the horizon.

Target: the sum of the Parkinson range variances of the horizon's bars after the decision (log of it: variance is
skewed, its log is nearly normal). Members: HAR (Corsi 2009), a linear model of the log target on the log mean
variance of the last 1, 7 and 30 bars (the frame's har_<w> features); HAR with the coin's long-run level, the same
terms and the log mean variance of up to the last 90 bars (har_long_<w>: a coin's volatility reverts to its own
level); and a pooled LightGBM regressor on every feature. Their out-of-fold forecasts (purged walk-forward folds, as
the direction stack) are combined with non-negative weights that sum to one, plus a shift (non-negative stacking,
Breiman 1996): the two HAR members are nearly collinear, and an unconstrained regression set them against each other
(weights +2.5 and -2.1) or, on ten months with two folds, scaled the log forecast by 1.73 and failed on rows it
never saw. A convex combination stays between its members' forecasts, up to the shift; the weights come from the
fold models, the shift from the final members (the mean residual of their combination on the rows they were fit on:
a fold model trained on a few months is biased in its own way, which the final fit need not share). The served
variance is exp(forecast + level), level = log of the mean of exp(residual) over the out-of-fold forecasts, their mean
taken out (the smearing estimate, Duan 1983; for a forecast without bias, the constant that makes its QLIKE least),
with no assumption on the residuals' shape. (A log-normal's s2 / 2 assumes them normal. They are not: a noisy
variance proxy skews them to the left, jumps in variance to the right; on the evaluations' test rows the s2 / 2
forecasts sat below the realized variance on average.) Held-out figures on the calibration block (which the members
never saw): QLIKE and R2 of log variance against HAR alone and the 30-bar rolling mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import re

import numpy as np

from services.features.frame import FeatureFrame, Panel
from services.features.indicators import parkinson_variance
from services.training.cv import walk_forward
from services.training.members import OPSET
from shared.errors import CstError
from shared.records import vol_forecast_key

VOL_PREFIX = "vol/"


def forward_variance(panel: Panel, frame: FeatureFrame, bars: int) -> np.ndarray:
    """Sum of the Parkinson variances of the `bars` candles after each frame row's decision time; NaN unless every
    one of them is observed and the sum is positive (no variance is made up for a missing candle)."""
    out = np.full(len(frame), np.nan)
    if len(frame) == 0 or panel.open_ts.size == 0:
        return out
    step = int(panel.open_ts[1] - panel.open_ts[0]) if panel.open_ts.size > 1 else 1
    v = parkinson_variance(panel.fields["high"], panel.fields["low"])
    T = v.shape[0]
    pad = np.zeros((1, v.shape[1]))
    csum = np.cumsum(np.vstack([pad, np.nan_to_num(v)]), axis=0)
    cnt = np.cumsum(np.vstack([pad, np.isfinite(v)]), axis=0)
    col = {c: j for j, c in enumerate(panel.coins)}
    j = np.asarray([col.get(c, -1) for c in frame.coin])
    now = (frame.ts - step - panel.open_ts[0]) // step  # the candle that closes at the decision time
    inside = (j >= 0) & (now >= 0) & (now + bars < T)
    a, b, jj = now[inside] + 1, now[inside] + 1 + bars, j[inside]
    total, seen = csum[b, jj] - csum[a, jj], cnt[b, jj] - cnt[a, jj]
    out[inside] = np.where((seen == bars) & (total > 0), total, np.nan)
    return out


def qlike(rv: np.ndarray, h: np.ndarray) -> float:
    """Mean QLIKE loss of variance forecasts h for realized variances rv (Patton 2011): rv/h - log(rv/h) - 1;
    zero for a perfect forecast, robust to noise in the realized proxy."""
    x = rv / h
    return float(np.mean(x - np.log(x) - 1.0))


def smear(residual: np.ndarray) -> float:
    """The log mean correction of a least-squares log forecast from out-of-sample residuals (log target - log
    forecast): log mean exp of the residuals less their mean. The mean is left out: it is the bias of the fold models
    (fitted on less and earlier data), which the final fit on every row does not carry; the spread around it is
    what the correction is for. Zero or above (Jensen); s2 / 2 for normal residuals."""
    from scipy.special import logsumexp

    r = np.asarray(residual, np.float64)
    r = r - r.mean()
    return float(logsumexp(r) - np.log(r.size))


def r2_log(rv: np.ndarray, log_forecast: np.ndarray) -> float:
    y = np.log(rv)
    ss = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - log_forecast) ** 2)) / ss if ss > 0 else 0.0


def har_columns(names: list[str]) -> list[int]:
    """The standard HAR terms (har_<w>)."""
    cols = [i for i, n in enumerate(names) if re.fullmatch(r"har_\d+", n)]
    if not cols:
        raise CstError("no_har_features", "the feature set has no har_* features: the volatility forecast needs them "
                                          "(features.har_windows, the price layer)")
    return cols


def long_columns(names: list[str]) -> list[int]:
    """The long-run levels (har_long_<w>); none where the feature set has none."""
    return [i for i, n in enumerate(names) if re.fullmatch(r"har_long_\d+", n)]


def rolling_log_variance(X: np.ndarray, names: list[str], bars: int) -> np.ndarray:
    """The naive forecast: the longest HAR window's mean variance per bar, times the horizon's bars (log)."""
    cols = [(int(names[i].split("_")[1]), i) for i in har_columns(names)]
    return X[:, max(cols)[1]].astype(np.float64) + np.log(bars)


class HarMember:
    """log target ~ a + b . har terms (ordinary least squares); exported as a linear model over the whole row."""

    def __init__(self, cols: list[int]):
        self.cols = cols

    def fit(self, X: np.ndarray, y: np.ndarray) -> HarMember:
        from sklearn.linear_model import LinearRegression

        self.model = LinearRegression().fit(X[:, self.cols], y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X[:, self.cols])

    def to_onnx(self, n_features: int) -> bytes:
        from skl2onnx import to_onnx
        from sklearn.linear_model import LinearRegression

        full = LinearRegression()
        full.coef_ = np.zeros(n_features)
        full.coef_[self.cols] = self.model.coef_
        full.intercept_ = float(self.model.intercept_)
        full.n_features_in_ = n_features
        return to_onnx(full, np.zeros((1, n_features), np.float32), target_opset=OPSET).SerializeToString()


class GbtVolMember:
    def __init__(self, params: dict, seed: int, threads: int):
        self.params, self.seed, self.threads = params, seed, threads

    def fit(self, X: np.ndarray, y: np.ndarray) -> GbtVolMember:
        import lightgbm as lgb

        self.model = lgb.LGBMRegressor(objective="regression", **self.params, random_state=self.seed,
                                       n_jobs=self.threads, deterministic=True, force_row_wise=True,
                                       verbose=-1).fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)

    def to_onnx(self, n_features: int) -> bytes:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        return convert_lightgbm(self.model, initial_types=[("x", FloatTensorType([None, n_features]))],
                                target_opset=OPSET, name="vol_gbt").SerializeToString()


@dataclass
class VolStack:
    har: HarMember
    gbt: GbtVolMember
    meta: object  # convex combination (a LinearRegression) of the members' log forecasts, in `members` order
    s2: float  # residual variance of the stack's out-of-fold log forecasts
    metrics: dict = field(default_factory=dict)
    served: str = "stack"  # "stack", "HAR" or "long": whichever forecast the held-out rows best
    rows: int = 0
    excluded: dict = field(default_factory=dict)
    range_seed: object = None  # shared.records.RangeSeed: held-out scores the served range starts from
    # The served forecast's sd on the fit rows that walk-forward folds scored out of sample (fold models, which
    # never saw those rows): indices into the fit rows, and the sd there.
    oof_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    oof_sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    long: HarMember | None = None  # HAR with the long-run levels, where the feature set has them
    # Per forecast ("stack", "har", "long"), the log mean correction: its variance is exp(log forecast + level).
    levels: dict = field(default_factory=dict)

    @property
    def members(self) -> dict[str, HarMember | GbtVolMember]:
        """The members in the meta-learner's order: har, long (where present), gbt."""
        return {"har": self.har, **({"long": self.long} if self.long is not None else {}), "gbt": self.gbt}

    def log_forecast(self, X: np.ndarray) -> np.ndarray:
        return self.meta.predict(np.column_stack([m.predict(X) for m in self.members.values()]))

    def variance(self, X: np.ndarray) -> np.ndarray:
        return np.exp(self.log_forecast(X) + self.levels["stack"])

    def sigma(self, X: np.ndarray) -> np.ndarray:
        """The served forecast's sd (as predict serves it): the stack's, or one linear member's mean-corrected."""
        if self.served == "stack":
            return np.sqrt(self.variance(X))
        key = vol_forecast_key(self.served)
        return np.sqrt(np.exp(self.members[key].predict(X) + self.levels[key]))

    def blobs(self, n_features: int) -> dict[str, bytes]:
        from skl2onnx import to_onnx

        members = self.members
        return {**{f"{VOL_PREFIX}{name}.onnx": m.to_onnx(n_features) for name, m in members.items()},
                f"{VOL_PREFIX}meta.onnx": to_onnx(self.meta, np.zeros((1, len(members)), np.float32),
                                                  target_opset=OPSET).SerializeToString()}


def convex_combination(Z: np.ndarray, y: np.ndarray):
    """The least-squares fit of y on the columns of Z with weights >= 0 that sum to one, plus an intercept, as a
    LinearRegression (so it predicts and exports to ONNX as one). Exact: the best equality-constrained fit over every
    subset of columns whose weights come out non-negative (a handful of members: 2^k - 1 subsets)."""
    from itertools import combinations

    from sklearn.linear_model import LinearRegression

    Zc, yc = Z - Z.mean(axis=0), y - y.mean()
    k = Z.shape[1]
    best, best_sse = None, np.inf
    for size in range(1, k + 1):
        for cols in combinations(range(k), size):
            A = Zc[:, cols]
            # Minimise |yc - A w|^2 subject to sum(w) = 1 (KKT system; lstsq takes collinear members in its stride).
            kkt = np.block([[2 * A.T @ A, np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            w = np.linalg.lstsq(kkt, np.concatenate([2 * A.T @ yc, [1.0]]), rcond=None)[0][:size]
            if (w < -1e-12).any():
                continue
            full = np.zeros(k)
            full[list(cols)] = np.clip(w, 0.0, None)
            full /= full.sum()
            sse = float(np.sum((yc - Zc @ full) ** 2))
            if best is None or sse < best_sse * (1 - 1e-12):
                best, best_sse = full, sse
    meta = LinearRegression()
    meta.coef_, meta.intercept_ = best, float(y.mean() - Z.mean(axis=0) @ best)
    meta.n_features_in_, meta.rank_, meta.singular_ = k, k, np.ones(k)
    return meta


def _held_out(rv: np.ndarray, forecasts: dict[str, tuple[np.ndarray, float]]) -> dict:
    """QLIKE (of the mean-corrected variance, exp(log forecast + level)) and R2 of log variance per forecast on the
    same rows."""
    return {name: {"qlike": qlike(rv, np.exp(f + level)), "r2_log": r2_log(rv, f)}
            for name, (f, level) in forecasts.items()}


def fit_vol(X: np.ndarray, rv: np.ndarray, ts: np.ndarray, names: list[str], bars: int, horizon_ms: int,
            fit_rows: np.ndarray, cal_rows: np.ndarray, folds: int, params: dict, seed: int, threads: int) -> VolStack:
    """Members on the fit rows (out-of-fold forecasts from purged walk-forward folds feed the meta-learner), scored
    on the calibration rows they never saw."""
    y = np.log(rv)
    cols, long = har_columns(names), long_columns(names)
    linear = {"har": cols, **({"long": cols + long} if long else {})}
    Xf, yf = X[fit_rows], y[fit_rows]
    try:
        cv = walk_forward(ts[fit_rows], horizon_ms, folds)
    except ValueError as exc:
        raise CstError("too_few_rows", f"volatility: the {fit_rows.size} rows before the calibration block cannot "
                                       f"fill {folds} walk-forward folds ({exc})") from None
    oof_rows = np.concatenate([f.test for f in cv])
    oof = np.full((fit_rows.size, len(linear) + 1), np.nan)
    for f in cv:
        for k, c in enumerate(linear.values()):
            oof[f.test, k] = HarMember(c).fit(Xf[f.train], yf[f.train]).predict(Xf[f.test])
        oof[f.test, -1] = GbtVolMember(params, seed, threads).fit(Xf[f.train], yf[f.train]).predict(Xf[f.test])
    # The weights come from the fold models' out-of-fold forecasts; the shift from the final members, which are
    # the ones served: the mean of their combination's residual on the rows they were fit on, as HAR alone is served
    # without the folds' bias. (A fold trained on a few months is biased in its own way: the wide 30d folds' shift
    # was -1.14, and with it the stack failed on rows it never saw; EVALUATION item 10.)
    meta = convex_combination(oof[oof_rows], yf[oof_rows])
    final = {name: HarMember(c).fit(Xf, yf) for name, c in linear.items()}
    final["gbt"] = GbtVolMember(params, seed, threads).fit(Xf, yf)  # in the meta-learner's order: har, long, gbt
    fold_shift = float(meta.intercept_)
    meta.intercept_ = float(np.mean(yf - np.column_stack([m.predict(Xf) for m in final.values()]) @ meta.coef_))
    yo = yf[oof_rows]
    log_oof = {"stack": meta.predict(oof[oof_rows]), "har": oof[oof_rows, 0],
               **({"long": oof[oof_rows, 1]} if long else {}),
               "roll": rolling_log_variance(Xf[oof_rows], names, bars)}
    levels = {k: smear(yo - f) for k, f in log_oof.items()}
    s2 = float(np.var(yo - log_oof["stack"]))
    stack = VolStack(final["har"], final["gbt"], meta, s2, rows=int(fit_rows.size), long=final.get("long"),
                     levels={k: v for k, v in levels.items() if k != "roll"})
    Xc, rvc = X[cal_rows], rv[cal_rows]
    stack.metrics = {
        "held_out_rows": int(cal_rows.size),
        "meta_weights": {**{name: float(w) for name, w in zip(stack.members, meta.coef_)},
                         "intercept": float(meta.intercept_), "out_of_fold_intercept": fold_shift},
        "log_residual_variance": s2,
        **{f"{k}_log_residual_variance": float(np.var(yo - log_oof[k])) for k in ("har", "long") if k in log_oof},
        "held_out": _held_out(rvc, {"stack": (stack.log_forecast(Xc), levels["stack"]),
                                    "HAR": (stack.har.predict(Xc), levels["har"]),
                                    **({"HAR with the long-run level": (stack.long.predict(Xc), levels["long"])}
                                       if stack.long is not None else {}),
                                    "rolling 30-bar mean": (rolling_log_variance(Xc, names, bars), levels["roll"])}),
    }
    # What is served earns its place on rows no member saw: the stack, unless a linear member alone (HAR, or HAR
    # with the long-run level) forecasts them better (lowest QLIKE; a tie keeps the stack).
    held = stack.metrics["held_out"]
    candidates = {"stack": "stack", "HAR": "HAR", **({"long": "HAR with the long-run level"} if long else {})}
    stack.served = min(candidates, key=lambda k: held[candidates[k]]["qlike"])
    key = vol_forecast_key(stack.served)
    stack.oof_rows, stack.oof_sigma = oof_rows, np.sqrt(np.exp(log_oof[key] + levels[key]))
    return stack


__all__ = ["VOL_PREFIX", "VolStack", "convex_combination", "fit_vol", "forward_variance", "qlike", "r2_log", "smear"]
