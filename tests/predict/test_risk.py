"""Risk guards and sizing on small hand-made books and series whose numbers are worked out in comments."""

from __future__ import annotations

import numpy as np
import pytest

from services.predict.risk import (
    GUARDS,
    Book,
    CorrelationGuard,
    CostGuard,
    DrawdownGuard,
    LiquidityGuard,
    Order,
    apply_guards,
    impact_model,
    kelly_fraction,
    ledoit_wolf,
    mean_variance_fractions,
    vol_target_scale,
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


def test_fractional_kelly():
    # p = 0.52, gain 0.2, loss 0.2: f* = 0.52/0.2 - 0.48/0.2 = 0.2; a quarter of it is 0.05.
    assert kelly_fraction(0.52, -0.2, 0.0, 0.2, 1) == pytest.approx(0.05)
    # Down bet: p(down) = 0.52, gain = -q10 = 0.2, loss = q90 = 0.2.
    assert kelly_fraction(0.48, -0.2, 0.0, 0.2, -1) == pytest.approx(0.05)
    assert kelly_fraction(0.45, -0.2, 0.0, 0.2, 1) == 0.0  # no edge, no position
    assert kelly_fraction(0.6, -0.02, 0.005, 0.03, 1) == 0.1  # f* = 16.7: the cap binds
    assert vol_target_scale(0.04, 0.02) == 0.5 and vol_target_scale(0.01, 0.02) == 1.0


def test_liquidity_guard():
    g, book = LiquidityGuard(min_adv_quote=1e6, max_participation=0.01), Book(100.0, 100.0)
    assert not g.check(Order("X", 1, 1e4, 50, adv_quote=None), book).allow  # unknown volume is not liquidity
    assert not g.check(Order("X", 1, 1e4, 50, adv_quote=5e5), book).allow
    d = g.check(Order("X", 1, 2e5, 50, adv_quote=1e7), book)  # 1% of 1e7 = 1e5: half the order
    assert d.allow and d.scale == pytest.approx(0.5)


def test_correlation_guard():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.03, 90)
    twin = r + rng.normal(0, 0.003, 90)  # correlation ~0.995
    other = rng.normal(0, 0.03, 90)
    book = Book(100.0, 100.0, {"BTC": Order("BTC", 1, 10.0, 50, returns=r)})
    g = CorrelationGuard(threshold=0.8, cluster_cap=2)
    d = g.check(Order("ETH", 1, 10.0, 50, returns=twin), book)
    c = np.corrcoef(twin, r)[0, 1]
    assert d.allow and d.scale == pytest.approx((1 - c) / 0.2)
    assert g.check(Order("XRP", 1, 10.0, 50, returns=other), book).scale == 1.0
    # The opposite direction hedges rather than concentrates.
    assert g.check(Order("ETH", -1, 10.0, 50, returns=twin), book).scale == 1.0
    book.positions["ETH"] = Order("ETH", 1, 10.0, 50, returns=twin)
    assert not g.check(Order("LTC", 1, 10.0, 50, returns=r + rng.normal(0, 0.003, 90)), book).allow


def test_drawdown_guard_halts_and_recovers():
    g = DrawdownGuard(max_drawdown=0.2, resume_at=0.9)
    book = Book(equity=75.0, peak_equity=100.0)  # 25% down
    assert not g.check(Order("X", 1, 1.0, 50), book).allow and book.halted
    book.equity = 85.0  # recovered to 85% < 90%: still halted
    assert not g.check(Order("X", 1, 1.0, 50), book).allow
    book.equity = 91.0
    assert g.check(Order("X", 1, 1.0, 50), book).allow and not book.halted


def test_cost_guard_and_the_chain():
    book = Book(100.0, 100.0)
    cheap = Order("X", 1, 250.0, 80.0, adv_quote=1e7, book_side=ASKS)
    dear = Order("X", 1, 250.0, 30.0, adv_quote=1e7, book_side=ASKS)  # 59.8 bps cost > 30 bps edge
    assert CostGuard().check(cheap, book).allow
    assert "59.8 bps" in CostGuard().check(dear, book).reason and not CostGuard().check(dear, book).allow
    assert not CostGuard().check(Order("X", 1, 250.0, 80.0), book).allow  # nothing to price it with
    scale, decisions = apply_guards(cheap, book, [GUARDS[n]() for n in ("liquidity", "correlation", "drawdown", "cost")])
    assert scale == 1.0 and [d.guard for d in decisions] == ["liquidity", "correlation", "drawdown", "cost"]
    scale, decisions = apply_guards(dear, book, [LiquidityGuard(), CostGuard()])
    assert scale == 0.0 and not decisions[-1].allow


def test_correlation_guard_adjusts_for_direction_and_refuses_the_unknown():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 0.01, 60)
    book = Book(1e5, 1e5, {"A": Order("A", 1, 1e4, 50, returns=a)})
    g = CorrelationGuard(threshold=0.8, cluster_cap=2)
    # Short a coin that moves exactly against A while long A: direction-adjusted correlation +1, the same bet.
    same = g.check(Order("B", -1, 1e4, 50, returns=-a), book)
    assert not same.allow and "same bet" in same.reason
    # Long that anti-correlated coin instead: a hedge, allowed at full size (the scale never exceeds 1).
    hedge = g.check(Order("B", 1, 1e4, 50, returns=-a), book)
    assert hedge.allow and hedge.scale == 1.0
    # A constant series (a stablecoin) has no defined correlation: refused, not waved through.
    flat = g.check(Order("C", 1, 1e4, 50, returns=np.zeros(60)), book)
    assert not flat.allow and "unknown" in flat.reason


def test_cost_guard_refuses_unknown_volume():
    # NaN volume used to read as truthy and yield "cost nan bps", which passed every comparison.
    d = CostGuard().check(Order("A", 1, 1e4, 500, adv_quote=float("nan"), daily_vol=0.03), Book(1e5, 1e5))
    assert not d.allow and "unknown" in d.reason
    with pytest.raises(ValueError):
        impact_model(1e4, 0.0, 0.03)


def test_ledoit_wolf_matches_sklearn():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(5)
    X = rng.normal(0, 0.02, (60, 5)) + rng.normal(0, 0.02, (60, 1))  # five coins sharing a market factor
    cov, shrink = ledoit_wolf(X)
    ref = LedoitWolf().fit(X)
    assert np.allclose(cov, ref.covariance_, rtol=1e-10, atol=1e-14)
    assert shrink == pytest.approx(ref.shrinkage_, rel=1e-10)


def test_mean_variance_fractions_by_hand():
    # Two uncorrelated assets with equal variance: inv(Sigma) mu is proportional to mu. With mu = (2, 1) bps a
    # day the weights are 2:1; scaled to a 2% daily book volatility: 0.02 * |w| = 0.02, so w = (2, 1) / sqrt(5)
    # = (0.894, 0.447); a 50% cap then binds on the first only.
    rng = np.random.default_rng(9)
    z = rng.normal(0, 1, (400, 2))
    X = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T * 0.02  # exact cov 4e-4 I
    w = mean_variance_fractions(np.array([2e-4, 1e-4]), X, 0.02, cap=1.0)
    assert w == pytest.approx(np.array([2, 1]) / np.sqrt(5), rel=1e-6)
    assert np.sqrt(w @ (4e-4 * np.eye(2)) @ w) == pytest.approx(0.02, rel=1e-6)
    assert mean_variance_fractions(np.array([2e-4, 1e-4]), X, 0.02, cap=0.5) == pytest.approx([0.5, 1 / np.sqrt(5)])
    # No positive edge: nothing to allocate; a negative edge is dropped in a long-only book.
    assert not mean_variance_fractions(np.array([-1e-4, 0.0]), X, 0.02, cap=0.5).any()
    assert mean_variance_fractions(np.array([2e-4, -1e-4]), X, 0.02, cap=0.5)[1] == 0.0
