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
    return _agree(predictions, min_horizons, lambda p: (p.actionable, p.direction, p.confidence, p.p_up),
                  ("up", "down"), "direction")


def cross_section_consensus(predictions: Iterable, min_horizons: int) -> list[Signal]:
    """The same rule on P(the coin beats its universe's median): a long candidate ("beats") when at least
    `min_horizons` horizons are actionable with P(beats) >= 0.5 at the threshold (their interval's lower bound) and
    none says it lags; a short candidate ("lags") the other way round."""
    return _agree(predictions, min_horizons,
                  lambda p: (p.beats_actionable, 1 if (p.p_beats or 0.0) >= 0.5 else -1, p.beats_confidence, p.p_beats),
                  ("beats", "lags"), "cross_section")


def _agree(predictions: Iterable, min_horizons: int, view, names: tuple[str, str], target: str) -> list[Signal]:
    by_coin: dict[str, list] = defaultdict(list)
    for p in predictions:
        act, side, conf, prob = view(p)
        if act:
            by_coin[p.coin].append((p, side, conf, prob))
    signals = []
    for coin, acts in sorted(by_coin.items()):
        sides = {side for _, side, _, _ in acts}
        if len(sides) != 1 or len(acts) < min_horizons:
            continue
        (side,) = sides
        signals.append(Signal(
            coin=coin, direction=names[0] if side == 1 else names[1], target=target,
            horizons=sorted(p.horizon for p, *_ in acts), min_confidence=min(c for _, _, c, _ in acts),
            p_up={p.horizon: prob for p, _, _, prob in acts},
            q={p.horizon: [p.q10, p.q50, p.q90] for p, *_ in acts},
            vol={p.horizon: p.vol_forecast for p, *_ in acts if getattr(p, "vol_forecast", None) is not None},
            decision_ts={p.horizon: p.decision_ts for p, *_ in acts}))
    return signals
