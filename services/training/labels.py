"""Labels from the clean candles (never from features): the sign of a coin's forward log return over a horizon, and
whether it beat the median coin of its decision's universe."""

from __future__ import annotations

import numpy as np

from services.features.frame import FeatureFrame, Panel


def forward_log_returns(panel: Panel, frame: FeatureFrame, bars: int) -> np.ndarray:
    """log(close at t + bars) - log(close at t) for each frame row (decision time t); NaN when unobserved."""
    step = int(panel.open_ts[1] - panel.open_ts[0]) if panel.open_ts.size > 1 else 1
    if len(frame) == 0 or panel.open_ts.size == 0:
        return np.zeros(len(frame))
    col = {c: j for j, c in enumerate(panel.coins)}
    j = np.asarray([col.get(c, -1) for c in frame.coin])
    # The candle closing at decision time t opened at t - step.
    now = (frame.ts - step - panel.open_ts[0]) // step
    fut = now + bars
    close = panel.fields["close"]
    T = close.shape[0]
    inside = (j >= 0) & (now >= 0) & (fut < T)
    out = np.full(len(frame), np.nan)
    c_now = close[now[inside], j[inside]]
    c_fut = close[fut[inside], j[inside]]
    with np.errstate(divide="ignore", invalid="ignore"):
        out[inside] = np.log(c_fut / c_now)
    return np.where(np.isfinite(out), out, np.nan)


def direction_labels(fwd: np.ndarray, dead_zone: float) -> np.ndarray:
    """1 up, 0 down, NaN where unobserved or inside the dead zone (too small a move to learn from)."""
    y = np.full(fwd.shape, np.nan)
    y[fwd > dead_zone] = 1.0
    y[fwd < -dead_zone] = 0.0
    return y


def beats_labels(fwd: np.ndarray, ts: np.ndarray, member: np.ndarray, min_coins: int) -> np.ndarray:
    """1 when a member row's forward log return exceeds the median of its decision time's universe (the member rows
    of that time whose return is observed), 0 when below; NaN for a tie with the median, for rows outside the
    universe or unobserved, and for decision times with fewer than `min_coins` observed members (no cross-section
    to beat). The universe is the one the decision saw: membership is decided at its time, never by its future."""
    y = np.full(fwd.shape, np.nan)
    ok = member & np.isfinite(fwd)
    rows = np.flatnonzero(ok)
    if not rows.size:
        return y
    order = rows[np.argsort(ts[rows], kind="stable")]
    times, starts, counts = np.unique(ts[order], return_index=True, return_counts=True)
    for s, n in zip(starts, counts, strict=True):
        if n < min_coins:
            continue
        at = order[s:s + n]
        r = fwd[at]
        med = np.median(r)
        y[at] = np.where(r > med, 1.0, np.where(r < med, 0.0, np.nan))
    return y
