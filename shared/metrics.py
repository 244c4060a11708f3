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


def wilson_low(hits: int, n: int, z: float = 1.959964) -> float | None:
    """Lower end of the Wilson score interval for a hit rate (95% by default); None when n is 0."""
    if n == 0:
        return None
    phat = hits / n
    centre = phat + z * z / (2 * n)
    margin = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return (centre - margin) / (1 + z * z / n)
