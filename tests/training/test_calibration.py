"""Calibration: Venn-Abers weighted by independent outcomes, the level from the training history, no extrapolation."""

from __future__ import annotations

import numpy as np
import pytest

from services.training.calibration import (
    effective_weight,
    fit_calibrator,
    venn_abers_bounds,
)

DAY = 86_400_000


def test_effective_weight_counts_non_overlapping_windows():
    # 600 rows (10 coins x 60 days) of a 30-day horizon: decision times span 59 days, so with the last label
    # window they cover 89 days = 2.97 non-overlapping 30-day windows. Each row weighs 2.97 / 600.
    ts = np.repeat(np.arange(60) * DAY, 10)
    assert effective_weight(ts, 30 * DAY) == pytest.approx((59 + 30) / 30 / 600)
    # Daily labels over 60 days and one coin: 60 outcomes for 60 rows, weight 1 (never above 1).
    assert effective_weight(np.arange(60) * DAY, DAY) == pytest.approx(1.0)
    assert effective_weight(None, None) == 1.0


def test_venn_abers_interval_widens_with_fewer_independent_outcomes():
    # One score for every row: isotonic regression is one block. 100 calibration rows, 60 of them up, each
    # weighing w, plus the test point weighing 1: p0 = 60w / (100w + 1), p1 = (60w + 1) / (100w + 1).
    s = np.zeros(100)
    y = np.r_[np.ones(60), np.zeros(40)]
    grid = np.array([0.0])
    for w in (1.0, 0.1):
        p0, p1 = venn_abers_bounds(s, y, grid, w)
        assert p0[0] == pytest.approx(60 * w / (100 * w + 1))
        assert p1[0] == pytest.approx((60 * w + 1) / (100 * w + 1))
    # w = 1: width 1/101; w = 0.1 (ten rows per outcome): width 1/11.


def _logistic_set(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2.0 * s))).astype(float)
    return s, y


def test_level_is_moved_to_the_training_base_rate():
    s, y = _logistic_set()
    cal = fit_calibrator(s, y, 128, probe_grid=128, base_rate=0.4)
    assert np.mean(cal.transform(s)[0]) == pytest.approx(0.4, abs=2e-3)  # the step table, not the exact curve
    assert cal.selection["level"]["training_base_rate"] == 0.4
    # Bounds move with the point: the interval still contains it.
    p, lo, hi = cal.transform(s)
    assert np.all(lo <= p + 1e-12) and np.all(p <= hi + 1e-12)


def test_no_extrapolation_beyond_the_calibration_scores():
    s, y = _logistic_set()
    cal = fit_calibrator(s, y, 128, probe_grid=128)
    p = cal.transform(np.array([s.min(), s.min() - 3.0, s.max(), s.max() + 3.0]))[0]
    # Below the lowest calibration score the table holds the value at that score (Platt alone would go on
    # falling, to about sigma(2 * (min - 3)), three hundred times lower here).
    assert p[1] == pytest.approx(p[0]) and p[3] == pytest.approx(p[2])
    assert p[1] > 100 / (1 + np.exp(-2.0 * (s.min() - 3.0)))
