"""The one feature registry (name, layer, inputs, lookback, function), shared by training and serving.

Four kinds of block: `coin` blocks run on one coin's contiguous history (1-D arrays), `coin_join`
blocks join a coin's other layers (trades, order books) as-of onto its grid, `market` blocks a
market-wide series joined as-of, and `cross` blocks run on the T x N panel of all coins.
Adding a feature is one decorated function in blocks.py, which also selects a feature set's blocks
(`blocks_for`), so whoever asks for blocks has them registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from shared.settings import FeatureSet, FeatureSettings

Kind = Literal["coin", "market", "cross", "coin_join"]


@dataclass(frozen=True)
class FeatureBlock:
    name: str
    kind: Kind
    layer: str
    inputs: tuple[str, ...]
    # Bars of history the block needs before its first value (for reports and documentation).
    lookback: Callable[[FeatureSet, FeatureSettings], int]
    # The feature names it emits, in order.
    outputs: Callable[[FeatureSet, FeatureSettings], list[str]]
    fn: Callable[..., dict]


REGISTRY: dict[str, FeatureBlock] = {}


def feature_block(name: str, *, kind: Kind, layer: str, inputs: tuple[str, ...],
                  lookback: Callable[[FeatureSet, FeatureSettings], int],
                  outputs: Callable[[FeatureSet, FeatureSettings], list[str]]):
    def wrap(fn: Callable[..., dict]) -> Callable[..., dict]:
        if name in REGISTRY:
            raise ValueError(f"feature block {name!r} registered twice")
        REGISTRY[name] = FeatureBlock(name, kind, layer, inputs, lookback, outputs, fn)
        return fn

    return wrap

