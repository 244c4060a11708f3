"""Sizing: fractional Kelly per order, volatility targeting, and mean-variance shares of equity over a day's orders.

Numpy only (the Ledoit-Wolf covariance is written out), so the live gate needs nothing a serving package lacks.
"""

from __future__ import annotations

import numpy as np

from services.risk.orders import Order


def _bet(p_up: float, q10: float, q90: float, direction: int) -> tuple[float, float, float]:
    """(probability of the order's direction, typical gain, typical loss): the gain from the favourable
    quantile, the loss from the other (long: gain q90, loss -q10; short: gain -q10, loss q90)."""
    if direction == 1:
        return p_up, q90, -q10
    return 1.0 - p_up, -q10, q90


def expected_edge_bps(order: Order) -> float:
    """Gross edge of the bet in bps: p * gain - (1 - p) * loss, gain and loss as `kelly_fraction` takes them."""
    p, gain, loss = _bet(order.p_up, order.q10, order.q90, order.direction)
    return 1e4 * (p * gain - (1 - p) * loss)


def kelly_fraction(p_up: float, q10: float, q50: float, q90: float, direction: int, fraction: float,
                   cap: float) -> float:
    """Fractional Kelly for a binary-ish bet: win size from the favourable quantile, loss from the other.

    f* = p/a - (1-p)/b with b the typical gain and a the typical loss (both > 0); scaled by `fraction`,
    capped, and 0 when the edge is not positive.
    """
    p, gain, loss = _bet(p_up, q10, q90, direction)
    if gain <= 0 or loss <= 0:
        return 0.0
    f = p / loss - (1 - p) / gain
    return float(min(cap, max(0.0, fraction * f)))


def ledoit_wolf(returns: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit & Wolf (2004) shrinkage of the sample covariance of `returns` (n days x p assets) towards
    m * I, m the mean variance. Returns (covariance, shrinkage in [0, 1]). Same estimator as
    sklearn.covariance.LedoitWolf (tested against it), in numpy so serving needs nothing else."""
    X = np.asarray(returns, dtype=np.float64)
    n, p = X.shape
    X = X - X.mean(axis=0)
    S = X.T @ X / n
    m = np.trace(S) / p
    d2 = float(np.sum((S - m * np.eye(p)) ** 2))
    if d2 == 0.0:
        return S, 0.0
    X2 = X ** 2
    b2_bar = float(np.sum(X2.T @ X2) / n - np.sum(S ** 2)) / n
    shrink = min(b2_bar, d2) / d2
    return shrink * m * np.eye(p) + (1 - shrink) * S, float(shrink)


def mean_variance_fractions(expected: np.ndarray, returns: np.ndarray, target_daily_vol: float,
                            cap: float, long_only: bool = True) -> np.ndarray:
    """Shares of equity per asset: w ~ inv(Sigma) mu with Sigma the Ledoit-Wolf covariance of daily returns,
    scaled so the book's daily volatility is `target_daily_vol`, then (long only) negatives dropped and each
    weight capped at `cap`. `expected` are expected daily returns; zero or negative edge gets nothing."""
    mu = np.asarray(expected, dtype=np.float64)
    if mu.size == 0 or not np.any(mu > 0):
        return np.zeros(mu.size)
    cov, _ = ledoit_wolf(returns)
    w = np.linalg.solve(cov, mu)
    if long_only:
        w = np.maximum(w, 0.0)
    vol = float(np.sqrt(w @ cov @ w))
    if vol <= 0:
        return np.zeros(mu.size)
    return np.minimum(w * (target_daily_vol / vol), cap)


def vol_target_scale(daily_vol: float, target_daily_vol: float) -> float:
    return float(min(1.0, target_daily_vol / daily_vol)) if daily_vol > 0 else 0.0
