"""Purged, embargoed walk-forward splits: no training label window overlaps the fold it is scored on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fold:
    train: np.ndarray  # row positions
    test: np.ndarray
    test_start: int  # ms, first decision time scored
    test_end: int


def walk_forward(ts: np.ndarray, horizon_ms: int, n_folds: int, *, embargo_ms: int | None = None,
                 test_share: float = 0.5) -> list[Fold]:
    """Expanding-window folds over the last `test_share` of distinct decision times.

    A training row at t has a label window [t, t + horizon]. It is kept for a fold starting at s only
    if t + horizon + embargo <= s, with embargo >= horizon: its label is fully realised, and a gap of
    one more horizon separates it from anything the fold scores.
    """
    embargo = horizon_ms if embargo_ms is None else max(embargo_ms, horizon_ms)
    times = np.unique(ts)
    if times.size < 2 * n_folds:
        raise ValueError(f"{times.size} distinct times are too few for {n_folds} folds")
    first_test = int(times.size * (1 - test_share))
    edges = np.linspace(first_test, times.size, n_folds + 1).astype(int)
    folds = []
    for a, b in zip(edges[:-1], edges[1:]):
        start, end = int(times[a]), int(times[b - 1])
        test = np.flatnonzero((ts >= start) & (ts <= end))
        train = np.flatnonzero(ts + horizon_ms + embargo <= start)
        if train.size and test.size:
            folds.append(Fold(train, test, start, end))
    return folds
