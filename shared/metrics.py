"""Probability scores used by training, the main job and evaluation alike."""

from __future__ import annotations

import math

import numpy as np


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds, with p clipped to float32's usable range (ONNX members return float32 probabilities)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(p) - np.asarray(y)) ** 2))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of predicted probability: mean prediction, observed frequency and row count (NaN where
    a bin is empty)."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    which = np.clip(np.digitize(p, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=bins) / counts
        freq = np.bincount(which, weights=y, minlength=bins) / counts
    return mean_p, freq, counts.astype(int)


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins of predicted probability."""
    mean_p, freq, counts = reliability(p, y, bins)
    full = counts > 0
    return float(np.sum(counts[full] / counts.sum() * np.abs(mean_p[full] - freq[full]))) if full.any() else 0.0


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The Wilson score interval for a hit rate (95% by default); None when n is 0."""
    if n == 0:
        return None
    phat = hits / n
    centre = phat + z * z / (2 * n)
    margin = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return (centre - margin) / (1 + z * z / n), (centre + margin) / (1 + z * z / n)


def wilson_low(hits: int, n: int, z: float = 1.959964) -> float | None:
    """Lower end of the Wilson score interval for a hit rate (95% by default); None when n is 0."""
    w = wilson(hits, n, z)
    return None if w is None else w[0]


def horizon_windows(ts: np.ndarray, horizon_ms: int) -> np.ndarray:
    """Each decision time's non-overlapping horizon window (0, 1, ...): rows in one window share most of their
    label's price move, so a window, not a row, is one independent outcome."""
    ts = np.asarray(ts, dtype=np.int64)
    if not ts.size:
        return np.zeros(0, dtype=np.int64)
    return (ts - ts.min()) // max(int(horizon_ms), 1)


def brier_gain_by_window(p: np.ndarray, ref: np.ndarray, y: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Per horizon window: the mean Brier improvement of `p` over the reference forecast `ref` (positive = better)."""
    _, w = np.unique(windows, return_inverse=True)
    gain = (np.asarray(ref) - y) ** 2 - (np.asarray(p) - y) ** 2
    return np.bincount(w, weights=gain) / np.bincount(w)


def block_bootstrap(p: np.ndarray, ref: np.ndarray, y: np.ndarray, windows: np.ndarray, *, draws: int = 1000,
                    level: float = 0.90, bins: int = 10, seed: int = 0) -> dict:
    """Intervals for Brier skill (against `ref`) and ECE that resample whole horizon windows with replacement.

    Rows inside a window are one outcome seen many times; resampling rows would shrink the interval by the square
    root of the overlap. Each draw reweights the windows by multinomial counts, so one pass of matrix products
    scores all draws."""
    p, ref, y = (np.asarray(a, dtype=np.float64) for a in (p, ref, y))
    _, w = np.unique(windows, return_inverse=True)
    n_w = int(w.max()) + 1 if w.size else 0
    if n_w < 2:
        return {"windows": n_w, "brier_skill": [None, None], "ece": [None, None], "draws": 0, "level": level}
    per = lambda v: np.bincount(w, weights=v, minlength=n_w)
    se_p, se_r = per((p - y) ** 2), per((ref - y) ** 2)
    which = np.clip(np.digitize(p, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    cell = w * bins + which
    cnt = np.bincount(cell, minlength=n_w * bins).reshape(n_w, bins)
    sp = np.bincount(cell, weights=p, minlength=n_w * bins).reshape(n_w, bins)
    sy = np.bincount(cell, weights=y, minlength=n_w * bins).reshape(n_w, bins)
    rng = np.random.default_rng(seed)
    k = rng.multinomial(n_w, np.full(n_w, 1.0 / n_w), size=draws).astype(np.float64)  # (draws, windows)
    with np.errstate(invalid="ignore", divide="ignore"):
        skill = 1.0 - (k @ se_p) / (k @ se_r)
        c, a, b = k @ cnt, k @ sp, k @ sy
        ece_d = np.nansum(np.abs(a - b), axis=1) / c.sum(axis=1)  # sum over bins of n_b |mean p - freq| / n
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    finite = skill[np.isfinite(skill)]
    return {"windows": n_w, "draws": draws, "level": level,
            "brier_skill": [float(np.quantile(finite, lo)), float(np.quantile(finite, hi))] if finite.size else
            [None, None],
            "ece": [float(np.quantile(ece_d, lo)), float(np.quantile(ece_d, hi))]}
