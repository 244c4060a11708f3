"""The confidence filter and multi-horizon consensus: which predictions are actionable, which become signals."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

from shared.records import Signal


def actionable(confidence: float, threshold: float) -> bool:
    return confidence >= threshold


class Vote(Protocol):
    """What consensus reads of a prediction (a served `Prediction`, or an evaluation's replayed one)."""

    coin: str
    horizon: str
    direction: int
    actionable: bool
    confidence: float
    p_up: float
    q10: float
    q50: float
    q90: float
    decision_ts: int


def consensus(predictions: Iterable[Vote], min_horizons: int) -> list[Signal]:
    """A signal for a coin when at least `min_horizons` horizons are actionable in one direction and no
    actionable horizon points the other way."""
    by_coin: dict[str, list[Vote]] = defaultdict(list)
    for p in predictions:
        if p.actionable:
            by_coin[p.coin].append(p)
    signals = []
    for coin, acts in sorted(by_coin.items()):
        directions = {p.direction for p in acts}
        if len(directions) != 1 or len(acts) < min_horizons:
            continue
        (direction,) = directions
        signals.append(Signal(
            coin=coin, direction="up" if direction == 1 else "down", horizons=sorted(p.horizon for p in acts),
            min_confidence=min(p.confidence for p in acts), p_up={p.horizon: p.p_up for p in acts},
            q={p.horizon: [p.q10, p.q50, p.q90] for p in acts}, decision_ts={p.horizon: p.decision_ts for p in acts}))
    return signals
