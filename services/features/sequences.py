"""Sequence windows for the sequence network: the last L feature rows of the same coin, consecutive in time."""

from __future__ import annotations

import numpy as np


def sequence_index(ts: np.ndarray, coin: np.ndarray, step_ms: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (n, length), oldest first, and whether each row has a complete window.

    A window is complete only when all `length` rows of that coin at t - k*step exist: a window across
    a missing row is incomplete (excluded), never padded.
    """
    n = ts.shape[0]
    if n == 0:
        return np.zeros((0, length), dtype=np.int64), np.zeros(0, dtype=bool)
    codes = np.unique(coin, return_inverse=True)[1].astype(np.int64)
    slot = ts // step_ms
    key = codes * (int(slot.max()) + length + 1) + slot
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    idx = np.empty((n, length), dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    for k in range(length):
        target = key - (length - 1 - k)
        pos = np.clip(np.searchsorted(sorted_key, target), 0, n - 1)
        found = sorted_key[pos] == target
        ok &= found
        idx[:, k] = np.where(found, order[pos], 0)
    return idx, ok


def sequences(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(n, L, F) float32 windows from the row matrix and sequence_index positions."""
    return X[idx].astype(np.float32, copy=False)
