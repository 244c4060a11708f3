"""The confidence filter and multi-horizon consensus: which predictions are actionable, which become signals."""

from __future__ import annotations

from collections import defaultdict

from services.predict.backtest import Signal
from shared.settings import HorizonSpec


def actionable(confidence: float, threshold: float) -> bool:
    return confidence >= threshold


def consensus(predictions: list[dict], min_horizons: int) -> list[dict]:
    """A signal for a coin when at least `min_horizons` horizons are actionable in one direction and no
    actionable horizon points the other way."""
    by_coin: dict[str, list[dict]] = defaultdict(list)
    for p in predictions:
        if p["actionable"]:
            by_coin[p["coin"]].append(p)
    signals = []
    for coin, acts in sorted(by_coin.items()):
        directions = {p["direction"] for p in acts}
        if len(directions) != 1 or len(acts) < min_horizons:
            continue
        (direction,) = directions
        signals.append({
            "coin": coin,
            "direction": "up" if direction == 1 else "down",
            "horizons": sorted(p["horizon"] for p in acts),
            "min_confidence": min(p["confidence"] for p in acts),
            "p_up": {p["horizon"]: p["p_up"] for p in acts},
            "q": {p["horizon"]: [p["q10"], p["q50"], p["q90"]] for p in acts if "q10" in p},
            "decision_ts": {p["horizon"]: p["decision_ts"] for p in acts if "decision_ts" in p},
        })
    return signals


def orders_from_signals(signals: list[dict], horizons: dict[str, HorizonSpec]) -> list[Signal]:
    """Consensus signals as orders for the risk gate and the backtest: sized and held by the shortest agreeing
    daily horizon (its probability, quantiles and decision time); signals without a daily horizon are left out."""
    out = []
    for s in signals:
        daily = [h for h in s["horizons"] if horizons[h].timeframe == "1d" and h in s["q"]]
        if not daily:
            continue
        h = min(daily, key=lambda k: horizons[k].bars)
        q10, q50, q90 = s["q"][h]
        out.append(Signal(int(s["decision_ts"][h]), s["coin"], 1 if s["direction"] == "up" else -1,
                          float(s["p_up"][h]), float(q10), float(q50), float(q90), horizons[h].bars))
    return out
