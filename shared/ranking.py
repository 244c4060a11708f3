"""Cross-sectional rank statistics: which coins of a decision beat the others, per decision time (Spearman rank IC)
and averaged over non-overlapping horizon windows with a bootstrap interval. Training's held-out figures and the
evaluation read the same code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.metrics import horizon_windows

# A decision time ranks at least this many coins before its IC or quantiles count: with fewer, one coin's move is
# the whole figure.
MIN_COINS = 10


def ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties sharing their mean rank (Spearman's convention)."""
    order = np.argsort(v, kind="mergesort")
    r = np.empty(v.size, dtype=np.float64)
    r[order] = np.arange(v.size, dtype=np.float64)
    s = v[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends, strict=True):
        if b - a > 1:
            r[order[a:b]] = (a + b - 1) / 2
    return r


@dataclass
class Decisions:
    """The rows of each decision time (ts sorted): `groups` holds, per time, the positions of its usable rows."""

    times: np.ndarray
    groups: list[np.ndarray]


def decisions(ts: np.ndarray, score: np.ndarray, fwd: np.ndarray, min_coins: int = MIN_COINS) -> Decisions:
    """Decision times with at least `min_coins` rows whose score and forward return are both known."""
    ok = np.flatnonzero(np.isfinite(score) & np.isfinite(fwd))
    order = ok[np.argsort(ts[ok], kind="mergesort")]
    t = ts[order]
    cuts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    times, groups = [], []
    for a, b in zip(cuts, np.r_[cuts[1:], t.size], strict=True):
        if b - a >= min_coins:
            times.append(t[a])
            groups.append(order[a:b])
    return Decisions(np.asarray(times, dtype=np.int64), groups)


def rank_ic(d: Decisions, score: np.ndarray, fwd: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of score and forward return, per decision time (NaN when either is constant)."""
    out = np.full(len(d.groups), np.nan)
    for k, g in enumerate(d.groups):
        a, b = ranks(score[g]), ranks(fwd[g])
        a, b = a - a.mean(), b - b.mean()
        den = np.sqrt((a * a).sum() * (b * b).sum())
        if den > 0:
            out[k] = float((a * b).sum() / den)
    return out


def window_interval(values: np.ndarray, times: np.ndarray, horizon_ms: int, *, draws: int = 1000,
                    level: float = 0.90, seed: int = 0) -> dict:
    """The mean of a per-decision figure over non-overlapping horizon windows (each window's decisions averaged
    first: they share one price move), with a bootstrap interval that resamples whole windows."""
    ok = np.isfinite(values)
    v, t = values[ok], times[ok]
    if not v.size:
        return {"mean": None, "interval": [None, None], "windows": 0}
    _, w = np.unique(horizon_windows(t, horizon_ms), return_inverse=True)
    per = np.bincount(w, weights=v) / np.bincount(w)
    if per.size < 2:
        return {"mean": float(per.mean()), "interval": [None, None], "windows": int(per.size)}
    rng = np.random.default_rng(seed)
    k = rng.multinomial(per.size, np.full(per.size, 1.0 / per.size), size=draws) / per.size
    boot = k @ per
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return {"mean": float(per.mean()), "interval": [float(np.quantile(boot, lo)), float(np.quantile(boot, hi))],
            "windows": int(per.size), "level": level}
