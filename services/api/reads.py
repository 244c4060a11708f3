"""What the API reads from the lake: runs and their summaries, predictions by horizon and date, models, quality."""

from __future__ import annotations

import pickle
import re
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from services.api.models import RUN_ID as RUN_ID_PATTERN
from services.api.models import HorizonModels, ModelVersion, QualityView, ReliabilityBin
from services.predict import logbook
from shared.datasets import get_table, partition_dates
from shared.errors import LakeKeyNotFound
from shared.records import (
    CoinPerformance,
    Forecast,
    ModelMetadata,
    Outcome,
    Prediction,
    RunSummary,
)
from shared.registry import current_version, horizon_prefix, metadata_key, model_prefix
from shared.runs import RUNS, SUMMARY_KEY, quality_key, run_prefix, summary_key
from shared.storage import Lake

RUN_ID = re.compile(RUN_ID_PATTERN)
_T = TypeVar("_T")


# --- what was parsed from the lake, kept while the lake's stamp of its key holds ----------------------------------
# A request must not list every run, re-read a summary or parse a day of Parquet files: a serving process keeps
# what it parsed, keyed on the lake's stamp of the key (Lake.stamp: it changes with every write), so a run that
# lands is seen by the next request. A store that cannot stamp cheaply (S3) is read as before, on every request.


class _LakeCache:
    """Values built from lake keys, each kept while the key's settled stamp is unchanged; least recently used out
    first once the entries' weights pass `capacity`. Shared by the server's threads: two threads may build the same
    value at once, and the second simply replaces the first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str, str], tuple[tuple, Any, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, lake: Lake, kind: str, key: str, build: Callable[[], _T],
            weight: Callable[[_T], int] = lambda _value: 1) -> _T:
        stamp = lake.stamp(key)  # taken before reading: a write after it changes the stamp, never hides behind it
        if stamp is None or not stamp.settled:
            return build()
        ident = (lake.uri, kind, key)
        with self._lock:
            hit = self._entries.get(ident)
            if hit is not None and hit[0] == stamp.identity:
                self._entries.move_to_end(ident)
                return hit[1]
        value = build()
        w = weight(value)
        with self._lock:
            old = self._entries.pop(ident, None)
            self._weight -= old[2] if old is not None else 0
            if w <= self.capacity:
                self._entries[ident] = (stamp.identity, value, w)
                self._weight += w
            while self._weight > self.capacity:
                self._weight -= self._entries.popitem(last=False)[1][2]
        return value


# Per serving process: documents and folder listings weighed in kB (~32 MB); prediction rows counted once in their
# file and once in their partition, so ~50,000 rows are kept (~1.5 kB each: ~75 MB, three weeks of hourly runs for
# 100 coins).
_DOCS = _LakeCache(32_768)
_ROWS = _LakeCache(100_000)


def _folders(lake: Lake, prefix: str) -> list[str]:
    """The folder names directly under prefix, sorted (shared between callers: never changed)."""
    return _DOCS.get(lake, "folders", prefix, lambda: lake.folders(prefix), lambda names: 1 + len(names) // 16)


def _json(lake: Lake, key: str) -> Any | None:
    """A JSON document of the lake, None when absent. Each caller gets its own copy (unpickling the parsed document
    costs less than half of parsing the JSON again), so no caller can change what the next one reads."""
    def build() -> bytes | None:
        try:
            return pickle.dumps(lake.get_json(key), pickle.HIGHEST_PROTOCOL)
        except LakeKeyNotFound:
            return None

    blob = _DOCS.get(lake, "json", key, build, lambda b: 1 + len(b or b"") // 1024)
    # nosec B301 - our own pickle, made two lines above from a document parsed from the lake, never bytes from outside
    return None if blob is None else pickle.loads(blob)  # nosec B301


def _has_summary(lake: Lake, run_id: str) -> bool:
    return _DOCS.get(lake, "has_summary", run_prefix(run_id), lambda: lake.exists(summary_key(run_id)))


def _runs_with_summary(lake: Lake) -> Iterator[str]:
    """Runs that wrote a summary, newest first, found lazily: the newest costs a question per run folder above it."""
    if lake.stamp(RUNS) is None:
        # Nothing to keep (S3, or no runs yet): one listing answers, cheaper there than a question per run.
        yield from sorted((m[1] for k in lake.list(RUNS) if (m := SUMMARY_KEY.search(k))), reverse=True)
        return
    for name in reversed(_folders(lake, RUNS)):
        if name.startswith("run_id=") and _has_summary(lake, name[7:]):
            yield name[7:]


class _Partition(NamedTuple):
    """One date partition of the prediction log: its Parquet keys (sorted), their rows, and each coin's rows in key
    then row order (the order a scan of the keys meets them)."""

    keys: list[str]
    rows_by_key: dict[str, list[dict]]
    by_coin: dict[str, list[dict]]


def _file_rows(lake: Lake, key: str) -> list[dict]:
    return _ROWS.get(lake, "rows", key, lambda: get_table(lake, key).to_pylist(), len)


def _prediction_partition(lake: Lake, horizon: str, day: str) -> _Partition:
    prefix = logbook.predictions_prefix(horizon, day)

    def build() -> _Partition:
        # A file that landed since the last build is the only one parsed: the others' rows are kept by key.
        keys = [k for k in lake.list(prefix) if k.endswith(".parquet")]
        rows_by_key = {k: _file_rows(lake, k) for k in keys}
        by_coin: dict[str, list[dict]] = defaultdict(list)
        for k in keys:
            for r in rows_by_key[k]:
                by_coin[r["coin"]].append(r)
        return _Partition(keys, rows_by_key, dict(by_coin))

    return _ROWS.get(lake, "partition", prefix, build, lambda p: sum(map(len, p.rows_by_key.values())))


def _prediction_days(lake: Lake, horizon: str) -> list[str]:
    """The horizon's date partitions, oldest first."""
    return [n[5:] for n in _folders(lake, logbook.predictions_prefix(horizon)) if n.startswith("date=")]


def run_ids(lake: Lake) -> list[str]:
    """Runs that wrote a summary, newest first (run ids begin with their as-of)."""
    return list(_runs_with_summary(lake))


def summary(lake: Lake, run_id: str) -> RunSummary | None:
    """The run's summary (a fresh record each call: callers never change the cached document)."""
    doc = _json(lake, summary_key(run_id))
    return None if doc is None else RunSummary.model_validate(doc)


def latest_summary(lake: Lake) -> RunSummary | None:
    for run_id in _runs_with_summary(lake):
        doc = summary(lake, run_id)
        if doc is not None:
            return doc
    return None


# The times a date partition can name; a filter beyond them (year 1, year 9999 in another zone) is clamped to them.
_FIRST_MS, _LAST_MS = 0, 253_402_214_400_000  # 1970-01-01, 9999-12-31


def _days(since_ms: int | None, until_ms: int | None) -> list[str] | None:
    if since_ms is None or until_ms is None:
        return None
    since_ms, until_ms = (min(max(t, _FIRST_MS), _LAST_MS) for t in (since_ms, until_ms))
    start = datetime.fromtimestamp(since_ms / 1000, UTC).date()
    end = datetime.fromtimestamp(until_ms / 1000, UTC).date()
    if (end - start).days > 366:
        return None
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def predictions(lake: Lake, horizons: list[str], *, coin: str | None = None, run_id: str | None = None,
                since_ms: int | None = None, until_ms: int | None = None) -> list[Prediction]:
    """Logged predictions matching the filters, newest decision first. A time range reads only its date partitions,
    and a partition's files are parsed once per serving process (again only when the partition changes)."""
    days = _days(since_ms, until_ms)
    lo = since_ms if since_ms is not None else -2**63
    hi = until_ms if until_ms is not None else 2**63
    rows: list[dict] = []
    for h in horizons:
        for day in days if days is not None else _prediction_days(lake, h):
            part = _prediction_partition(lake, h, day)
            if run_id is not None:
                found = [r for k in part.keys if logbook.run_of(k) == run_id for r in part.rows_by_key[k]]
            elif coin is not None:
                found = part.by_coin.get(coin, [])
            else:
                found = [r for k in part.keys for r in part.rows_by_key[k]]
            rows.extend(r for r in found if lo <= r["decision_ts"] <= hi and (coin is None or r["coin"] == coin))
    rows.sort(key=lambda r: (-r["decision_ts"], r["horizon"], r["coin"]))
    return _records(rows)


def _records(rows: list[dict]) -> list[Prediction]:
    """The kept rows as fresh records (the rows serve the next request too; a caller never changes them)."""
    return [Prediction.model_construct(**r) for r in rows]


def latest_per_horizon(lake: Lake, horizons: list[str], coin: str) -> dict[str, Prediction]:
    """A coin's most recent logged prediction per horizon (the newest date partition that holds it)."""
    out = {}
    for h in horizons:
        for day in reversed(_prediction_days(lake, h)):
            found = _prediction_partition(lake, h, day).by_coin.get(coin)
            if found:
                (out[h],) = _records([max(found, key=lambda r: r["decision_ts"])])
                break
    return out


def models(lake: Lake, horizons: list[str]) -> dict[str, HorizonModels]:
    """Per horizon: its model versions, newest first, with the current one marked and what each was judged."""
    out = {}
    for h in horizons:
        versions = [n[8:] for n in reversed(_folders(lake, horizon_prefix(h))) if n.startswith("version=")]
        current = current_version(lake, h)
        entries = []
        for v in versions:
            doc = _json(lake, metadata_key(h, v))
            if doc is None:
                continue  # a version still being written: its metadata lands after its models
            meta = ModelMetadata.model_validate(doc)
            entries.append(ModelVersion(version=v, current=v == current, created=meta.created,
                                        training_window=meta.training_window, skill=meta.skill,
                                        brier_skill=meta.metrics.get("brier_skill"), ece=meta.metrics.get("ece"),
                                        gate=meta.gate, features=list(meta.features)))
        out[h] = HorizonModels(current=current, versions=entries)
    return out


def model_card(lake: Lake, horizon: str, version: str) -> str | None:
    try:
        return lake.get(model_prefix(horizon, version) + "MODEL_CARD.md").decode()
    except LakeKeyNotFound:
        return None


def quality(lake: Lake) -> QualityView | None:
    """The newest completed run's quality report."""
    for run_id in _runs_with_summary(lake):
        doc = _json(lake, quality_key(run_id))
        if doc is not None:
            return QualityView(run_id=run_id, **doc)
    return None


# --- what the dashboard pages read beyond the JSON endpoints ------------------------------------------------------


def latest_rows(lake: Lake, horizon: str) -> list[Prediction]:
    """Every coin's prediction at the newest logged decision time of a horizon, by coin."""
    for day in reversed(_prediction_days(lake, horizon)):
        rows = [r for rs in _prediction_partition(lake, horizon, day).by_coin.values() for r in rs]
        if rows:
            newest = max(r["decision_ts"] for r in rows)
            return _records(sorted((r for r in rows if r["decision_ts"] == newest), key=lambda r: r["coin"]))
    return []


def coin_outcomes(lake: Lake, horizon: str, coin: str) -> list[Outcome]:
    """A coin's recent matured predictions of a horizon (the rolling state performance reads), oldest first."""
    rows, _meta = logbook.recent_outcomes(lake, horizon)
    return [r for r in rows if r.coin == coin]


def latest_performance(lake: Lake, horizon: str) -> list[CoinPerformance]:
    """The newest per-coin performance table of a horizon (hit rate, Brier, ECE over each coin's recent window)."""
    for day in partition_dates(lake, logbook.performance_prefix(horizon)):
        keys = sorted(lake.list(logbook.performance_prefix(horizon, day)))
        if keys:
            rows = sorted(get_table(lake, keys[-1]).to_pylist(), key=lambda r: r["coin"])
            return [CoinPerformance.model_construct(**r) for r in rows]
    return []


def recent_outcomes(lake: Lake, horizon: str) -> list[Outcome]:
    return logbook.recent_outcomes(lake, horizon)[0]


def reliability(outcomes: list[Outcome], bins: int = 10, min_count: int = 5) -> list[ReliabilityBin]:
    """Mean forecast P(up) and realized up-rate per equal-width bin holding at least `min_count` outcomes."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [o for o in outcomes if lo <= o.p_up < hi or (b == bins - 1 and o.p_up == 1.0)]
        if len(inside) >= min_count:
            out.append(ReliabilityBin(bin=[lo, hi], n=len(inside), mean_p=sum(o.p_up for o in inside) / len(inside),
                                      up_rate=sum(o.realized_return > 0 for o in inside) / len(inside)))
    return out


def board(lake: Lake, settings, horizons: list[str], summary: RunSummary | None) -> list[Forecast]:
    """Every coin and horizon of the newest decisions as board lines, with how P(up) moved since each coin's
    previous forecast of the horizon (within three bars before)."""
    from services.predict.board import decision_closes, forecast_rows
    from shared.settings import timeframe_ms

    latest, previous = [], {}
    for h in horizons:
        rows = latest_rows(lake, h)
        if not rows:
            continue
        latest += rows
        t = rows[0].decision_ts
        step = timeframe_ms(settings.training.horizons[h].timeframe)
        for p in predictions(lake, [h], since_ms=t - 3 * step, until_ms=t - 1):  # newest first
            previous.setdefault((h, p.coin), p)
    uncertified = summary.uncertified_horizons if summary else {}
    return forecast_rows(latest, horizons, uncertified, settings.confidence_threshold,
                         decision_closes(settings, lake, latest), previous)
