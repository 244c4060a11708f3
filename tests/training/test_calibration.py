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


DAY = 86_400_000


def _daily_panel_set(signal: float, days: int = 600, coins: int = 8, seed: int = 3):
    """`coins` rows per day for `days` days of a 1-day horizon: every day is its own independent window. Scores are
    standard normal; P(up) = sigmoid(signal * score), so signal 0 makes labels independent of the scores."""
    rng = np.random.default_rng(seed)
    ts = np.repeat(np.arange(days) * DAY, coins)
    s = rng.normal(0, 1, ts.size)
    y = (rng.random(ts.size) < 1 / (1 + np.exp(-signal * s))).astype(float)
    return s, y, ts


def test_scores_without_information_serve_the_base_rate():
    from services.training.calibration import skill_evidence

    s, y, ts = _daily_panel_set(signal=0.0)
    ev = skill_evidence(s, y, ts, DAY, float(y.mean()), blocks=5, grid=64, z=1.645, min_windows=10)
    assert not ev.demonstrated and ev.strength == 0.0
    assert ev.summary["verdict"] == "no demonstrated skill"
    # At strength 0 every held-out probability is the base rate, and so is every bound.
    assert np.allclose(ev.p, y.mean()) and np.allclose(ev.low, y.mean()) and np.allclose(ev.high, y.mean())


def test_informative_scores_earn_their_skill():
    from services.training.calibration import skill_evidence

    s, y, ts = _daily_panel_set(signal=1.5)
    ev = skill_evidence(s, y, ts, DAY, float(y.mean()), blocks=5, grid=64, z=1.645, min_windows=10)
    assert ev.demonstrated and ev.strength > 0.7
    assert ev.summary["brier_gain_per_window"] > 1.645 * ev.summary["gain_standard_error"]
    assert ev.summary["windows"] == 600


def test_few_independent_windows_demonstrate_nothing():
    from services.training.calibration import skill_evidence

    # The same informative scores, but on a 200-day horizon: 600 days hold 3 independent windows.
    s, y, ts = _daily_panel_set(signal=1.5)
    ev = skill_evidence(s, y, ts, 200 * DAY, float(y.mean()), blocks=3, grid=64, z=1.645, min_windows=10)
    assert ev.summary["windows"] == 3 and not ev.demonstrated and ev.strength == 0.0


def test_shrinking_the_tables_moves_them_toward_the_base_rate_in_logit_space():
    from services.training.calibration import shrink_tables

    s, y = _logistic_set()
    for strength, check in ((1.0, "same"), (0.5, "half"), (0.0, "base")):
        cal = fit_calibrator(s, y, 64, probe_grid=64)
        before = cal.point.copy()
        shrink_tables(cal, 0.4, strength)
        b = np.log(0.4 / 0.6)
        z = np.log(before / (1 - before))
        if check == "same":
            assert np.allclose(cal.point, before)
        elif check == "half":
            assert np.allclose(np.log(cal.point / (1 - cal.point)), b + 0.5 * (z - b))
        else:
            assert np.allclose(cal.point, 0.4) and np.allclose(cal.low, 0.4) and np.allclose(cal.high, 0.4)
        assert np.all(cal.low <= cal.point + 1e-12) and np.all(cal.point <= cal.high + 1e-12)
