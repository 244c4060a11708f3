"""The quality gate: every series gets ok / excluded / quarantined with reason codes; nothing is filled."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from services.features.quality.rules import RULES, GateState
from shared.contracts import QualityReport, RejectedRow, Series, SeriesReport, ms_to_iso
from shared.datasets import merge_series
from shared.errors import CstError
from shared.settings import QualitySettings, timeframe_ms

# Codes that make a whole series unusable.
EXCLUDING = {"stale", "no_data"}


@dataclass
class GateOutcome:
    report: QualityReport
    # Usable series (rejected rows removed, identical repeats dropped, time-ordered), by series key.
    clean: dict[str, Series] = field(default_factory=dict)
    # Rejected rows per series key, with the rule that rejected each.
    quarantine: dict[str, tuple[Series, list[RejectedRow]]] = field(default_factory=dict)
    # Fields that must not be used per series key (e.g. volume where the source publishes none).
    unavailable: dict[str, list[str]] = field(default_factory=dict)


def _period_ms(timeframe: str) -> int | None:
    try:
        return timeframe_ms(timeframe)
    except CstError:
        return None  # snapshots (order books) have no grid


def publication_lag_ms(layer: str, timeframe: str, settings: QualitySettings) -> int:
    lag = settings.publication_lag.get(layer, "0m")
    if lag == "timeframe":
        return _period_ms(timeframe) or 0
    return timeframe_ms(lag)


def judge(series: Series, as_of_ms: int, settings: QualitySettings, skip: frozenset[str] = frozenset(),
          since_ms: int | None = None) -> tuple[SeriesReport, GateState, int]:
    """Run the configured rules on one series as it was visible at as_of, over its rows from `since_ms` on (a run's
    span; None: the whole history)."""
    state = GateState(series=series, settings=settings, as_of_ms=as_of_ms, tf_ms=_period_ms(series.timeframe))
    for row in series.parse_errors:
        state.rejected.append(row)
    state.note("parse_error", len(series.parse_errors))
    # Only what was published by as_of is visible: no judgement (and no feature) may look past it.
    lag = publication_lag_ms(series.layer, series.timeframe, settings)
    visible = series.ts + lag <= as_of_ms
    after = int((~visible).sum())
    before = 0
    if since_ms is not None:
        older = series.ts < since_ms
        before = int(older.sum())
        visible &= ~older
    if after or before:
        state.series = series.take(np.flatnonzero(visible))
    for name in (r for r in settings.rules if r not in skip):
        try:
            rule = RULES[name]()
        except KeyError:
            raise CstError("unknown_rule", f"quality rule {name!r} is not registered; known: {sorted(RULES)}") from None
        if rule.applies(state):
            rule.check(state)
    clean = state.series
    if len(clean) == 0:
        detail = "no rows published by as-of" if after else "no rows in the run's span" if before else "no usable rows"
        state.exclude("no_data", 1, detail)
    if state.excluded_by:
        status = "excluded"
    elif state.rejected:
        status = "quarantined"
    else:
        status = "ok"
    report = SeriesReport(
        status=status,
        rows=len(clean),
        rejected_rows=len(state.rejected),
        issues=dict(sorted(state.issues.items())),
        source=series.source,
        first=ms_to_iso(clean.ts[0]) if len(clean) else None,
        last=ms_to_iso(clean.ts[-1]) if len(clean) else None,
        unavailable_fields=sorted(set(state.unavailable_fields)),
        examples={k: v for k, v in sorted(state.examples.items()) if v},
        after_as_of=after,
        before_span=before,
    )
    return report, state, after


def run_gate(series: list[Series], as_of_ms: int, settings: QualitySettings, skip: frozenset[str] = frozenset(),
             span_ms: Callable[[str], int] | None = None) -> GateOutcome:
    """Judge every series at as_of. `skip` names rules not to run: training on history skips `stale`,
    which guards live serving (a feed that stopped), not the use of a finished past. `span_ms`: how far before
    as_of a series of a timeframe is read (a run's span); None reads every row."""
    sources: dict[str, set[str]] = {}
    for s in series:
        sources.setdefault(s.key, set()).add(s.source)
    if dupes := {k: sorted(v) for k, v in sorted(sources.items()) if len(v) > 1}:
        raise CstError("series_key_clash", f"two sources map to the same series: {dupes}")
    # Several files of one series from one source (monthly dumps, a history and its continuation) are one series.
    series = merge_series(series)
    outcome = GateOutcome(report=QualityReport(as_of=ms_to_iso(as_of_ms), series={}))
    for s in sorted(series, key=lambda x: x.key):
        since = None if span_ms is None else as_of_ms - span_ms(s.timeframe)
        report, state, _ = judge(s, as_of_ms, settings, skip, since)
        outcome.report.series[s.key] = report
        if report.status != "excluded":
            outcome.clean[s.key] = state.series
        if state.rejected:
            outcome.quarantine[s.key] = (s, state.rejected)
        if state.unavailable_fields:
            outcome.unavailable[s.key] = sorted(set(state.unavailable_fields))
    return outcome


def quarantine_documents(outcome: GateOutcome) -> dict[str, dict]:
    """Lake key -> document for every series with rejected rows; keys hash their content (idempotent)."""
    docs: dict[str, dict] = {}
    for key, (s, rows) in outcome.quarantine.items():
        doc = {
            "series": key,
            "source": s.source,
            "rows": [
                {"rule": r.rule, "ts": ms_to_iso(r.ts) if r.ts is not None else None, "row": r.row, "detail": r.detail}
                for r in rows
            ],
        }
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]
        sym = s.symbol.replace("/", "-")
        docs[f"quarantine/source={s.source}/symbol={sym}/timeframe={s.timeframe}/{digest}.json"] = doc
    return docs
