"""References every evaluation scores beside the stack: climatology and one plain gradient-boosting classifier.

The plain reference is what a careful analyst would try first: one LightGBM classifier on the same feature rows,
fitted on the same member rows as the stack, isotonic calibration on the same final block, no stacking, no
sequence network, no search. If the stack cannot beat it, the stack does not earn its complexity. The naive range is
a rolling-volatility interval of the same nominal level as the served 80% range.
"""

from __future__ import annotations

import numpy as np

from services.features.frame import Panel
from services.training.ensemble import calibration_split
from services.training.members import Dataset
from shared.settings import Settings


def plain_gbt(seed: int, threads: int):
    """One LightGBM classifier with the gbt member's starting shape and no search."""
    import lightgbm as lgb

    return lgb.LGBMClassifier(n_estimators=150, num_leaves=15, learning_rate=0.05, min_child_samples=100,
                              colsample_bytree=0.7, reg_lambda=1.0, random_state=seed, n_jobs=threads,
                              deterministic=True, verbose=-1)


class PlainReference:
    def __init__(self, seed: int = 0, threads: int = 2):
        self.seed, self.threads = seed, threads

    def fit(self, ds: Dataset, horizon_ms: int, share: float) -> PlainReference:
        from sklearn.isotonic import IsotonicRegression

        fit, cal = calibration_split(ds.ts, horizon_ms, share)
        self.model = plain_gbt(self.seed, self.threads)
        self.model.fit(ds.X[fit], ds.y[fit].astype(int))
        self.iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
            self.model.predict_proba(ds.X[cal])[:, 1], ds.y[cal])
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        """The classifier's own probability before calibration: it ranks rows without the isotonic steps' ties."""
        return self.model.predict_proba(X)[:, 1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.iso.predict(self.score(X))


def naive_ranges(panel: Panel, coin: np.ndarray, ts: np.ndarray, bars: int, window: int, alpha: float) -> np.ndarray:
    """(n, 2) forward log-return ranges of nominal level 1 - alpha from each coin's rolling volatility: +-z * sd of
    the one-bar log returns of the last `window` bars (known at the decision time) * sqrt(bars); NaN where fewer than
    half of those returns exist."""
    from scipy.stats import norm

    close = panel.fields["close"]
    r = np.full_like(close, np.nan)
    r[1:] = np.diff(np.log(close), axis=0)
    # Rolling sample sd over the last `window` bars per coin, from the returns present (missing candles stay
    # missing); at least half the window must hold returns.
    pad = np.zeros((1, r.shape[1]))
    csum, csq = (np.cumsum(np.vstack([pad, np.nan_to_num(v)]), axis=0) for v in (r, r * r))
    cnt = np.cumsum(np.vstack([pad, np.isfinite(r)]), axis=0)
    n = cnt[window:] - cnt[:-window]
    s1, s2 = csum[window:] - csum[:-window], csq[window:] - csq[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (s2 - s1 * s1 / n) / (n - 1)
    sd = np.full_like(close, np.nan)
    sd[window - 1:] = np.where(n >= max(2, window // 2), np.sqrt(np.maximum(var, 0.0)), np.nan)
    step = int(panel.open_ts[1] - panel.open_ts[0]) if panel.open_ts.size > 1 else 1
    row = (ts - step - panel.open_ts[0]) // step  # the candle that closes at the decision time
    col = np.searchsorted(np.asarray(panel.coins), coin)
    half = norm.ppf(1 - alpha / 2) * sd[row, col] * np.sqrt(bars)
    return np.column_stack([-half, half])


def reference_for(settings: Settings) -> PlainReference:
    return PlainReference(settings.training.seed, settings.training.threads)
