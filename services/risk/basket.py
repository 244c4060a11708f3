"""The market-neutral basket: long the coins the cross-sectional score ranks highest, short the lowest, equal weight
within each leg, each name held only where the market can take it (liquidity) and no name above the position cap."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.risk.guards import impact_bps


@dataclass
class Leg:
    coin: str
    side: str  # "long" or "short"
    score: float
    weight: float  # signed share of equity
    notional: float
    impact_bps: float


@dataclass
class Built:
    long: list[Leg] = field(default_factory=list)
    short: list[Leg] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    ranked: int = 0
    per_leg: int = 0
    capped: bool = False  # the position cap kept a leg below its share of the gross


def build(coins: list[str], score: np.ndarray, adv_quote: np.ndarray, daily_vol: np.ndarray, *, quantile: float,
          gross: float, equity: float, max_position: float, max_impact_bps: float, half_spread_bps: float,
          impact_k: float) -> Built:
    """Rank the coins by score; each leg takes `quantile` of them (at least one), from the end of the ranking
    inwards, skipping a coin whose 30-day average daily quote volume or volatility is unknown or whose impact at its
    weight would cost more than `max_impact_bps` (left out, with the reason). Each leg holds gross / 2 of equity,
    split equally, no name above `max_position`."""
    out = Built()
    ok = np.isfinite(score)
    for c in np.asarray(coins, dtype=object)[~ok]:
        out.left_out[str(c)] = "no cross-sectional score"
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(-score[idx], kind="mergesort")]
    out.ranked = int(order.size)
    n = max(1, int(np.floor(order.size * quantile)))
    if order.size < 2 * n or order.size < 2:
        out.per_leg = 0
        return out
    out.per_leg = n
    weight = min(gross / 2 / n, max_position)
    out.capped = weight < gross / 2 / n
    notional = weight * equity
    taken: set[int] = set()
    for side, walk in (("long", order), ("short", order[::-1])):
        legs = out.long if side == "long" else out.short
        for j in walk:
            if len(legs) == n:
                break
            if j in taken:
                continue
            c = str(coins[j])
            adv, vol = float(adv_quote[j]), float(daily_vol[j])
            if not (np.isfinite(adv) and adv > 0 and np.isfinite(vol)):
                out.left_out[c] = "liquidity: no complete 30-day quote volume and volatility"
                continue
            bps = float(impact_bps(notional, adv, vol, half_spread_bps, impact_k))
            if bps > max_impact_bps:
                out.left_out[c] = f"liquidity: impact {bps:.0f} bps at {notional:,.0f} > {max_impact_bps:g} bps"
                continue
            taken.add(j)
            legs.append(Leg(c, side, float(score[j]), weight if side == "long" else -weight, notional, bps))
    return out
