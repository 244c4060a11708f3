"""Daily price history as sizing, the guards and the backtest read it: closes and quote volumes of every coin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.errors import CstError
from shared.settings import timeframe_ms

DAY_MS = timeframe_ms("1d")


@dataclass
class PriceHistory:
    """Daily grid of candle OPEN times (ms, UTC), one column per coin; NaN where there is no candle or no volume."""

    ts: np.ndarray  # (T,) int64
    coins: list[str]
    close: np.ndarray  # (T, C)
    quote_volume: np.ndarray  # (T, C) volume in quote currency; NaN = unavailable (never read as zero)

    def __post_init__(self) -> None:
        self.ts = np.asarray(self.ts, dtype=np.int64)
        self.close = np.asarray(self.close, dtype=np.float64)
        self.quote_volume = np.asarray(self.quote_volume, dtype=np.float64)
        shape = (len(self.ts), len(self.coins))
        if self.close.shape != shape or self.quote_volume.shape != shape:
            raise CstError("history_shape", f"close {self.close.shape} and quote_volume {self.quote_volume.shape} "
                                            f"must both be (len(ts), len(coins)) = {shape}")
        if len(self.ts) > 1 and np.any(np.diff(self.ts) != DAY_MS):
            raise CstError("history_grid", "ts must be a gap-free daily grid (one row per day, NaN where no candle)")

    @property
    def close_ts(self) -> np.ndarray:
        """When each close is known: the candle's close time, which is also the next candle's open."""
        return self.ts + DAY_MS

    def window(self, start_ms: int, end_ms: int) -> slice:
        """Rows whose close time lies in [start_ms, end_ms]."""
        lo = int(np.searchsorted(self.close_ts, start_ms, side="left"))
        return slice(lo, int(np.searchsorted(self.close_ts, end_ms, side="right")))


def price_history_from_panel(panel) -> PriceHistory:
    """A daily features Panel as sizing and the guards read it: the traded value in the quote currency
    (Panel.quote_volume; Binance's futures volume is in contracts, Yahoo's in USD). A coin whose volume the quality
    gate declared unavailable gets NaN: never tradable, never assumed liquid."""
    vol = panel.quote_volume().copy()
    for j, c in enumerate(panel.coins):
        if "volume" in panel.unavailable.get(c, set()):
            vol[:, j] = np.nan
    return PriceHistory(panel.open_ts, list(panel.coins), panel.fields["close"], vol)


def mark_at_last_close(x: np.ndarray) -> np.ndarray:
    """Last known value down each column (marks through a missing candle); NaN before the first one."""
    idx = np.where(np.isfinite(x), np.arange(len(x))[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return x[idx, np.arange(x.shape[1])]  # before a column's first value idx is 0, where x is NaN
