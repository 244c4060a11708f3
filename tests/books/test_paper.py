"""The paper books' arithmetic on hand-made price histories: the signals book stepped close by close is the backtest
run in one pass, to the cent, funding included; the research book's rebalances, costs and funding against a
by-hand computation; a book stepped twice at one close changes once."""

from __future__ import annotations

import numpy as np
import pytest

from services.books.paper import book_risk, new_state, step_research, step_signals
from services.evaluation.backtest import run_backtest
from services.risk.basket import Leg
from services.risk.guards import impact_bps
from services.risk.history import DAY_MS, PriceHistory
from services.risk.orders import Order
from shared.settings import Settings

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC: the first candle's open


def walk(seed: int, days: int, coins: int) -> PriceHistory:
    """Closes that move by seeded daily log returns of 3% sd, deep quote volume: a price path, not data."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, (days, coins)), axis=0))
    vol = rng.uniform(5e7, 2e8, (days, coins))
    return PriceHistory(T0 + DAY_MS * np.arange(days), [f"C{j}" for j in range(coins)], close, vol)


def orders_on(m: PriceHistory, days: list[int], seed: int) -> dict[int, list[Order]]:
    rng = np.random.default_rng(seed)
    out: dict[int, list[Order]] = {}
    for d in days:
        ts = int(m.close_ts[d])
        out[ts] = [Order(ts, str(c), 1, float(rng.uniform(0.82, 0.95)), -0.06, 0.01, 0.08, int(rng.integers(1, 8)),
                         float(rng.uniform(0.05, 0.12))) for c in rng.choice(m.coins, 3, replace=False)]
    return out


def test_the_signals_book_stepped_run_by_run_is_the_backtest_in_one_pass_to_the_cent():
    m = walk(1, 120, 8)
    settings = Settings()
    cfg = book_risk(settings, "binance-perp")
    assert cfg.funding_long_bps_per_day == 3.0  # a perpetual's book pays the basket's assumed funding
    start = 70
    orders = orders_on(m, [70, 71, 73, 76, 80, 81, 90, 95, 100, 110, 116, 118], seed=2)
    state = new_state("signals", int(m.close_ts[start]), cfg.initial_equity, "binance-perp")
    fills = []
    for i in range(start, len(m.ts)):
        ts = int(m.close_ts[i])
        # Each run sees only the prices up to its close, as the pipeline's does.
        cut = PriceHistory(m.ts[:i + 1], m.coins, m.close[:i + 1], m.quote_volume[:i + 1])
        state, moved = step_signals(state, cut, {ts: orders.get(ts, [])}, cfg, ts, f"run{i}")
        fills += moved.fills
        again, twice = step_signals(state, cut, {ts: orders.get(ts, [])}, cfg, ts, f"rerun{i}")
        assert again == state and not twice.fills and not twice.closes  # a re-run changes nothing
    flat = [o for ts in sorted(orders) for o in orders[ts]]
    res = run_backtest(m, flat, cfg, int(m.close_ts[start]), int(m.close_ts[-1]), hold_open=True)
    book = np.array([x.equity for x in state.marks])
    assert book.size == res.equity.size == len(m.ts) - start
    np.testing.assert_allclose(book, res.equity, rtol=0, atol=0.005)
    exits = [f for f in fills if f.action == "exit"]
    assert len(exits) == len(res.trades) > 5 and len(state.positions) == len(res.open) > 0
    by_key = {(t["coin"], t["decision_ts"]): t for t in res.trades}
    for f in exits:
        t = by_key[(f.coin, f.decision_ts)]
        assert f.price == t["exit_price"] and f.pnl == pytest.approx(t["pnl"], abs=0.005)
        assert f.funding == pytest.approx(t["entry_notional"] * 3e-4 * (t["exit_ts"] - t["entry_ts"]) / DAY_MS)
    assert state.funding == pytest.approx(res.metrics["funding_paid"]) and state.funding > 0


def test_the_research_book_holds_the_baskets_weights_with_costs_and_funding_by_hand():
    m = walk(3, 45, 4)
    settings = Settings()
    b = settings.risk.basket
    start = 40
    long_short = [Leg("C0", "long", 1.0, 0.5, 50_000, 0.0), Leg("C1", "short", -1.0, -0.5, 50_000, 0.0)]
    rotated = [Leg("C2", "long", 1.0, 0.5, 50_000, 0.0), Leg("C1", "short", -1.0, -0.5, 50_000, 0.0)]
    baskets = {int(m.close_ts[40]): long_short, int(m.close_ts[42]): rotated}
    state = new_state("research", int(m.close_ts[start]), 100_000.0, "binance-perp")
    state, moved = step_research(state, m, baskets, settings, int(m.close_ts[-1]), "r")
    # By hand, from the same closes and the same impact model.
    from services.risk.guards import liquidity

    a, v = liquidity(m.close, m.quote_volume, DAY_MS)
    px = m.close
    cash, units = 100_000.0, {}

    def trade(i, c, want):
        nonlocal cash
        j = int(c[1])
        du = want - units.get(c, 0.0)
        notional = abs(du) * px[i, j]
        cost = notional * (b.taker_fee_bps + impact_bps(notional, a[i, j], v[i, j], b.half_spread_bps, b.impact_k)) / 1e4
        cash -= du * px[i, j] + cost
        units[c] = want

    def fund(i):
        nonlocal cash
        for c, u in units.items():
            val = u * px[i, int(c[1])]
            cash -= val * (b.funding_long_bps_per_day if val > 0 else b.funding_short_bps_per_day) / 1e4

    def equity(i):
        return cash + sum(u * px[i, int(c[1])] for c, u in units.items())

    expected = []
    for i in range(40, 45):
        fund(i)
        eq = equity(i)
        if i == 40:
            trade(i, "C0", 0.5 * eq / px[i, 0]), trade(i, "C1", -0.5 * eq / px[i, 1])
        if i == 42:
            trade(i, "C0", 0.0), trade(i, "C1", -0.5 * eq / px[i, 1]), trade(i, "C2", 0.5 * eq / px[i, 2])
        units = {c: u for c, u in units.items() if u != 0.0}
        expected.append(equity(i))
    np.testing.assert_allclose([x.equity for x in state.marks], expected, rtol=0, atol=1e-6)
    assert [(f.ts, f.coin) for f in moved.fills] == [
        (int(m.close_ts[40]), "C0"), (int(m.close_ts[40]), "C1"),
        (int(m.close_ts[42]), "C0"), (int(m.close_ts[42]), "C1"), (int(m.close_ts[42]), "C2")]
    assert set(state.holdings) == {"C1", "C2"} and state.funding != 0.0
