"""The walk-forward backtest on tiny hand-made price histories whose numbers are worked out in comments, and on real
closes; the live gate on the same histories."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from pydantic import ValidationError

from services.evaluation.backtest import (
    buy_and_hold,
    drawdown,
    equal_weight,
    performance,
    run_backtest,
)
from services.risk.gate import live_gate
from services.risk.history import DAY_MS, PriceHistory
from services.risk.orders import Order
from shared.errors import CstError
from shared.settings import RiskSettings

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC: the first candle's open
ADV = 1e9  # quote volume per day: deep enough that every order passes the 1% participation cap
# Log returns +1%, -1%, +1%, -1%: sample std = 0.01 * sqrt(4/3) = 0.011547 < the 2% target, so the vol scale is 1.
CALM = [100.0, 100 * math.e ** 0.01, 100.0, 100 * math.e ** 0.01, 100.0]
CFG = {"vol_window": 4, "adv_window": 4}
CALM_VOL = 0.01 * math.sqrt(4 / 3)


def history(closes: dict[str, list[float]], qv: float | dict[str, list[float]] = ADV) -> PriceHistory:
    coins = list(closes)
    close = np.array([closes[c] for c in coins], dtype=float).T
    vol = np.full(close.shape, qv) if not isinstance(qv, dict) else np.array([qv[c] for c in coins], dtype=float).T
    return PriceHistory(T0 + DAY_MS * np.arange(len(close)), coins, close, vol)


def prices(log_returns: np.ndarray) -> list[float]:
    """Closes starting at 100 that move by the given daily log returns."""
    return list(100 * np.exp(np.concatenate([[0.0], np.cumsum(log_returns)])))


def order(m: PriceHistory, day: int, coin: str, direction: int = 1, horizon: int = 2, p: float = 0.6,
          q: float = 0.05) -> Order:
    # p = 0.6 of the order's direction with symmetric quantiles +-5%: f* = 0.6/0.05 - 0.4/0.05 = 4, a quarter
    # of it is 1.0, so the 10% max_position binds; gross edge = 1e4 * (0.6*0.05 - 0.4*0.05) = 100 bps.
    p_up = p if direction == 1 else 1 - p
    return Order(int(m.close_ts[day]), coin, direction, p_up, -q, 0.0, q, horizon)


def impact_bps(notional: float, adv: float, daily_vol: float) -> float:
    """risk.impact_model written out: 5 bps half spread + vol * sqrt(participation), in bps."""
    return 5.0 + daily_vol * math.sqrt(notional / adv) * 1e4


def test_one_long_held_two_days_matches_a_hand_computed_equity_curve():
    # Day 4 closes at 100 (decision); then +1%/day: 101 at day 5, 102.01 at day 6 (the exit, 2 days later).
    m = history({"A": CALM + [101.0, 102.01]})
    res = run_backtest(m, [order(m, 4, "A")], RiskSettings(**CFG))
    # Size: 100,000 * min(10%, Kelly 1.0) * vol scale 1 = 10,000 -> 100 coins at 100.
    # Entry cost: 10 bps fee + (5 + 0.011547 * sqrt(1e4 / 1e9) * 1e4 = 5.3651 bps impact) on 10,000.
    c_in = 10_000 * (10 + impact_bps(10_000, ADV, CALM_VOL)) / 1e4
    assert c_in == pytest.approx(15.3651, abs=1e-4)
    # Exit: 100 coins * 102.01 = 10,201, priced with the vol of the 4 returns known at day 6.
    exit_vol = float(np.std([0.01, -0.01, math.log(1.01), math.log(1.01)], ddof=1))
    c_out = 10_201 * (10 + impact_bps(10_201, ADV, exit_vol)) / 1e4
    expected = [100_000] * 4 + [100_000 - c_in, 100_100 - c_in, 100_201 - c_in - c_out]
    np.testing.assert_allclose(res.equity, expected, rtol=0, atol=1e-7)
    (t,) = res.trades
    assert t["entry_ts"] == m.close_ts[4] and t["exit_ts"] == m.close_ts[6] and t["exit_reason"] == "horizon"
    assert t["entry_notional"] == pytest.approx(10_000) and t["qty"] == pytest.approx(100)
    assert t["cost_model"] == "sqrt_impact" and t["pnl"] == pytest.approx(201 - c_in - c_out)
    assert res.metrics["costs_paid"] == pytest.approx(c_in + c_out) and res.metrics["hit_rate"] == 1.0
    # Turnover: (10,000 + 10,201) traded / mean equity, over 6 days = 6/365 of a year.
    assert res.metrics["turnover"] == pytest.approx(20_201 / np.mean(expected) / (6 / 365))
    # The cost guard saw the edge net of the rest of the round trip: 100 - 2*10 - exit impact at 10,000.
    cost = next(d for d in res.decisions if d.guard == "cost")
    assert cost.allow and "sqrt_impact" in cost.reason
    assert res.ts[0] == T0 + DAY_MS  # marks are stamped at the close times


def test_volatility_targets_and_kelly_below_the_cap_size_the_order():
    # Returns +-3%: sample std = 0.03 * sqrt(4/3) = 0.034641, scale = 0.02 / 0.034641 = sqrt(3)/3 = 0.57735.
    # p = 0.52 with +-20% quantiles: f* = 0.52/0.2 - 0.48/0.2 = 0.2, a quarter is 0.05 (below the 10% cap).
    zig = [100.0, 100 * math.e ** 0.03, 100.0, 100 * math.e ** 0.03, 100.0, 100.0, 100.0]
    m = history({"A": zig})
    res = run_backtest(m, [order(m, 4, "A", p=0.52, q=0.2)], RiskSettings(**CFG))
    assert res.trades[0]["entry_notional"] == pytest.approx(100_000 * 0.05 * math.sqrt(3) / 3)


def test_a_short_is_skipped_on_spot_and_profits_from_a_fall_when_allowed():
    m = history({"A": CALM + [99.0, 98.01]})
    spot = run_backtest(m, [order(m, 4, "A", direction=-1)], RiskSettings(**CFG))
    assert spot.skipped == {"short_not_allowed": 1} and not spot.trades
    assert np.all(spot.equity == 100_000) and spot.decisions[0].reason.startswith("short_not_allowed")
    res = run_backtest(m, [order(m, 4, "A", direction=-1)], RiskSettings(allow_short=True, **CFG))
    # Short 100 coins at 100, bought back at 98.01: +199 before costs.
    c_in = 10_000 * (10 + impact_bps(10_000, ADV, CALM_VOL)) / 1e4
    exit_vol = float(np.std([0.01, -0.01, math.log(0.99), math.log(0.99)], ddof=1))
    c_out = 9_801 * (10 + impact_bps(9_801, ADV, exit_vol)) / 1e4
    assert res.equity[5] == pytest.approx(100_100 - c_in, abs=1e-7)  # marked: short 100 coins, 100 -> 99
    assert res.equity[-1] == pytest.approx(100_199 - c_in - c_out, abs=1e-7)


def test_unknown_volume_is_never_liquid():
    m = history({"A": CALM + [101.0, 102.01]}, qv={"A": [np.nan] * 7})
    res = run_backtest(m, [order(m, 4, "A")], RiskSettings(**CFG))
    assert res.skipped == {"guard_rejected": 1} and not res.trades
    liq = next(d for d in res.decisions if d.guard == "liquidity")
    assert not liq.allow and "volume unavailable" in liq.reason
    # Without guards the entry cost cannot be priced either: skipped, never assumed cheap.
    res = run_backtest(m, [order(m, 4, "A")], RiskSettings(guards=False, **CFG))
    assert res.skipped == {"cost_unknown": 1} and np.all(res.equity == 100_000)
    # One missing day inside the 4-day volume window is enough: the average is unknown.
    m = history({"A": CALM + [101.0, 102.01]}, qv={"A": [ADV, ADV, np.nan, ADV, ADV, ADV, ADV]})
    assert run_backtest(m, [order(m, 4, "A")], RiskSettings(**CFG)).skipped == {"guard_rejected": 1}


def test_guards_off_charges_the_same_costs():
    m = history({"A": CALM + [101.0, 102.01]})
    on = run_backtest(m, [order(m, 4, "A")], RiskSettings(**CFG))
    off = run_backtest(m, [order(m, 4, "A")], RiskSettings(guards=False, **CFG))
    np.testing.assert_array_equal(on.equity, off.equity)
    assert [d.reason for d in off.decisions] == ["guards disabled"]


def test_drawdown_guard_halts_entries_after_a_crash():
    # A: long 10,000 at 100, crashes to 40 and is sold there on day 6: -6,000 - costs, about 6% of equity.
    m = history({"A": CALM + [40.0] * 5, "B": CALM + CALM})
    cfg = RiskSettings(guard_params={"drawdown": {"max_drawdown": 0.05}}, **CFG)
    res = run_backtest(m, [order(m, 4, "A"), order(m, 7, "B")], cfg)
    assert [t["coin"] for t in res.trades] == ["A"] and res.trades[0]["pnl"] < -6_000
    assert res.skipped == {"guard_rejected": 1}
    dd = next(d for d in res.decisions if d.guard == "drawdown" and d.coin == "B")
    assert not dd.allow and "halted" in dd.reason
    # The same B order is taken when the limit is the default 20%.
    assert [t["coin"] for t in run_backtest(m, [order(m, 4, "A"), order(m, 7, "B")],
                                            RiskSettings(**CFG)).trades] == ["A", "B"]


def test_stop_loss_exits_at_the_first_close_beyond_it():
    m = history({"A": CALM + [90.0, 70.0, 72.0, 75.0]})
    res = run_backtest(m, [order(m, 4, "A", horizon=4)], RiskSettings(stop_loss=0.2, **CFG))
    (t,) = res.trades  # -10% at day 5 is inside the stop; -30% at day 6 is beyond it
    assert t["exit_reason"] == "stop_loss" and t["exit_price"] == 70.0 and t["exit_ts"] == m.close_ts[6]


def test_a_missing_exit_close_delays_the_exit_and_the_data_end_closes_at_the_last_close():
    nan = float("nan")
    m = history({"A": CALM + [101.0, nan, 103.0, 104.0]})  # no candle on the exit day (6)
    (t,) = run_backtest(m, [order(m, 4, "A")], RiskSettings(**CFG)).trades
    assert t["exit_reason"] == "delayed_exit" and t["exit_price"] == 103.0 and t["exit_ts"] == m.close_ts[7]
    m = history({"A": CALM + [101.0, nan, nan]})  # the coin stops trading: sold at its last close, 101
    res = run_backtest(m, [order(m, 4, "A")], RiskSettings(**CFG))
    (t,) = res.trades
    assert t["exit_reason"] == "end_of_data" and t["exit_price"] == 101.0
    assert res.equity[-1] == pytest.approx(100_000 + t["pnl"])  # everything is back in cash


def test_an_open_coin_is_not_doubled_and_late_or_misstamped_orders_are_counted():
    m = history({"A": CALM + [101.0, 102.01, 103.0]})
    hourly = Order(int(m.close_ts[4]) + 3_600_000, "A", 1, 0.6, -0.05, 0.0, 0.05, 2)  # not a daily close
    # Day 4's OPEN time is day 3's close: an order stamped so is decided a day earlier, where the 4-return
    # volatility window is not full yet (3 returns), so it cannot be sized.
    day3 = Order(int(m.ts[4]), "A", 1, 0.6, -0.05, 0.0, 0.05, 2)
    res = run_backtest(m, [order(m, 4, "A"), order(m, 5, "A"), order(m, 7, "A"), hourly, day3,
                           order(m, 4, "ZZZ")], RiskSettings(**CFG))
    assert res.skipped == {"already_open": 1, "beyond_data": 1, "off_grid": 1, "unknown_coin": 1, "no_history": 1}
    assert len(res.trades) == 1 and res.metrics["orders"] == 6


def test_correlation_guard_compares_returns_over_the_same_days():
    # B's returns are A's plus noise (correlation ~0.9). A is open when B's order comes one day later; the guard
    # must see A's returns up to B's decision day too, else it compares returns of different days.
    rng = np.random.default_rng(7)
    ra = rng.normal(0, 0.006, 40)
    rb = ra + rng.normal(0, 0.003, 40)
    m = history({"A": prices(ra), "B": prices(rb)})
    cfg = RiskSettings(vol_window=4, adv_window=4, corr_window=20)
    res = run_backtest(m, [order(m, 38, "A"), order(m, 39, "B", horizon=1)], cfg)
    # Day 39's window holds the log returns of days 20..39, i.e. r[19:39].
    c = np.corrcoef(ra[19:39], rb[19:39])[0, 1]
    assert 0.8 < c < 1
    corr = next(d for d in res.decisions if d.guard == "correlation" and d.coin == "B")
    assert corr.scale == pytest.approx((1 - c) / 0.2)
    b = next(t for t in res.trades if t["coin"] == "B")
    assert b["entry_notional"] == pytest.approx(corr.notional * (1 - c) / 0.2)


def test_opposite_bet_on_an_anti_correlated_coin_is_the_same_bet():
    # B moves almost exactly against A (correlation near -1). Short B while long A is the same bet twice: the
    # direction-adjusted correlation is near +1, so the guard cuts the order to (1 - c') / 0.2 of its size or
    # rejects it; it never enlarges it (the scale of an unadjusted correlation would have been ~10).
    ra = np.tile([0.01, -0.01], 20)
    m = history({"A": prices(ra), "B": prices(-ra + np.tile([0.0, 0.0, 0.001, 0.0], 10))})
    res = run_backtest(m, [order(m, 36, "A"), order(m, 37, "B", direction=-1)],
                       RiskSettings(allow_short=True, **CFG))
    corr = next(d for d in res.decisions if d.guard == "correlation" and d.coin == "B")
    assert (not corr.allow) or corr.scale < 0.1
    b = [t for t in res.trades if t["coin"] == "B"]
    assert not b or b[0]["entry_notional"] < 0.1 * corr.notional


def test_zero_orders_leave_a_flat_curve():
    m = history({"A": CALM + [101.0, 102.01]})
    res = run_backtest(m, [], RiskSettings(**CFG))
    assert np.all(res.equity == 100_000) and res.trades == [] and res.skipped == {}
    assert res.metrics["trades"] == 0 and res.metrics["hit_rate"] is None and res.metrics["sharpe"] is None
    assert res.metrics["total_return"] == 0 and res.metrics["max_drawdown"] == 0 and res.metrics["costs_paid"] == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), t=st.integers(8, 13), shock=st.floats(0.3, 3.0))
def test_prices_after_the_decision_do_not_change_the_entry(seed, t, shock):
    rng = np.random.default_rng(seed)
    n = 18
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, (n, 2)), axis=0))
    qv = rng.uniform(2e8, 2e9, (n, 2))
    coins = ["A", "B"]
    m = PriceHistory(T0 + DAY_MS * np.arange(n), coins, close, qv)
    # Everything after day t changes: prices jump by `shock` and wander, volumes are redrawn.
    later_close, later_qv = close.copy(), qv.copy()
    later_close[t + 1:] *= shock * np.exp(rng.normal(0, 0.2, (n - t - 1, 2)))
    later_qv[t + 1:] = rng.uniform(1e6, 1e10, (n - t - 1, 2))
    later = PriceHistory(m.ts, coins, later_close, later_qv)
    sigs = [order(m, t - 2, "B", horizon=4), order(m, t, "A"), order(m, t, "B")]
    cfg = RiskSettings(vol_window=4, adv_window=4, corr_window=8)
    a, b = run_backtest(m, sigs, cfg), run_backtest(later, sigs, cfg)
    np.testing.assert_array_equal(a.equity[:t + 1], b.equity[:t + 1])
    until_t = int(m.close_ts[t])
    assert [d for d in a.decisions if d.ts <= until_t] == [d for d in b.decisions if d.ts <= until_t]

    def entered(r):
        return sorted((x["coin"], x["entry_ts"], x["entry_notional"], x["entry_cost_bps"])
                      for x in r.trades if x["entry_ts"] <= until_t)

    assert entered(a) == entered(b) and entered(a)  # B's order at t finds B already open (entered at t - 2)


def test_performance_by_hand():
    # 100 -> 110 -> 99 -> 121 on consecutive days: returns +10%, -10%, +22.22%.
    ts = T0 + DAY_MS * np.arange(4)
    p = performance(np.array([100.0, 110.0, 99.0, 121.0]), ts, 365)
    r = np.array([0.1, -0.1, 121 / 99 - 1])
    assert p["total_return"] == pytest.approx(0.21)
    assert p["max_drawdown"] == pytest.approx(0.1)  # 110 -> 99
    assert p["cagr"] == pytest.approx(1.21 ** (365 / 3) - 1)  # 3 days = 3/365 of a year
    # Mean 0.074074; sample std 0.162668 (squared deviations 0.000672 + 0.030302 + 0.021948, over 2);
    # downside deviation sqrt(0.1^2 / 3) = 0.057735.
    assert p["sharpe"] == pytest.approx(0.0740741 / 0.1626681 * math.sqrt(365), rel=1e-5)
    assert p["sortino"] == pytest.approx(r.mean() / math.sqrt(0.01 / 3) * math.sqrt(365))
    assert p["ann_vol"] == pytest.approx(0.1626681 * math.sqrt(365), rel=1e-5)
    assert p["calmar"] == pytest.approx(p["cagr"] / 0.1)
    np.testing.assert_allclose(drawdown([100, 110, 99, 121]), [0, 0, 0.1, 0])
    flat = performance(np.full(5, 7.0), T0 + DAY_MS * np.arange(5), 365)
    assert flat["sharpe"] is None and flat["sortino"] is None and flat["calmar"] is None and flat["cagr"] == 0


def test_buy_and_hold_and_equal_weight_by_hand():
    m = history({"A": [10.0, 11.0, 12.1, 11.0], "B": [20.0, 20.0, 10.0, 20.0]})
    start, end = int(m.close_ts[0]), int(m.close_ts[-1])
    np.testing.assert_allclose(buy_and_hold(m, "A", start, end), [1, 1.1, 1.21, 1.1])
    np.testing.assert_allclose(buy_and_hold(m, "B", int(m.close_ts[1]), end), [1, 0.5, 1])
    np.testing.assert_allclose(buy_and_hold(m, "A", start, end, fee_bps=10), np.array([1, 1.1, 1.21, 1.1]) * 0.999)
    # Daily rebalance: each day earns the mean of the two returns.
    # (+10%, 0) -> 1.05; (+10%, -50%) -> 1.05 * 0.8 = 0.84; (-9.09%, +100%) -> 0.84 * 1.454545 = 1.221818.
    np.testing.assert_allclose(equal_weight(m, start, end), [1, 1.05, 0.84, 0.84 * (1 + (11 / 12.1 - 1 + 1) / 2)])
    # Never rebalanced within the window: half in each from day 0. Day 2: 0.5*1.21 + 0.5*0.5 = 0.855.
    np.testing.assert_allclose(equal_weight(m, start, end, rebalance_days=10), [1, 1.05, 0.855, 1.05])
    # A coin listed later joins at the next rebalance; before that the other coin holds everything.
    late = history({"A": [10.0, 11.0, 12.1, 11.0], "B": [np.nan, np.nan, 10.0, 20.0]})
    np.testing.assert_allclose(equal_weight(late, start, end), [1, 1.1, 1.21, 1.21 * (1 + (11 / 12.1 - 1 + 1) / 2)])
    with pytest.raises(CstError, match="no_price"):
        buy_and_hold(late, "B", start, end)


def _yahoo(path: Path, since: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    with path.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["Date"] >= since]
    return [r["Date"] for r in rows], np.array([float(r["Close"]) for r in rows]), np.array(
        [float(r["Volume"]) for r in rows])


@pytest.mark.realdata
def test_mechanics_on_real_closes(shared_data):
    dates, btc, btc_v = _yahoo(shared_data / "ohlcv/1d/BTC-USD.csv", "2023-07-01")
    dates_e, eth, eth_v = _yahoo(shared_data / "ohlcv/1d/ETH-USD.csv", "2023-07-01")
    assert dates == dates_e
    ts = np.array([np.datetime64(d, "ms").astype(np.int64) for d in dates])
    # Yahoo publishes crypto volume already in USD, i.e. in quote currency.
    m = PriceHistory(ts, ["BTC", "ETH"], np.column_stack([btc, eth]), np.column_stack([btc_v, eth_v]))
    hold = buy_and_hold(m, "BTC", int(m.close_ts[0]), int(m.close_ts[-1]))
    assert hold[-1] == pytest.approx(btc[-1] / btc[0])
    # Mechanics only (no claim about forecast quality): a long every 10 days, alternating coins.
    sigs = [order(m, i, ("BTC", "ETH")[(i // 10) % 2], horizon=5) for i in range(40, len(ts) - 6, 10)]
    res = run_backtest(m, sigs, RiskSettings())
    assert res.metrics["trades"] == len(sigs) and np.all(np.isfinite(res.equity))
    # Billions of daily volume: a 10,000 order's impact is the 5 bps half spread plus a hair.
    assert all(5 < t["entry_cost_bps"] < 5.5 and t["cost_model"] == "sqrt_impact" for t in res.trades)
    assert 0 < res.metrics["exposure"] <= 0.1


def test_window_limits_curve_and_metrics_but_not_the_history_read():
    # 20 calm days, then one 2-day trade at day 10. Reporting only days 10..19 keeps the same trade (its sizing
    # read days 6..10) while exposure is averaged over 10 closes, not 20: exactly twice the unwindowed figure.
    closes = (CALM * 4)[:20]
    m = history({"A": closes})
    sig = [order(m, 10, "A")]
    full = run_backtest(m, sig, RiskSettings(**CFG))
    part = run_backtest(m, sig, RiskSettings(**CFG), int(m.close_ts[10]), int(m.close_ts[19]))
    assert part.ts.size == 10 and part.ts[0] == m.close_ts[10]
    assert part.trades == full.trades
    assert part.metrics["exposure"] == pytest.approx(2 * full.metrics["exposure"])
    with pytest.raises(CstError):
        run_backtest(m, sig, RiskSettings(**CFG), int(m.close_ts[-1]) + DAY_MS, None)


def test_live_gate_sizes_today_and_judges_later_orders_against_earlier_ones():
    # Today is the last close: a backtest would refuse (no exit close), the live gate must not.
    rng = np.random.default_rng(11)
    ra = rng.normal(0, 0.006, 40)
    rb = ra + rng.normal(0, 0.003, 40)  # B tracks A (correlation ~0.9)
    rc = rng.normal(0, 0.006, 40)  # C is independent of both
    m = history({"A": prices(ra), "B": prices(rb), "C": prices(rc)},
               {"A": [ADV] * 41, "B": [ADV] * 41, "C": [float("nan")] * 41})
    today = len(m.ts) - 1
    sigs = [order(m, today, "A"), order(m, today, "B"), order(m, today, "C")]
    assert run_backtest(m, sigs, RiskSettings(vol_window=4, adv_window=4, corr_window=20)).skipped["beyond_data"] == 3
    a, b, c = live_gate(m, sigs, RiskSettings(vol_window=4, adv_window=4, corr_window=20))
    # A: Kelly caps at 10% of equity; the vol scale is 1 (daily vol < 2%).
    assert a.allow and a.size_fraction == pytest.approx(0.10)
    # B is judged against A, entered just before it: scaled down by the correlation guard, and sized on the
    # equity left after A's entry fee and impact.
    corr = next(d for d in b.decisions if d.guard == "correlation")
    equity_after_a = 1e5 - a.notional * a.cost_bps / 1e4
    assert b.allow and corr.scale < 1
    assert b.notional == pytest.approx(equity_after_a * 0.10 * corr.scale, rel=1e-9)
    # C has no volume: the liquidity guard refuses it, with its reason.
    assert not c.allow and c.size_fraction == 0.0
    assert any(d.guard == "liquidity" and "volume unavailable" in d.reason for d in c.decisions)


def test_risk_step_gate_attaches_the_decision_to_each_signal():
    from services.features.frame import Panel
    from services.risk.steps import gate_signals
    from shared.settings import Settings

    closes = (CALM * 8)[:40]
    panel = Panel("1d", T0 + DAY_MS * np.arange(40), ["A", "B"],
                  {"close": np.array([closes, closes]).T, "volume": np.full((40, 2), ADV),
                   "quote_volume": np.full((40, 2), ADV)}, {"B": {"volume"}})
    now = int(T0 + DAY_MS * 40)  # the last candle's close
    from types import SimpleNamespace

    pred = {"direction": 1, "confidence": 0.9, "actionable": True, "p_up": 0.6, "q10": -0.05, "q50": 0.0,
            "q90": 0.05, "decision_ts": now}
    preds = [SimpleNamespace(**pred, coin=c, horizon=h) for c in ("A", "B") for h in ("24h", "7d")]
    from services.predict.signals import consensus

    signals = consensus(preds, 2)
    cfg = Settings(_env_file=None)
    cfg.risk.vol_window, cfg.risk.adv_window = 4, 4
    gate_signals(cfg, panel, signals)
    by = {s.coin: s for s in signals}
    assert by["A"].tradable and by["A"].risk.size_fraction == pytest.approx(0.10)
    # B's volume was declared unavailable by the quality gate: not tradable, never assumed liquid.
    assert not by["B"].tradable and by["B"].risk.refusal


def test_mean_variance_allocation_sizes_the_days_orders_together():
    # Two independent coins (daily vol 0.4% and 1.2%), both signalled on the same day with the same edge:
    # inv(Sigma) mu weighs each by mu / variance, so A gets about (1.2 / 0.4)^2 = 9 times B's weight (the
    # sample covariance over 30 days and the Ledoit-Wolf shrinkage move that ratio somewhat); scaled to a
    # 0.3% daily book vol. With Kelly both hit the same 10% cap.
    rng = np.random.default_rng(4)
    calm, wild = rng.normal(0, 0.004, 40), rng.normal(0, 0.012, 40)
    m = history({"A": prices(calm), "B": prices(wild)})
    sigs = [order(m, 36, "A"), order(m, 36, "B")]
    base = {"vol_window": 4, "adv_window": 4, "corr_window": 30, "guards": False}
    mv = run_backtest(m, sigs, RiskSettings(allocation="mean_variance", max_position=1.0, target_daily_vol=0.003,
                                            **base))
    kelly = run_backtest(m, sigs, RiskSettings(**base))
    size = {t["coin"]: t["entry_notional"] for t in mv.trades}
    assert size["A"] > 4 * size["B"] > 0
    # (the second 10% is of the equity left after the first entry's fee and impact, ~1.5 bps of it lower)
    assert [t["entry_notional"] for t in kelly.trades] == pytest.approx([10_000.0, 10_000.0], rel=1e-3)
    with pytest.raises(ValidationError):
        RiskSettings(allocation="markowitz", **base)
    with pytest.raises(CstError, match="markowitz"):  # model_copy(update=...) skips validation; the book does not
        run_backtest(m, sigs, RiskSettings(**base).model_copy(update={"allocation": "markowitz"}))
