"""As-of joins: a value reaches a decision time only once published, and only while it is not too old."""

from __future__ import annotations

import numpy as np


def join_as_of(pub_ts: np.ndarray, values: np.ndarray, at: np.ndarray, max_age_ms: int) -> np.ndarray:
    """Value published last at or before each `at`, if published within max_age; otherwise NaN."""
    i = np.searchsorted(pub_ts, at, side="right") - 1
    ok = i >= 0
    ic = np.clip(i, 0, None)
    fresh = ok & (at - pub_ts[ic] <= max_age_ms)
    return np.where(fresh, values[ic], np.nan)
