"""Data contracts passed between services: provenance, raw records, series, quality reports, fetch failures."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

Layer = Literal["ohlcv", "sentiment", "onchain", "trades", "orderbook"]
Status = Literal["ok", "excluded", "quarantined"]

# Which fields hold prices (must be > 0) per layer; the rest are non-negative quantities.
PRICE_FIELDS = ("open", "high", "low", "close")
# Raw responses as fetched, immutable, one file per fetch (the lake's audit trail; aged out by the bucket's rules).
RAW = "raw/"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def ms_to_iso(ms: int | np.integer) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def iso_to_ms(text: str) -> int:
    """Parse an ISO-8601 time; a time without a zone is UTC (every cst timestamp is UTC)."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


class Provenance(BaseModel):
    source: str
    request: dict[str, Any]
    fetched_at: datetime


class RawRecord(BaseModel):
    """One response as fetched, with where and when it came from."""

    provenance: Provenance
    layer: Layer
    symbol: str
    timeframe: str
    body: Any

    def fetch_id(self) -> str:
        # Same source, request and body -> same id: re-landing an identical response is a no-op.
        digest = hashlib.sha256(
            json.dumps([self.provenance.source, self.provenance.request, self.body], sort_keys=True, default=str).encode()
        )
        return digest.hexdigest()[:24]

    def lake_key(self) -> str:
        sym = self.symbol.replace("/", "-")
        return f"{RAW}source={self.provenance.source}/symbol={sym}/timeframe={self.timeframe}/{self.fetch_id()}.json"


@dataclass
class RejectedRow:
    """A row the gate (or the parser) refused, kept with the rule that refused it."""

    rule: str
    row: str
    ts: int | None = None
    detail: str = ""


def venue_of(source: str, symbol: str) -> str:
    """The venue and market type of an instrument: `binance` (spot), `binance-perp` (a perpetual swap, whose symbol
    names its settlement currency as ccxt writes it: BTC-USDT:USDT)."""
    return f"{source}-perp" if ":" in symbol else source


@dataclass
class Series:
    """One series (layer x timeframe x symbol): timestamps (ms UTC) and float fields, row-aligned.

    `origin` holds each row's source text so rejected rows reach quarantine as they were delivered.
    """

    layer: str
    timeframe: str
    symbol: str
    source: str
    ts: np.ndarray
    fields: dict[str, np.ndarray]
    origin: list[str]
    parse_errors: list[RejectedRow] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.timeframe}/{self.symbol}"

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: np.ndarray) -> Series:
        return Series(
            self.layer,
            self.timeframe,
            self.symbol,
            self.source,
            self.ts[index],
            {k: v[index] for k, v in self.fields.items()},
            [self.origin[i] for i in np.asarray(index).tolist()] if len(self.origin) else [],
            self.parse_errors,
        )


class IssueExample(BaseModel):
    ts: str | None = None
    detail: str = ""


class SeriesReport(BaseModel):
    status: Status
    rows: int = Field(description="rows usable after the gate")
    rejected_rows: int = Field(0, description="rows moved to quarantine")
    issues: dict[str, int] = {}
    source: str = ""
    first: str | None = None
    last: str | None = None
    unavailable_fields: list[str] = []
    after_as_of: int = Field(0, description="rows not yet published at as-of (not read)")
    before_span: int = Field(0, description="rows older than the run's span (not read: earlier runs judged them)")
    examples: dict[str, list[IssueExample]] = {}


class QualityReport(BaseModel):
    as_of: str
    series: dict[str, SeriesReport]
    # Files in a source directory that are not data series, with why (nothing disappears silently).
    files_ignored: dict[str, str] = {}


class FetchFailure(BaseModel):
    source: str
    task: str
    code: str
    message: str
    attempts: int
