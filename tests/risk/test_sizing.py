"""Sizing on small hand-made inputs whose numbers are worked out in comments: Kelly, vol targeting, the edge,
Ledoit-Wolf and mean-variance shares."""

from __future__ import annotations

import numpy as np
import pytest

from services.risk.orders import Order
from services.risk.sizing import (
    expected_edge_bps,
    kelly_fraction,
    ledoit_wolf,
    mean_variance_fractions,
    vol_target_scale,
)

FRACTION, CAP = 0.25, 0.10  # a quarter Kelly, at most 10% of equity (the settings' defaults)


def test_fractional_kelly():
    # p = 0.52, gain 0.2, loss 0.2: f* = 0.52/0.2 - 0.48/0.2 = 0.2; a quarter of it is 0.05.
    assert kelly_fraction(0.52, -0.2, 0.0, 0.2, 1, FRACTION, CAP) == pytest.approx(0.05)
    # Down bet: p(down) = 0.52, gain = -q10 = 0.2, loss = q90 = 0.2.
    assert kelly_fraction(0.48, -0.2, 0.0, 0.2, -1, FRACTION, CAP) == pytest.approx(0.05)
    assert kelly_fraction(0.45, -0.2, 0.0, 0.2, 1, FRACTION, CAP) == 0.0  # no edge, no position
    assert kelly_fraction(0.6, -0.02, 0.005, 0.03, 1, FRACTION, CAP) == 0.1  # f* = 16.7: the cap binds
    assert vol_target_scale(0.04, 0.02) == 0.5 and vol_target_scale(0.01, 0.02) == 1.0


def test_expected_edge_is_symmetric_in_direction():
    # Long: 0.6 * 0.05 - 0.4 * 0.03 = 0.018 -> 180 bps; the mirrored short is the same bet.
    assert expected_edge_bps(Order(0, "A", 1, 0.6, -0.03, 0.0, 0.05, 1)) == pytest.approx(180)
    assert expected_edge_bps(Order(0, "A", -1, 0.4, -0.05, 0.0, 0.03, 1)) == pytest.approx(180)


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
