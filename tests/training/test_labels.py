"""The cross-sectional label by hand: a coin beats its decision's universe when its forward return exceeds the
median of the universe's observed members at that time."""

from __future__ import annotations

import numpy as np

from services.training.labels import beats_labels


def test_beats_the_median_of_the_decisions_own_universe_by_hand():
    ts = np.array([1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3], dtype=np.int64)
    fwd = np.array([0.05, -0.02, 0.01, 0.00, 0.03, 9.9, 0.02, 0.02, -0.01, np.nan, 0.04, 0.1, 0.2, 0.3])
    member = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1], dtype=bool)
    y = beats_labels(fwd, ts, member, min_coins=3)
    # t=1: members' returns 0.05 -0.02 0.01 0.00 0.03, median 0.01 (the row at the median is a tie: no label);
    # the non-member's 9.9 neither counts towards the median nor gets a label.
    np.testing.assert_array_equal(y[:6], [1, 0, np.nan, 0, 1, np.nan])
    # t=2: observed 0.02 0.02 -0.01 0.04, median 0.02: both 0.02 rows tie; the unobserved row has no label.
    np.testing.assert_array_equal(y[6:11], [np.nan, np.nan, 0, np.nan, 1])
    np.testing.assert_array_equal(y[11:], [0, np.nan, 1])
    # Fewer observed members than min_coins: no cross-section to beat.
    assert np.isnan(beats_labels(fwd, ts, member, min_coins=4)[11:]).all()
    assert not np.isnan(beats_labels(fwd, ts, member, min_coins=4)[:5]).all()


def test_a_later_coin_changes_no_earlier_label():
    """Labels of a decision depend only on the coins of that decision: adding a coin listed later (rows only at
    later times) leaves every earlier label as it was."""
    rng = np.random.default_rng(3)
    ts = np.repeat(np.arange(20), 8)
    fwd = rng.normal(0, 0.05, ts.size)
    member = np.ones(ts.size, bool)
    before = beats_labels(fwd, ts, member, min_coins=5)
    later_ts = np.arange(10, 20)
    ts2 = np.r_[ts, later_ts]
    fwd2 = np.r_[fwd, rng.normal(0, 0.05, later_ts.size)]
    after = beats_labels(fwd2, ts2, np.ones(ts2.size, bool), min_coins=5)
    early = ts < 10
    np.testing.assert_array_equal(after[:ts.size][early], before[early])
    assert not np.array_equal(np.nan_to_num(after[:ts.size][~early], nan=-1), np.nan_to_num(before[~early], nan=-1))
