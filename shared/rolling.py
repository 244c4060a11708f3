"""Causal rolling statistics on arrays (numpy only), shared by the features and the risk gate.

Every function is causal: its value at row i uses rows <= i only. A rolling statistic is NaN unless its whole
window is finite, so a window that touches a gap yields no value; nothing is ever filled. (rolling_mean_upto alone
takes a shorter window where the consecutive finite values are fewer, never one across a gap.)
"""

from __future__ import annotations

import numpy as np


def _trailing_sums(x0: np.ndarray, window: int) -> np.ndarray:
    """Sums of `window` consecutive rows ending at each row (NaN before the first full window); x0 finite."""
    T = x0.shape[0]
    c = np.empty((T + 1, *x0.shape[1:]), dtype=np.float64)
    c[0] = 0.0
    np.cumsum(x0, axis=0, out=c[1:])
    sums = np.full(x0.shape, np.nan)
    if T >= window:
        np.subtract(c[window:], c[:-window], out=sums[window - 1 :])
    return sums


def _window_sums(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing window sums along axis 0 and the count of finite values in each window."""
    valid = np.isfinite(x)
    # Zeros stand in for invalid rows only inside the running sum; callers discard every window whose
    # count is short, so no invalid row ever contributes to a returned value.
    return _trailing_sums(np.where(valid, x, 0.0), window), _trailing_sums(valid.astype(np.float64), window)


def _first_finite(x: np.ndarray) -> np.ndarray:
    """Each column's first finite value (0 where none): a causal centre that truncation never changes."""
    valid = np.isfinite(x)
    idx = np.argmax(valid, axis=0)
    first = np.take_along_axis(x, np.expand_dims(idx, 0), axis=0)[0]
    return np.where(valid.any(axis=0), first, 0.0)


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean along axis 0; NaN unless all `window` values are finite."""
    s, n = _window_sums(x, window)
    return np.where(n == window, s / window, np.nan)


def rolling_mean_upto(x: np.ndarray, window: int, min_window: int) -> np.ndarray:
    """Trailing mean along axis 0 of the last `window` values, or of fewer where the finite run ending at a row is
    shorter (a series' start, or a gap), down to `min_window`; NaN where the run is shorter than that. A window
    never reaches across a gap: it holds only consecutive finite values."""
    valid = np.isfinite(x)
    T = x.shape[0]
    idx = np.arange(T).reshape(-1, *([1] * (x.ndim - 1)))
    last_gap = np.maximum.accumulate(np.where(valid, -1, idx), axis=0)  # the last non-finite row at or before
    n = np.minimum(idx - last_gap, window)
    c = np.zeros((T + 1, *x.shape[1:]))
    np.cumsum(np.where(valid, x, 0.0), axis=0, out=c[1:])
    end = np.broadcast_to(idx + 1, x.shape)
    sums = np.take_along_axis(c, end, axis=0) - np.take_along_axis(c, end - n, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n >= min_window, sums / np.maximum(n, 1), np.nan)


def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing sample standard deviation (ddof=1) along axis 0; NaN unless the window is complete."""
    # Centre on the column mean first: the cumulative sums then stay small and the
    # sum-of-squares formula keeps its precision.
    d = x - _first_finite(x)
    s, n = _window_sums(d, window)
    q, _ = _window_sums(d * d, window)
    var = (q - s * s / window) / (window - 1)
    return np.where(n == window, np.sqrt(np.maximum(var, 0.0)), np.nan)


def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """(x - trailing mean) / trailing sample std along axis 0; NaN unless the window is complete and varies."""
    sd = rolling_std(x, window)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - rolling_mean(x, window)) / sd
    return np.where(np.isfinite(z), z, np.nan)


def rolling_beta_corr(x: np.ndarray, y: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing beta of x on y and their correlation along axis 0 (x: T x N, y: T or T x N)."""
    y = np.broadcast_to(y.reshape(-1, 1) if y.ndim == 1 else y, x.shape)
    both = np.isfinite(x) & np.isfinite(y)
    xm = np.where(both, x, 0.0)
    ym = np.where(both, y, 0.0)
    n = _trailing_sums(both.astype(np.float64), window)
    sx = _trailing_sums(xm, window)
    sy = _trailing_sums(ym, window)
    sxy = _trailing_sums(xm * ym, window)
    sxx = _trailing_sums(xm * xm, window)
    syy = _trailing_sums(ym * ym, window)
    cov = sxy - sx * sy / window
    vx = sxx - sx * sx / window
    vy = syy - sy * sy / window
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = cov / vy
        corr = cov / np.sqrt(vx * vy)
    ok = (n == window) & (vy > 0) & (vx > 0)
    return np.where(ok, beta, np.nan), np.where(ok, np.clip(corr, -1.0, 1.0), np.nan)


def log_return(close: np.ndarray, k: int) -> np.ndarray:
    """Log return over `k` rows along axis 0; NaN for the first k rows and wherever a close is missing."""
    out = np.full(close.shape, np.nan)
    if close.shape[0] > k:
        out[k:] = np.log(close[k:] / close[:-k])
    return out


def rolling_sum_complete(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing sum along axis 0; NaN unless all `window` values are finite."""
    s, n = _window_sums(x, window)
    return np.where(n == window, s, np.nan)
