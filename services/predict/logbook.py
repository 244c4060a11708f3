"""The prediction, outcome and performance logs: Parquet datasets partitioned by horizon and date, a handful of files per run.

A prediction's identity is (horizon, coin, decision time, model version): a decision time already logged for a
horizon is never predicted again, whichever run asks. Outcome recording reads only the predictions that can
mature since the last recorded as-of (a watermark per horizon), and performance and drift read a small rolling
state of recent outcomes instead of the whole history, so a run's cost does not grow with the log.
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

import numpy as np
import pyarrow as pa

from shared.datasets import day_of, get_table, keys_in_days, put_table, read_tables
from shared.errors import LakeKeyNotFound
from shared.records import CoinPerformance, NoOutcome, Outcome, Prediction, Record, arrow_fields
from shared.storage import Lake

R = TypeVar("R", bound=Record)

_RUN = re.compile(r"/run_id=([^/]+)\.parquet$")

PREDICTION_FIELDS = arrow_fields(Prediction)
OUTCOME_FIELDS = arrow_fields(Outcome)
NO_OUTCOME_FIELDS = arrow_fields(NoOutcome)
PERFORMANCE_FIELDS = arrow_fields(CoinPerformance)


def _table(records: list[Record], fields: dict[str, pa.DataType]) -> pa.Table:
    return pa.table({k: pa.array([getattr(r, k) for r in records], t) for k, t in fields.items()})


def _records(record: type[R], rows: list[dict]) -> list[R]:
    """Rows of this store's own files as records, not validated again (they were when written); a column an older
    file lacks takes the record's default."""
    return [record.model_construct(**r) for r in rows]


def predictions_prefix(horizon: str, day: str | None = None) -> str:
    """The horizon's prediction log, or one date partition of it (`day` YYYY-MM-DD)."""
    return f"predictions/horizon={horizon}/" + (f"date={day}/" if day else "")


def prediction_key(horizon: str, decision_ts: int, run_id: str) -> str:
    return predictions_prefix(horizon, day_of(decision_ts)) + f"run_id={run_id}.parquet"


def run_of(key: str) -> str | None:
    """The run that wrote a prediction, outcome or performance file, from its key."""
    found = _RUN.search(key)
    return found[1] if found else None


def logged_decision(lake: Lake, horizon: str, decision_ts: int) -> tuple[str, str, list[Prediction]] | None:
    """(run id, key, rows) of the run that logged this horizon's decision time, or None when none did."""
    for key in lake.list(predictions_prefix(horizon, day_of(decision_ts))):
        rows = [r for r in read_predictions(lake, key) if r.decision_ts == decision_ts]
        if rows:
            return run_of(key), key, rows
    return None


def write_predictions(lake: Lake, run_id: str, horizon: str, decision_ts: int, rows: list[Prediction]) -> str:
    key = prediction_key(horizon, decision_ts, run_id)
    put_table(lake, key, _table(rows, PREDICTION_FIELDS), if_absent=True)
    return key


def read_predictions(lake: Lake, key: str, decision_ts: int | None = None) -> list[Prediction]:
    rows = _records(Prediction, get_table(lake, key).to_pylist())
    return [r for r in rows if decision_ts is None or r.decision_ts == decision_ts]


def maturing(lake: Lake, horizon: str, lo_decision: int | None, hi_decision: int) -> list[Prediction]:
    """Predictions with lo < decision_ts <= hi (lo None: from the start of the log), one per identity."""
    if lo_decision is None:
        keys = [k for k in lake.list(predictions_prefix(horizon) + "date=")
                if k.endswith(".parquet") and k.split("/date=")[1][:10] <= day_of(hi_decision)]
    else:
        keys = keys_in_days(lake, predictions_prefix(horizon), lo_decision + 1, hi_decision)
    table = read_tables(lake, keys)
    if table is None:
        return []
    seen: set[tuple] = set()
    out = []
    for r in sorted(_records(Prediction, table.to_pylist()), key=lambda r: (r.decision_ts, r.coin, r.run_id)):
        ident = (r.coin, r.decision_ts, r.model_version)
        if (lo_decision is None or r.decision_ts > lo_decision) and r.decision_ts <= hi_decision \
                and ident not in seen:
            seen.add(ident)
            out.append(r)
    return out


def _watermark_key(horizon: str) -> str:
    return f"state/outcomes/horizon={horizon}.json"


def watermark(lake: Lake, horizon: str) -> int | None:
    """The as-of up to which this horizon's matured predictions have been recorded."""
    try:
        return int(lake.get_json(_watermark_key(horizon))["as_of_ms"])
    except LakeKeyNotFound:
        return None


def set_watermark(lake: Lake, horizon: str, as_of_ms: int, run_id: str) -> None:
    lake.put_json(_watermark_key(horizon), {"as_of_ms": int(as_of_ms), "run_id": run_id})


def outcome_key(horizon: str, as_of_ms: int, run_id: str) -> str:
    return f"outcomes/horizon={horizon}/date={day_of(as_of_ms)}/run_id={run_id}.parquet"


def write_outcomes(lake: Lake, horizon: str, as_of_ms: int, run_id: str, rows: list[Outcome]) -> str:
    key = outcome_key(horizon, as_of_ms, run_id)
    put_table(lake, key, _table(rows, OUTCOME_FIELDS), if_absent=True)
    return key


def no_outcome_key(horizon: str, as_of_ms: int, run_id: str) -> str:
    return f"outcomes/horizon={horizon}/date={day_of(as_of_ms)}/no_outcome/run_id={run_id}.parquet"


def write_no_outcomes(lake: Lake, horizon: str, as_of_ms: int, run_id: str, rows: list[NoOutcome]) -> str:
    """Matured predictions without an outcome, with the reason: beside the outcomes of the run that found them."""
    key = no_outcome_key(horizon, as_of_ms, run_id)
    put_table(lake, key, _table(rows, NO_OUTCOME_FIELDS), if_absent=True)
    return key


def read_outcomes(lake: Lake, keys: list[str]) -> list[Outcome]:
    table = read_tables(lake, keys)
    return [] if table is None else _records(Outcome, table.to_pylist())


# --- recent outcomes: the rolling state performance and drift read ---------------------------------------------


def _recent_key(horizon: str) -> str:
    return f"state/recent_outcomes/horizon={horizon}.parquet"


def recent_outcomes(lake: Lake, horizon: str) -> tuple[list[Outcome], dict]:
    """(outcomes sorted by decision time then coin, state metadata: total count, last absorbed run)."""
    try:
        table = get_table(lake, _recent_key(horizon))
    except LakeKeyNotFound:
        return [], {"total": 0, "last_run": None}
    meta = json.loads(table.schema.metadata[b"cst"])
    return _records(Outcome, table.to_pylist()), meta


def absorb(lake: Lake, horizon: str, run_id: str, new: list[Outcome], per_coin: int, overall: int) -> list[Outcome]:
    """Add a run's new outcomes to the rolling state (the last `per_coin` of each coin and the last `overall` of
    the horizon); a run already absorbed changes nothing. Returns the state's outcomes."""
    rows, meta = recent_outcomes(lake, horizon)
    if meta.get("last_run") == run_id:
        return rows
    rows = sorted(rows + new, key=lambda d: (d.decision_ts, d.coin))
    keep = np.zeros(len(rows), bool)
    keep[max(0, len(rows) - overall):] = True
    by_coin: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_coin.setdefault(r.coin, []).append(i)
    for idx in by_coin.values():
        keep[idx[-per_coin:]] = True
    rows = [r for r, k in zip(rows, keep, strict=True) if k]
    meta = {"total": int(meta.get("total", 0)) + len(new), "last_run": run_id}
    table = _table(rows, OUTCOME_FIELDS).replace_schema_metadata({"cst": json.dumps(meta)})
    put_table(lake, _recent_key(horizon), table)
    return rows


def performance_prefix(horizon: str, day: str | None = None) -> str:
    """The horizon's performance tables, or one date partition of them (`day` YYYY-MM-DD)."""
    return f"performance/horizon={horizon}/" + (f"date={day}/" if day else "")


def performance_key(horizon: str, as_of_ms: int, run_id: str) -> str:
    return performance_prefix(horizon, day_of(as_of_ms)) + f"run_id={run_id}.parquet"


def write_performance(lake: Lake, horizon: str, as_of_ms: int, run_id: str, rows: list[CoinPerformance]) -> str:
    key = performance_key(horizon, as_of_ms, run_id)
    put_table(lake, key, _table(rows, PERFORMANCE_FIELDS), if_absent=True)
    return key
