"""The one feature registry (name, layer, inputs, lookback, function), shared by training and serving.

Four kinds of block: `coin` blocks run on one coin's contiguous history (1-D arrays), `coin_join`
blocks join a coin's other layers (trades, order books) as-of onto its grid, `market` blocks a
market-wide series joined as-of, and `cross` blocks run on the T x N panel of all coins.
Adding a feature is one decorated function in blocks.py, which also selects a feature set's blocks
(`blocks_for`), so whoever asks for blocks has them registered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
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
    # What each output means, for people: a pattern its names match fully, and the words ({1}: the first group).
    glossary: dict[str, str] = field(default_factory=dict)


REGISTRY: dict[str, FeatureBlock] = {}


def feature_block(name: str, *, kind: Kind, layer: str, inputs: tuple[str, ...],
                  lookback: Callable[[FeatureSet, FeatureSettings], int],
                  outputs: Callable[[FeatureSet, FeatureSettings], list[str]], glossary: dict[str, str]):
    def wrap(fn: Callable[..., dict]) -> Callable[..., dict]:
        if name in REGISTRY:
            raise ValueError(f"feature block {name!r} registered twice")
        REGISTRY[name] = FeatureBlock(name, kind, layer, inputs, lookback, outputs, fn, glossary)
        return fn

    return wrap


def describe(feature: str) -> str | None:
    """A feature's meaning in words, from the glossary of the block that emits it; None for a name no block has."""
    for block in REGISTRY.values():
        for pattern, text in block.glossary.items():
            m = re.fullmatch(pattern, feature)
            if m:
                return text.format(*m.groups(default=""), layer=block.layer).strip()
    return None

