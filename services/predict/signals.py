"""The confidence filter and multi-horizon consensus: which predictions are actionable, which become signals."""

from __future__ import annotations

from collections import defaultdict


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

