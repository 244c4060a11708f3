"""Risk guards and execution cost on small hand-made books and series whose numbers are worked out in comments."""

from __future__ import annotations

import numpy as np
import pytest

from services.risk.guards import (
    GUARDS,
    Book,
    CorrelationGuard,
    CostGuard,
    DrawdownGuard,
    LiquidityGuard,
    SizedOrder,
    apply_guards,
    impact_model,
    walk_book,
)

ASKS = [[100.0, 1.0], [101.0, 2.0], [103.0, 5.0]]


def test_book_walk_matches_a_hand_computed_vwap():
    # 250 quote: 100 at 100 (1 coin), then 150 at 101 (150/101 = 1.485149 coins).
    # VWAP = 250 / 2.485149 = 100.597610; slippage vs the 100 touch = 59.761 bps.
    fill = walk_book(ASKS, 250.0, "buy")
    assert fill.vwap == pytest.approx(250 / (1 + 150 / 101), rel=1e-12)
    assert fill.slippage_bps == pytest.approx(59.7610, abs=1e-3) and fill.complete
    # More than the visible 100 + 202 + 515 = 817 quote cannot fill.
    assert not walk_book(ASKS, 1000.0, "buy").complete
    # A sell walks the bids downwards: VWAP below the touch, slippage still positive.
    bids = [[99.0, 1.0], [98.0, 10.0]]
    sell = walk_book(bids, 197.0, "sell")  # 99 at 99, 98 at 98 -> 2 coins, VWAP 98.5
    assert sell.vwap == pytest.approx(98.5) and sell.slippage_bps == pytest.approx(50.505, abs=1e-3)


def test_impact_model_is_labelled_and_square_root():
    # participation 1e5 / 1e8 = 0.001; sqrt = 0.031623; 0.04 * 0.031623 * 1e4 = 12.649 bps + 5 bps half spread.
    fill = impact_model(1e5, 1e8, 0.04)
    assert fill.model == "sqrt_impact" and fill.slippage_bps == pytest.approx(17.649, abs=1e-3)


def test_liquidity_guard():
    g, book = LiquidityGuard(min_adv_quote=1e6, max_participation=0.01), Book(100.0, 100.0)
    assert not g.check(SizedOrder("X", 1, 1e4, 50, adv_quote=None), book).allow  # unknown volume is not liquidity
    assert not g.check(SizedOrder("X", 1, 1e4, 50, adv_quote=5e5), book).allow
    d = g.check(SizedOrder("X", 1, 2e5, 50, adv_quote=1e7), book)  # 1% of 1e7 = 1e5: half the order
    assert d.allow and d.scale == pytest.approx(0.5)


def test_correlation_guard():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.03, 90)
    twin = r + rng.normal(0, 0.003, 90)  # correlation ~0.995
    other = rng.normal(0, 0.03, 90)
    book = Book(100.0, 100.0, {"BTC": SizedOrder("BTC", 1, 10.0, 50, returns=r)})
    g = CorrelationGuard(threshold=0.8, cluster_cap=2)
    d = g.check(SizedOrder("ETH", 1, 10.0, 50, returns=twin), book)
    c = np.corrcoef(twin, r)[0, 1]
    assert d.allow and d.scale == pytest.approx((1 - c) / 0.2)
    assert g.check(SizedOrder("XRP", 1, 10.0, 50, returns=other), book).scale == 1.0
    # The opposite direction hedges rather than concentrates.
    assert g.check(SizedOrder("ETH", -1, 10.0, 50, returns=twin), book).scale == 1.0
    book.positions["ETH"] = SizedOrder("ETH", 1, 10.0, 50, returns=twin)
    assert not g.check(SizedOrder("LTC", 1, 10.0, 50, returns=r + rng.normal(0, 0.003, 90)), book).allow


def test_drawdown_guard_halts_and_recovers():
    g = DrawdownGuard(max_drawdown=0.2, resume_at=0.9)
    book = Book(equity=75.0, peak_equity=100.0)  # 25% down
    assert not g.check(SizedOrder("X", 1, 1.0, 50), book).allow and book.halted
    book.equity = 85.0  # recovered to 85% < 90%: still halted
    assert not g.check(SizedOrder("X", 1, 1.0, 50), book).allow
    book.equity = 91.0
    assert g.check(SizedOrder("X", 1, 1.0, 50), book).allow and not book.halted


def test_cost_guard_and_the_chain():
    book = Book(100.0, 100.0)
    cheap = SizedOrder("X", 1, 250.0, 80.0, adv_quote=1e7, book_side=ASKS)
    dear = SizedOrder("X", 1, 250.0, 30.0, adv_quote=1e7, book_side=ASKS)  # 59.8 bps cost > 30 bps edge
    assert CostGuard().check(cheap, book).allow
    assert "59.8 bps" in CostGuard().check(dear, book).reason and not CostGuard().check(dear, book).allow
    assert not CostGuard().check(SizedOrder("X", 1, 250.0, 80.0), book).allow  # nothing to price it with
    scale, decisions = apply_guards(cheap, book, [GUARDS[n]() for n in ("liquidity", "correlation", "drawdown", "cost")])
    assert scale == 1.0 and [d.guard for d in decisions] == ["liquidity", "correlation", "drawdown", "cost"]
    scale, decisions = apply_guards(dear, book, [LiquidityGuard(), CostGuard()])
    assert scale == 0.0 and not decisions[-1].allow


def test_correlation_guard_adjusts_for_direction_and_refuses_the_unknown():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 0.01, 60)
    book = Book(1e5, 1e5, {"A": SizedOrder("A", 1, 1e4, 50, returns=a)})
    g = CorrelationGuard(threshold=0.8, cluster_cap=2)
    # Short a coin that moves exactly against A while long A: direction-adjusted correlation +1, the same bet.
    same = g.check(SizedOrder("B", -1, 1e4, 50, returns=-a), book)
    assert not same.allow and "same bet" in same.reason
    # Long that anti-correlated coin instead: a hedge, allowed at full size (the scale never exceeds 1).
    hedge = g.check(SizedOrder("B", 1, 1e4, 50, returns=-a), book)
    assert hedge.allow and hedge.scale == 1.0
    # A constant series (a stablecoin) has no defined correlation: refused, not waved through.
    flat = g.check(SizedOrder("C", 1, 1e4, 50, returns=np.zeros(60)), book)
    assert not flat.allow and "unknown" in flat.reason


def test_cost_guard_refuses_unknown_volume():
    # NaN volume used to read as truthy and yield "cost nan bps", which passed every comparison.
    d = CostGuard().check(SizedOrder("A", 1, 1e4, 500, adv_quote=float("nan"), daily_vol=0.03), Book(1e5, 1e5))
    assert not d.allow and "unknown" in d.reason
    with pytest.raises(ValueError):
        impact_model(1e4, 0.0, 0.03)
