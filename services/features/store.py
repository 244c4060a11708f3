"""Feature frames in the lake as Parquet, partitioned by timeframe and date of the decision time."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.features.frame import FeatureFrame
from shared.storage import Lake

# Partition granularity per timeframe: a daily frame split per day would be thousands of
# twelve-row files that cost more to list and open than they save; months keep parts ~100s of rows.
PARTITION = {"1d": "M", "1w": "M"}


def _partition(ts: np.ndarray, timeframe: str) -> np.ndarray:
    return ts.astype("datetime64[ms]").astype(f"datetime64[{PARTITION.get(timeframe, 'D')}]")


def frame_to_table(frame: FeatureFrame) -> pa.Table:
    cols = {
        "ts": pa.array(frame.ts.astype("datetime64[ms]"), type=pa.timestamp("ms", tz="UTC")),
        "coin": pa.array(frame.coin.astype(str), type=pa.string()),
    }
    for k, name in enumerate(frame.names):
        cols[name] = pa.array(frame.X[:, k], type=pa.float32())
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
    )


def write_frame(lake: Lake, frame: FeatureFrame) -> list[str]:
    """One part per (timeframe, date partition); rewriting a partition replaces it whole (atomic put)."""
    if len(frame) == 0:
        return []
    part = _partition(frame.ts, frame.timeframe)
    order = np.argsort(part, kind="stable")
    bounds = np.flatnonzero(np.diff(part[order].astype(np.int64))) + 1
    table = frame_to_table(frame)
    keys = []
    for idx in np.split(order, bounds):
        date = str(part[idx[0]])
        buf = io.BytesIO()
        pq.write_table(table.take(pa.array(idx)), buf, compression="zstd")
        key = f"features/timeframe={frame.timeframe}/date={date}/part.parquet"
        lake.put(key, buf.getvalue())
        keys.append(key)
    return keys


def read_frame(lake: Lake, timeframe: str) -> FeatureFrame:
    keys = [k for k in lake.list(f"features/timeframe={timeframe}/") if k.endswith(".parquet")]
    if not keys:
        raise FileNotFoundError(f"no features for timeframe {timeframe} in {lake.uri}")
    tables = [pq.read_table(io.BytesIO(lake.get(k))) for k in keys]
    return table_to_frame(pa.concat_tables(tables))
