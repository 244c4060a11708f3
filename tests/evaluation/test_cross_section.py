"""Cross-sectional figures against computations done by hand on a small explained panel, and a score that knows
nothing about the forward returns scoring an IC within noise of zero."""

from __future__ import annotations

import numpy as np
import pytest

from services.evaluation import cross_section as xs

DAY = 86_400_000


def small_panel():
    """Two decision times, ten coins. Scores 0..9 both times. Day 1: forward returns equal the scores (IC 1).
    Day 2: two neighbouring pairs swapped (ranks differ by 1 at four coins): Spearman 1 - 6*4/(10*99)."""
    coins = np.array([f"C{i}" for i in range(10)] * 2, dtype=object)
    ts = np.repeat([0, DAY], 10).astype(np.int64)
    score = np.tile(np.arange(10, dtype=float), 2)
    fwd = np.r_[np.arange(10, dtype=float), [0, 2, 1, 3, 4, 5, 6, 7, 9, 8]]
    return ts, coins, score, fwd


def test_rank_ic_quantile_returns_spread_and_turnover_by_hand():
    ts, coins, score, fwd = small_panel()
    d = xs.decisions(ts, score, fwd, min_coins=10)
    assert d.times.tolist() == [0, DAY]
    ic = xs.rank_ic(d, score, fwd)
    assert ic[0] == pytest.approx(1.0) and ic[1] == pytest.approx(1 - 24 / 990)
    quint = xs.quantile_returns(d, score, fwd, 5)
    # Quintile k holds coins 2k and 2k+1: day 1 means 0.5, 2.5, ...; day 2 (1, 2), (3, 4) swapped within: same sums
    # except the first two quintiles: (0+2)/2 = 1, (1+3)/2 = 2, and the last: (9+8)/2 = 8.5.
    assert quint[0].tolist() == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert quint[1].tolist() == [1.0, 2.0, 4.5, 6.5, 8.5]
    dec = xs.quantile_returns(d, score, fwd, 10)
    assert dec[1].tolist() == [0, 2, 1, 3, 4, 5, 6, 7, 9, 8]
    rep = xs.report(ts, coins, score, fwd, DAY, min_coins=10)
    assert rep["series"]["spread"] == [9.0, 8.0]  # top decile minus bottom: 9 - 0, then 8 - 0
    assert rep["top_minus_bottom"]["mean"] == pytest.approx(8.5) and rep["top_minus_bottom"]["windows"] == 2
    assert rep["ic"]["mean"] == pytest.approx((1 + 1 - 24 / 990) / 2)
    assert rep["quintile_mean_fwd"] == pytest.approx([0.75, 2.25, 4.5, 6.5, 8.5])
    # The same coin tops (C9) and bottoms (C0) both days: no turnover.
    assert rep["turnover_decile"] == {"top": 0.0, "bottom": 0.0}
    assert rep["ic_by_month"] == {"1970-01": pytest.approx(rep["ic"]["mean"])}


def test_ties_share_their_mean_rank_and_a_time_with_too_few_coins_does_not_count():
    assert xs.ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    ts = np.array([0, 0, 0, DAY, DAY], dtype=np.int64)
    d = xs.decisions(ts, np.arange(5.0), np.arange(5.0), min_coins=3)
    assert d.times.tolist() == [0]
    # A coin without a forward return (or a score) is left out of its decision time, not counted as zero.
    fwd = np.array([0.0, np.nan, 2.0, 0.0, 1.0])
    assert [g.tolist() for g in xs.decisions(ts, np.arange(5.0), fwd, min_coins=2).groups] == [[0, 2], [3, 4]]


def test_turnover_counts_the_new_members_of_the_top_and_bottom():
    coins = np.array([f"C{i}" for i in range(10)] * 2, dtype=object)
    ts = np.repeat([0, DAY], 10).astype(np.int64)
    # Day 2 reverses the ranking: the top decile's coin (C9) becomes the bottom's, and C0 the top.
    score = np.r_[np.arange(10.0), np.arange(10.0)[::-1]]
    d = xs.decisions(ts, score, np.zeros(20), min_coins=10)
    assert xs.turnover(d, coins, score, 10) == {"top": 1.0, "bottom": 1.0}
    assert xs.turnover(d, coins, score, 2) == {"top": 1.0, "bottom": 1.0}


def test_a_score_independent_of_the_forward_returns_has_an_ic_within_noise_of_zero():
    rng = np.random.default_rng(11)
    times, n = 400, 60
    ts = np.repeat(np.arange(times, dtype=np.int64) * DAY, n)
    coins = np.tile(np.array([f"C{i}" for i in range(n)], dtype=object), times)
    score = rng.normal(size=ts.size)
    fwd = rng.normal(size=ts.size) + np.repeat(rng.normal(size=times), n)  # a market move shared per day
    rep = xs.report(ts, coins, score, fwd, DAY, seed=1)
    lo, hi = rep["ic"]["interval"]
    assert lo < 0 < hi and abs(rep["ic"]["mean"]) < 0.02
    # The top-minus-bottom spread: six coins a side, unit noise: a standard error of ~0.58 / sqrt(400) = 0.029.
    assert abs(rep["top_minus_bottom"]["mean"]) < 0.1
    # A score that does know them is far from zero.
    known = xs.report(ts, coins, fwd + rng.normal(size=ts.size), fwd, DAY, seed=1)
    assert known["ic"]["interval"][0] > 0.3


def test_momentum_skips_the_last_week_and_reversal_is_minus_the_last_day_by_hand():
    # Daily closes of two coins: log close = 0.01 * day for A, 0.02 * day for B (candle k opens at k days).
    days = 60
    close = np.exp(np.column_stack([0.01 * np.arange(days), 0.02 * np.arange(days)]))
    ts = np.array([40 * DAY, 40 * DAY, 10 * DAY], dtype=np.int64)  # decisions at the close of candle 39 / 9
    coin = np.array(["A", "B", "A"], dtype=object)
    refs = xs.reference_scores(close, ["A", "B"], 0, DAY, ts, coin)
    # Momentum from candle 39-28 = 11 to 39-7 = 32: 21 days of drift; reversal: minus one day of drift.
    assert refs["momentum 4w-1w"][:2] == pytest.approx([0.21, 0.42])
    assert refs["reversal 1d"][:2] == pytest.approx([-0.01, -0.02])
    # Four weeks before the close of candle 9 is before the panel: unknown, not zero.
    assert np.isnan(refs["momentum 4w-1w"][2]) and refs["reversal 1d"][2] == pytest.approx(-0.01)


def test_a_score_that_is_the_same_for_every_coin_ranks_nothing_and_says_so():
    ts, coins, _, fwd = small_panel()
    rep = xs.report(ts, coins, np.full(20, 0.47), fwd, DAY, min_coins=10)
    assert rep == {"decision_times": 2, "constant_score_decisions": 2,
                   "note": "the score is the same for every coin at every decision time: it ranks nothing"}


def test_the_long_short_book_pays_fees_and_impact_by_hand_and_its_capacity_is_where_impact_eats_half():
    """Ten coins, two windows, the same top (C9) and bottom (C0) names both times: long +10%, short -5% each
    window, so gross 0.15. Opening: fees 5 bps a leg; impact per leg 5 + 0.02 * sqrt(1e5 / 1e6) * 1e4 = 68.25 bps on
    the whole leg. The second window changes nothing: no cost."""
    coins = np.array([f"C{i}" for i in range(10)] * 2, dtype=object)
    ts = np.repeat([0, DAY], 10).astype(np.int64)
    score = np.tile(np.arange(10.0), 2)
    fwd = np.tile(np.r_[np.log(0.95), np.zeros(8), np.log(1.10)], 2)
    adv, vol = np.full(20, 1e6), np.full(20, 0.02)
    d = xs.decisions(ts, score, fwd, min_coins=10)
    times, a = xs.long_short(d, coins, score, fwd, adv, vol, 1, xs.Costs(capital=1e5))
    assert times.tolist() == [0, DAY]
    assert a["gross"] == pytest.approx([0.15, 0.15])
    assert a["fees"] == pytest.approx([2 * 5e-4, 0.0])
    per_leg = (5 + 0.02 * np.sqrt(0.1) * 1e4) / 1e4
    assert a["impact"] == pytest.approx([2 * per_leg, 0.0])
    assert a["net"] == pytest.approx([0.15 - 1e-3 - 2 * per_leg, 0.15])
    # Capacity: mean impact (5e-4 + 0.02 sqrt(C / 1e6)) = 0.15 / 2  ->  C = 1e6 * (0.0745 / 0.02)^2.
    rep = xs.long_short_report(d, coins, score, fwd, adv, vol, DAY, 1, xs.Costs(capital=1e5))
    assert rep["capacity_per_leg"] == pytest.approx(1e6 * (0.0745 / 0.02) ** 2, rel=1e-6)
    assert rep["net"]["mean"] == pytest.approx((0.15 - 1e-3 - 2 * per_leg + 0.15) / 2)
    assert "+0 bps a day net" in rep["funding"] and rep["funding_mean"] == 0
    # Funding where the legs' rates differ: the long pays 3 bps a day, the short receives 1, held 7 days.
    costs = xs.Costs(capital=1e5, funding_long_bps_per_day=3.0, funding_short_bps_per_day=1.0)
    _, b = xs.long_short(d, coins, score, fwd, adv, vol, 1, costs, days=7)
    assert b["funding"] == pytest.approx([14e-4, 14e-4])
    assert b["net"] == pytest.approx(a["net"] - 14e-4)


def test_liquidity_is_the_average_daily_quote_volume_and_daily_volatility_of_the_window_before():
    close = np.exp(np.column_stack([0.01 * np.arange(40), np.r_[0, 0.02 * np.arange(39)]]))
    qv = np.column_stack([np.full(40, 2.0), np.arange(40.0)])
    adv, vol = xs.liquidity(close, qv, DAY, days=30)
    assert np.isnan(adv[28]).all() and adv[29].tolist() == [2.0, np.arange(30.0).mean()]
    assert vol[35, 0] == pytest.approx(0.0, abs=1e-12)  # a constant daily drift has no volatility


def test_a_decision_whose_ties_leave_a_leg_empty_opens_no_book():
    coins = np.array([f"C{i}" for i in range(10)], dtype=object)
    score = np.r_[np.zeros(9), 1.0]  # nine tied at the middle rank: no bottom decile
    d = xs.decisions(np.zeros(10, dtype=np.int64), score, np.zeros(10), min_coins=10)
    times, a = xs.long_short(d, coins, score, np.zeros(10), np.full(10, 1e6), np.full(10, 0.02), 1, xs.Costs())
    assert times.size == 0 and a["net"].size == 0
