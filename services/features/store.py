"""Feature frames and price panels in the lake as Parquet, partitioned by timeframe and date of the decision time.

A partition is rewritten only when its content changed (a manifest keeps each partition's digest), so a run
writes the few partitions its new rows touch, and readers take only the partitions of the time range they need.
A row at time t uses only data published by t, so a later run's partition holds the same rows up to t.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.features.frame import PANEL_FIELDS, PRICE, FeatureFrame, Panel
from shared.datasets import arrow_digest, get_table
from shared.errors import LakeKeyNotFound
from shared.settings import timeframe_ms
from shared.storage import Lake

# Partition granularity per timeframe: a daily frame split per day would be thousands of
# twelve-row files that cost more to list and open than they save; months keep parts ~100s of rows.
PARTITION = {"1d": "M", "1w": "M"}
# The column that says whether a row is inside its decision's universe (FeatureFrame.member).
MEMBER = "in_universe"
_DATE = re.compile(r"/date=([0-9-]+)/part\.parquet$")


def _partition(ts: np.ndarray, timeframe: str) -> np.ndarray:
    return ts.astype("datetime64[ms]").astype(f"datetime64[{PARTITION.get(timeframe, 'D')}]")


def frame_to_table(frame: FeatureFrame) -> pa.Table:
    cols = {
        "ts": pa.array(frame.ts.astype("datetime64[ms]"), type=pa.timestamp("ms", tz="UTC")),
        "coin": pa.array(frame.coin.astype(str), type=pa.string()),
    }
    for k, name in enumerate(frame.names):
        cols[name] = pa.array(frame.X[:, k], type=pa.float32())
    cols[MEMBER] = pa.array(frame.members(), type=pa.bool_())
    meta = {"timeframe": frame.timeframe, "names": frame.names, "declared": frame.declared}
    return pa.table(cols).replace_schema_metadata({"cst": json.dumps(meta)})


def table_to_frame(table: pa.Table) -> FeatureFrame:
    meta = json.loads(table.schema.metadata[b"cst"])
    names = meta["names"]
    X = np.column_stack([table.column(n).to_numpy() for n in names]).astype(np.float32) if len(table) else np.zeros((0, len(names)), np.float32)
    return FeatureFrame(
        timeframe=meta["timeframe"],
        ts=table.column("ts").cast(pa.int64()).to_numpy(),
        coin=np.asarray(table.column("coin").to_pylist(), dtype=object),
        X=X,
        names=names,
        declared=meta["declared"],
        # Frames stored before universes were kept as rows are all members.
        member=table.column(MEMBER).to_numpy(zero_copy_only=False) if MEMBER in table.column_names else None,
    )


def _write_partitions(lake: Lake, dataset: str, timeframe: str, ts: np.ndarray, table: pa.Table,
                      from_ms: int | None = None) -> int:
    """Write each date partition of `table` whose bytes differ from the stored one; returns how many were written.
    With `from_ms`, only partitions that start at or after it: one starting earlier holds rows `table` lacks or
    has not settled, and keeps what the lake holds."""
    manifest_key = f"{dataset}/timeframe={timeframe}/_manifest.json"
    try:
        manifest = lake.get_json(manifest_key)
    except LakeKeyNotFound:
        manifest = {}
    part = _partition(ts, timeframe)
    order = np.argsort(part, kind="stable")
    bounds = np.flatnonzero(np.diff(part[order].astype(np.int64))) + 1
    written = 0
    for idx in np.split(order, bounds):
        if idx.size == 0:
            continue
        date = str(part[idx[0]])
        if from_ms is not None and part[idx[0]].astype("datetime64[ms]").astype(np.int64) < from_ms:
            continue
        piece = table.take(pa.array(idx))
        digest = arrow_digest(piece)  # an unchanged partition costs no Parquet encoding and no write
        if manifest.get(date) == digest:
            continue
        buf = io.BytesIO()
        pq.write_table(piece, buf, compression="zstd")
        lake.put(f"{dataset}/timeframe={timeframe}/date={date}/part.parquet", buf.getvalue())
        manifest[date] = digest
        written += 1
    if written:
        lake.put_json(manifest_key, manifest)
    return written


def _partition_keys(lake: Lake, dataset: str, timeframe: str, since_ms: int | None, until_ms: int | None) -> list[str]:
    lo = None if since_ms is None else str(_partition(np.array([since_ms]), timeframe)[0])
    hi = None if until_ms is None else str(_partition(np.array([until_ms]), timeframe)[0])
    keys = []
    for k in lake.list(f"{dataset}/timeframe={timeframe}/date="):
        m = _DATE.search(k)
        if m and (lo is None or m[1] >= lo) and (hi is None or m[1] <= hi):
            keys.append(k)
    return keys


def write_frame(lake: Lake, frame: FeatureFrame, from_ms: int | None = None) -> int:
    """The frame's date partitions (those starting at or after `from_ms`, when given) that changed."""
    if len(frame) == 0:
        return 0
    return _write_partitions(lake, "features", frame.timeframe, frame.ts, frame_to_table(frame), from_ms)


def read_frame(lake: Lake, timeframe: str, since_ms: int | None = None, until_ms: int | None = None) -> FeatureFrame | None:
    """Rows with since <= ts <= until (either open), in stored order (time, then coin); None when none are stored."""
    keys = _partition_keys(lake, "features", timeframe, since_ms, until_ms)
    if not keys:
        return None
    frame = table_to_frame(pa.concat_tables([get_table(lake, k) for k in keys]))
    keep = np.ones(len(frame), bool)
    if since_ms is not None:
        keep &= frame.ts >= since_ms
    if until_ms is not None:
        keep &= frame.ts <= until_ms
    if not keep.all():
        frame.keep(keep)
    return frame


def write_panel(lake: Lake, panel: Panel, from_ms: int | None = None) -> int:
    """Cells with any value, long format; the coin list, unusable fields and notes ride in the metadata. Only
    partitions starting at or after `from_ms`, when given."""
    if not panel.open_ts.size or not panel.coins:
        return 0
    T, N = panel.fields["close"].shape
    present = np.zeros((T, N), bool)
    for f in (*PRICE, "volume"):
        present |= np.isfinite(panel.fields[f])
    fields = [f for f in PANEL_FIELDS if f in panel.fields]
    rows, cols = np.nonzero(present)
    meta = {"timeframe": panel.timeframe, "coins": panel.coins, "notes": panel.notes, "venue": panel.venue,
            "unavailable": {c: sorted(v) for c, v in panel.unavailable.items()}}
    table = pa.table({
        "open_ts": pa.array(panel.open_ts[rows], pa.int64()),
        "coin": pa.array(np.asarray(panel.coins, dtype=object)[cols].astype(str), pa.string()),
        **{f: pa.array(panel.fields[f][rows, cols], pa.float64()) for f in fields},
    }).replace_schema_metadata({"cst": json.dumps(meta)})
    return _write_partitions(lake, "panels", panel.timeframe, panel.open_ts[rows], table, from_ms)


def read_panel(lake: Lake, timeframe: str, since_ms: int | None = None, until_ms: int | None = None) -> Panel | None:
    """Candles opened in since..until on a contiguous grid (NaN where a coin has none); None when none are stored."""
    keys = _partition_keys(lake, "panels", timeframe, since_ms, until_ms)
    if not keys:
        return None
    tables = [get_table(lake, k) for k in keys]
    meta = json.loads(tables[-1].schema.metadata[b"cst"])
    t = pa.concat_tables(tables)
    ts = t.column("open_ts").to_numpy()
    keep = np.ones(ts.size, bool)
    if since_ms is not None:
        keep &= ts >= since_ms
    if until_ms is not None:
        keep &= ts <= until_ms
    coins = meta["coins"]
    step = timeframe_ms(timeframe)
    if not keep.any():
        return Panel(timeframe, np.zeros(0, np.int64), coins, {f: np.zeros((0, len(coins))) for f in PANEL_FIELDS},
                     {c: set(v) for c, v in meta["unavailable"].items()}, meta["notes"], meta.get("venue", ""))
    ts = ts[keep]
    grid = np.arange(ts.min(), ts.max() + step, step, dtype=np.int64)
    col = {c: j for j, c in enumerate(coins)}
    j = np.asarray([col[c] for c in np.asarray(t.column("coin").to_pylist(), dtype=object)[keep]], dtype=np.int64)
    i = (ts - grid[0]) // step
    fields = {}
    # Panels written before the quote volume was kept held Yahoo's volume, which is in the quote currency.
    stored = {f: f if f in t.column_names else "volume" for f in PANEL_FIELDS}
    for f in PANEL_FIELDS:
        a = np.full((grid.size, len(coins)), np.nan, order="F")
        a[i, j] = t.column(stored[f]).to_numpy()[keep]
        fields[f] = a
    return Panel(timeframe, grid, coins, fields, {c: set(v) for c, v in meta["unavailable"].items()}, meta["notes"],
                 meta.get("venue", ""))
