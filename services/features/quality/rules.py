"""Quality rules: each a small registered unit with a code and one check; adding one is one class here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from shared.contracts import PRICE_FIELDS, IssueExample, RejectedRow, Series, ms_to_iso
from shared.settings import QualitySettings

# Fields that count things and so can never be negative.
QUANTITY_FIELDS = ("volume", "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume")
VOLUME_FIELDS = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")


@dataclass
class GateState:
    """What the rules share while judging one series; rules shrink `series`, never change a value."""

    series: Series
    settings: QualitySettings
    as_of_ms: int
    tf_ms: int | None
    issues: Counter = field(default_factory=Counter)
    examples: dict[str, list[IssueExample]] = field(default_factory=dict)
    rejected: list[RejectedRow] = field(default_factory=list)
    unavailable_fields: list[str] = field(default_factory=list)
    excluded_by: list[str] = field(default_factory=list)

    def note(self, code: str, count: int, examples: list[IssueExample] = ()) -> None:
        if count <= 0:
            return
        self.issues[code] += int(count)
        kept = self.examples.setdefault(code, [])
        kept.extend(examples[: max(0, self.settings.examples - len(kept))])

    def reject(self, mask: np.ndarray, code: str, detail: str) -> None:
        """Move the masked rows to quarantine under `code`; the rest of the series stays."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        s = self.series
        rows = [RejectedRow(code, s.origin[i] if s.origin else "", int(s.ts[i]), detail) for i in idx.tolist()]
        self.rejected.extend(rows)
        self.note(code, idx.size, [IssueExample(ts=ms_to_iso(r.ts), detail=detail) for r in rows])
        self.series = s.take(np.flatnonzero(~mask))

    def exclude(self, code: str, count: int, detail: str) -> None:
        self.excluded_by.append(code)
        self.note(code, count, [IssueExample(detail=detail)])


class Rule:
    code: ClassVar[str]
    layers: ClassVar[tuple[str, ...] | None] = None  # None: every layer

    def applies(self, state: GateState) -> bool:
        return self.layers is None or state.series.layer in self.layers

    def check(self, state: GateState) -> None:
        raise NotImplementedError


RULES: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    RULES[cls.code] = cls
    return cls


@register
class Duplicates(Rule):
    """Identical repeats are dropped and counted; timestamps whose rows disagree go to quarantine whole."""

    code = "duplicates"

    def check(self, state: GateState) -> None:
        s = state.series
        if len(s) < 2:
            return
        order = np.argsort(s.ts, kind="stable")
        ts = s.ts[order]
        same_as_prev = np.zeros(len(s), dtype=bool)
        same_as_prev[1:] = ts[1:] == ts[:-1]
        if not same_as_prev.any():
            return
        names = sorted(s.fields)
        vals = np.column_stack([s.fields[n][order] for n in names]) if names else np.zeros((len(s), 0))
        equal_prev = np.zeros(len(s), dtype=bool)
        equal_prev[1:] = same_as_prev[1:] & np.all(vals[1:] == vals[:-1], axis=1)
        # A timestamp conflicts when any of its repeats differs from the row before it.
        group = np.cumsum(~same_as_prev) - 1
        conflict_group = np.zeros(group[-1] + 1, dtype=bool)
        np.logical_or.at(conflict_group, group, same_as_prev & ~equal_prev)
        conflicted = conflict_group[group]
        identical_extra = equal_prev & ~conflicted
        n_identical = int(identical_extra.sum())
        state.note(
            "duplicate_identical",
            n_identical,
            [IssueExample(ts=ms_to_iso(t), detail="identical repeat dropped") for t in ts[identical_extra][:5]],
        )
        drop = np.zeros(len(s), dtype=bool)
        drop[order[identical_extra]] = True
        conflict_rows = np.zeros(len(s), dtype=bool)
        conflict_rows[order[conflicted]] = True
        state.reject(conflict_rows, "duplicate_conflict", "rows with the same timestamp disagree")
        # Dropping identical repeats loses nothing: the kept row carries the same values.
        keep_mask = ~drop[~conflict_rows]
        state.series = state.series.take(np.flatnonzero(keep_mask))


@register
class NonMonotonic(Rule):
    """Rows out of time order are counted and reordered by their timestamps (which carry all the order)."""

    code = "non_monotonic"

    def check(self, state: GateState) -> None:
        s = state.series
        if len(s) < 2:
            return
        back = np.flatnonzero(np.diff(s.ts) < 0) + 1
        if back.size == 0:
            return
        state.note(
            "non_monotonic",
            back.size,
            [IssueExample(ts=ms_to_iso(s.ts[i]), detail=f"after {ms_to_iso(s.ts[i - 1])}") for i in back[:5]],
        )
        state.series = s.take(np.argsort(s.ts, kind="stable"))


@register
class NonPositivePrice(Rule):
    code = "non_positive_price"
    layers = ("ohlcv", "orderbook")

    def check(self, state: GateState) -> None:
        s = state.series
        prices = [s.fields[f] for f in (*PRICE_FIELDS, "best_bid", "best_ask") if f in s.fields]
        if prices:
            state.reject(np.any(np.column_stack(prices) <= 0, axis=1), self.code, "a price is zero or negative")


@register
class OutOfRange(Rule):
    """Values outside their documented range (Fear & Greed is 0..100; network metrics are >= 0)."""

    code = "out_of_range"
    layers = ("sentiment", "onchain")

    def check(self, state: GateState) -> None:
        v = state.series.fields.get("value")
        if v is None:
            return
        bad = (v < 0) | (v > 100) if state.series.layer == "sentiment" else v < 0
        state.reject(bad, self.code, "value outside its documented range")


@register
class OhlcInconsistent(Rule):
    """high must be the top and low the bottom of open, high, low, close (within float-export rounding)."""

    code = "ohlc_inconsistent"
    layers = ("ohlcv",)

    def check(self, state: GateState) -> None:
        f = state.series.fields
        if not all(k in f for k in PRICE_FIELDS):
            return
        tol = state.settings.ohlc_rel_tol
        top = np.maximum.reduce([f["open"], f["close"], f["low"]])
        bottom = np.minimum.reduce([f["open"], f["close"], f["high"]])
        bad = (f["high"] < top * (1 - tol)) | (f["low"] > bottom * (1 + tol))
        state.reject(bad, self.code, "high below open/close/low or low above open/close/high")


@register
class NegativeVolume(Rule):
    code = "negative_volume"
    layers = ("ohlcv", "trades")

    def check(self, state: GateState) -> None:
        f = state.series.fields
        q = [f[k] for k in QUANTITY_FIELDS if k in f]
        if q:
            state.reject(np.any(np.column_stack(q) < 0, axis=1), self.code, "a volume or count is negative")


@register
class VolumeUnavailable(Rule):
    """A series whose volume is mostly zero does not publish volume: volume is unknown, never zero."""

    code = "volume_unavailable"
    layers = ("ohlcv",)

    def check(self, state: GateState) -> None:
        v = state.series.fields.get("volume")
        if v is None or v.size == 0:
            return
        zero = int((v == 0).sum())
        share = zero / v.size
        if share > state.settings.zero_volume_max_share:
            state.unavailable_fields.extend(k for k in VOLUME_FIELDS if k in state.series.fields)
            state.note(
                self.code, zero, [IssueExample(detail=f"{zero} of {v.size} candles ({share:.0%}) have zero volume")]
            )


@register
class Gap(Rule):
    """Missing steps on the timeframe grid, counted; downstream windows touching a gap are excluded."""

    code = "gap"

    def applies(self, state: GateState) -> bool:
        return state.tf_ms is not None

    def check(self, state: GateState) -> None:
        ts = state.series.ts
        if ts.size < 2:
            return
        step = np.diff(ts)
        missing = np.rint(step / state.tf_ms).astype(np.int64) - 1
        at = np.flatnonzero(missing > 0)
        state.note(
            self.code,
            int(missing[at].sum()),
            [IssueExample(ts=ms_to_iso(ts[i]), detail=f"{missing[i]} missing after this point") for i in at[:5]],
        )


@register
class OutlierReturn(Rule):
    """Log returns far from the series' own distribution (robust z: median and MAD), flagged, never altered."""

    code = "outlier_return"
    layers = ("ohlcv",)

    def check(self, state: GateState) -> None:
        s = state.series
        close = s.fields.get("close")
        if close is None or close.size < 3 or state.tf_ms is None:
            return
        ret = np.diff(np.log(close))
        adjacent = np.diff(s.ts) == state.tf_ms  # a return across a gap is not one period's return
        r = ret[adjacent]
        if r.size < 3:
            return
        mad = np.median(np.abs(r - np.median(r))) * 1.4826
        if mad == 0:
            return
        z = np.zeros_like(ret)
        z[adjacent] = (ret[adjacent] - np.median(r)) / mad
        at = np.flatnonzero(np.abs(z) >= state.settings.outlier_z)
        state.note(
            self.code,
            at.size,
            [IssueExample(ts=ms_to_iso(s.ts[i + 1]), detail=f"log return {ret[i]:+.4f}, z={z[i]:+.1f}") for i in at[:5]],
        )


@register
class Stale(Rule):
    """The last point is older than N timeframes at as-of: the feed stopped, the series is excluded."""

    code = "stale"

    def applies(self, state: GateState) -> bool:
        return state.tf_ms is not None and len(state.series) > 0

    def check(self, state: GateState) -> None:
        last = int(state.series.ts[-1])
        age = state.as_of_ms - last
        limit = state.settings.stale_timeframes * state.tf_ms
        if age > limit:
            state.exclude(
                self.code,
                1,
                f"last point {ms_to_iso(last)} is {age / state.tf_ms:.1f} timeframes old at as-of "
                f"(limit {state.settings.stale_timeframes:g})",
            )
