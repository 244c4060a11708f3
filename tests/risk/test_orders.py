"""Consensus signals become orders held by their shortest agreeing daily horizon; hourly-only signals none."""

from __future__ import annotations

from services.risk.orders import Order, orders_from_signals
from shared.records import Signal
from shared.settings import Settings

T = 1_719_792_000_000  # 2024-07-01 00:00 UTC


def test_the_shortest_daily_horizon_sizes_and_holds_the_order():
    horizons = Settings(_env_file=None).training.horizons
    signals = [
        # 24h, 7d and 1h agree: 24h is the shortest DAILY horizon (1h has no daily close to hold it by).
        {"coin": "BTC", "direction": "up", "horizons": ["1h", "24h", "7d"],
         "p_up": {"1h": 0.9, "24h": 0.7, "7d": 0.8},
         "q": {"1h": [-0.01, 0.0, 0.01], "24h": [-0.02, 0.01, 0.03], "7d": [-0.05, 0.02, 0.08]},
         "decision_ts": {"1h": T + 3_600_000, "24h": T, "7d": T}},
        # A down signal on 7d and 30d: held 7 days, direction -1.
        {"coin": "ETH", "direction": "down", "horizons": ["7d", "30d"], "p_up": {"7d": 0.2, "30d": 0.3},
         "q": {"7d": [-0.1, -0.03, 0.02], "30d": [-0.2, -0.05, 0.04]}, "decision_ts": {"7d": T, "30d": T}},
        # Only the hourly horizon: no daily close to size or hold it by, so no order.
        {"coin": "XRP", "direction": "up", "horizons": ["1h"], "p_up": {"1h": 0.9}, "q": {"1h": [-0.01, 0.0, 0.01]},
         "decision_ts": {"1h": T}},
    ]
    signals = [Signal(min_confidence=0.9, **s) for s in signals]
    assert orders_from_signals(signals, horizons) == [
        Order(T, "BTC", 1, 0.7, -0.02, 0.01, 0.03, 1),
        Order(T, "ETH", -1, 0.2, -0.1, -0.03, 0.02, 7),
    ]
