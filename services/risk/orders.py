"""Orders: what a consensus signal asks the risk gate (and the backtest) to enter, before any sizing."""

from __future__ import annotations

from dataclasses import dataclass

from shared.records import Signal
from shared.settings import HorizonSpec


@dataclass
class Order:
    """An order to enter `coin` at the close `ts_ms`, held `horizon_days`; quantiles are of the horizon's forward
    log return. The gate sizes it into a `guards.SizedOrder`."""

    ts_ms: int
    coin: str
    direction: int  # +1 long, -1 short
    p_up: float
    q10: float
    q50: float
    q90: float
    horizon_days: int
    # The volatility forecast of the horizon (sd of its forward log return); None when the model had none.
    vol_forecast: float | None = None

    def forecast_daily_vol(self) -> float | None:
        """The forecast as a daily sd (square-root-of-time over the holding days), what volatility targeting reads."""
        return None if self.vol_forecast is None else self.vol_forecast / self.horizon_days ** 0.5


def orders_from_signals(signals: list[Signal], horizons: dict[str, HorizonSpec]) -> list[Order]:
    """Consensus signals as orders for the risk gate and the backtest: sized and held by the shortest agreeing
    daily horizon (its probability, quantiles and decision time); signals without a daily horizon are left out."""
    out = []
    for s in signals:
        daily = [h for h in s.horizons if horizons[h].timeframe == "1d" and h in s.q]
        if not daily:
            continue
        h = min(daily, key=lambda k: horizons[k].bars)
        q10, q50, q90 = s.q[h]
        out.append(Order(int(s.decision_ts[h]), s.coin, 1 if s.direction == "up" else -1,
                         float(s.p_up[h]), float(q10), float(q50), float(q90), horizons[h].bars, s.vol.get(h)))
    return out
