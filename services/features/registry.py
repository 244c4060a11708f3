"""The one feature registry (name, layer, inputs, lookback, function), shared by training and serving.

Four kinds of block: `coin` blocks run on one coin's contiguous history (1-D arrays), `coin_join`
blocks join a coin's other layers (trades, order books) as-of onto its grid, `market` blocks a
market-wide series joined as-of, and `cross` blocks run on the T x N panel of all coins.
Adding a feature is one function here-in-spirit: one decorated function in blocks.py.
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


def blocks_for(fs: FeatureSet) -> list[FeatureBlock]:
    """The blocks of the declared layers, in registration order (the column order of the frame)."""
    import services.features.blocks  # noqa: F401 - registers the blocks

    unknown = set(fs.layers) - {b.layer for b in REGISTRY.values()}
    if unknown:
        raise ValueError(f"feature set names layers no block provides: {sorted(unknown)}")
    return [b for b in REGISTRY.values() if b.layer in fs.layers]


def feature_names(fs: FeatureSet, fst: FeatureSettings) -> list[str]:
    return [n for b in blocks_for(fs) for n in b.outputs(fs, fst)]
