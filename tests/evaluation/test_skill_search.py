"""The skill search's cross-sectional target on a small explained cross-section."""

from __future__ import annotations

import numpy as np

from services.evaluation.skill_search import _against_market


class _Frame:
    def __init__(self, ts):
        self.ts = np.asarray(ts)


def test_against_the_market_beats_the_median_coin_of_the_same_time():
    # Time 0: returns 0.1, 0.0, -0.2 -> median 0.0: up, none (on the median), down.
    # Time 1: two coins only: too few for a cross-section, no label.
    fwd = np.array([0.1, 0.0, -0.2, 0.3, -0.3])
    y = _against_market(fwd, _Frame([0, 0, 0, 1, 1]))
    assert y[0] == 1 and np.isnan(y[1]) and y[2] == 0
    assert np.isnan(y[3:]).all()
