"""A price panel: all coins of one venue and timeframe on one grid of candle open times, the input of the features,
the universe and the risk guards."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PRICE = ("open", "high", "low", "close")
# A panel's fields: prices, volume as the source counts it, and the traded value in the quote currency where the
# source publishes it (NaN elsewhere; Panel.quote_volume).
PANEL_FIELDS = (*PRICE, "volume", "quote_volume")


@dataclass
class Panel:
    """All coins of one timeframe on a common grid of candle open times (NaN where a coin has no candle)."""

    timeframe: str
    open_ts: np.ndarray
    coins: list[str]
    fields: dict[str, np.ndarray]
    unavailable: dict[str, set[str]]
    notes: dict[str, str] = field(default_factory=dict)
    venue: str = ""  # the source and market type of its prices (one venue: services/ingest/sources/layouts.py)

    def quote_volume(self) -> np.ndarray:
        """Traded value per bar in the quote currency: the source's own quote volume where it publishes one
        (Binance, Bybit; Yahoo's volume is in USD), else close x base volume."""
        base = self.fields["close"] * self.fields["volume"]
        q = self.fields.get("quote_volume")
        return base if q is None else np.where(np.isfinite(q), q, base)
