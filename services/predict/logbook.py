"""The prediction, outcome and performance logs: Parquet datasets partitioned by horizon and date, a handful of files per run.

A prediction's identity is (horizon, coin, decision time, model version): a decision time already logged for a
horizon is never predicted again, whichever run asks. Outcome recording reads only the predictions that can
mature since the last recorded as-of (a watermark per horizon), and performance and drift read a small rolling
state of recent outcomes instead of the whole history, so a run's cost does not grow with the log.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa

from shared.datasets import day_of, get_table, keys_in_days, put_table, read_tables
from shared.errors import LakeKeyNotFound
from shared.storage import Lake

_RUN = re.compile(r"/run_id=([^/]+)\.parquet$")

PREDICTION_FIELDS = {
    "run_id": pa.string(), "coin": pa.string(), "horizon": pa.string(), "as_of": pa.string(),
    "decision_ts": pa.int64(), "p_up": pa.float64(), "p_low": pa.float64(), "p_high": pa.float64(),
    "direction": pa.int64(), "confidence": pa.float64(), "q10": pa.float64(), "q50": pa.float64(),
    "q90": pa.float64(), "model_version": pa.string(), "actionable": pa.bool_(), "shap_base": pa.float64(),
    "top_features": pa.string(),
    # The 80% return range served (q10-q90 conformalized by recent outcomes); null until outcomes exist.
    "range_low": pa.float64(), "range_high": pa.float64(),
    # The model's verdict on its own skill out of sample: "no demonstrated skill" means the base rate is served.
    "skill": pa.string(),
}
OUTCOME_FIELDS = {
    "run_id": pa.string(), "coin": pa.string(), "horizon": pa.string(), "decision_ts": pa.int64(),
    "matured_ts": pa.int64(), "recorded_as_of": pa.string(), "recorded_by": pa.string(),
    "realized_return": pa.float64(), "direction": pa.int64(), "hit": pa.bool_(), "p_up": pa.float64(),
    "confidence": pa.float64(), "actionable": pa.bool_(), "model_version": pa.string(),
    "q10": pa.float64(), "q90": pa.float64(), "range_low": pa.float64(), "range_high": pa.float64(),
    "in_range": pa.bool_(),
}


def _table(rows: list[dict], fields: dict[str, pa.DataType]) -> pa.Table:
    return pa.table({k: pa.array([r.get(k) for r in rows], t) for k, t in fields.items()})


def prediction_key(horizon: str, decision_ts: int, run_id: str) -> str:
    return f"predictions/horizon={horizon}/date={day_of(decision_ts)}/run_id={run_id}.parquet"


def logged_decision(lake: Lake, horizon: str, decision_ts: int) -> tuple[str, str, list[dict]] | None:
    """(run id, key, rows) of the run that logged this horizon's decision time, or None when none did."""
    for key in lake.list(f"predictions/horizon={horizon}/date={day_of(decision_ts)}/"):
        rows = [r for r in get_table(lake, key).to_pylist() if r["decision_ts"] == decision_ts]
        if rows:
            return _RUN.search(key)[1], key, rows
    return None


def write_predictions(lake: Lake, run_id: str, horizon: str, decision_ts: int, rows: list[dict]) -> str:
    key = prediction_key(horizon, decision_ts, run_id)
    put_table(lake, key, _table(rows, PREDICTION_FIELDS), if_absent=True)
    return key


def read_predictions(lake: Lake, key: str, decision_ts: int | None = None) -> list[dict]:
    rows = get_table(lake, key).to_pylist()
    return [r for r in rows if decision_ts is None or r["decision_ts"] == decision_ts]


def maturing(lake: Lake, horizon: str, lo_decision: int | None, hi_decision: int) -> list[dict]:
    """Predictions with lo < decision_ts <= hi (lo None: from the start of the log), one per identity."""
    if lo_decision is None:
        keys = [k for k in lake.list(f"predictions/horizon={horizon}/date=")
                if k.endswith(".parquet") and k.split("/date=")[1][:10] <= day_of(hi_decision)]
    else:
        keys = keys_in_days(lake, f"predictions/horizon={horizon}/", lo_decision + 1, hi_decision)
    table = read_tables(lake, keys)
    if table is None:
        return []
    seen: set[tuple] = set()
    out = []
    for r in sorted(table.to_pylist(), key=lambda r: (r["decision_ts"], r["coin"], r["run_id"])):
        ident = (r["coin"], r["decision_ts"], r["model_version"])
        if (lo_decision is None or r["decision_ts"] > lo_decision) and r["decision_ts"] <= hi_decision \
                and ident not in seen:
            seen.add(ident)
            out.append(r)
    return out


def watermark(lake: Lake, horizon: str) -> int | None:
    """The as-of up to which this horizon's matured predictions have been recorded."""
    try:
        return int(lake.get_json(f"state/outcomes/horizon={horizon}.json")["as_of_ms"])
    except LakeKeyNotFound:
        return None


def set_watermark(lake: Lake, horizon: str, as_of_ms: int, run_id: str) -> None:
    lake.put_json(f"state/outcomes/horizon={horizon}.json", {"as_of_ms": int(as_of_ms), "run_id": run_id})


def outcome_key(horizon: str, as_of_ms: int, run_id: str) -> str:
    return f"outcomes/horizon={horizon}/date={day_of(as_of_ms)}/run_id={run_id}.parquet"


def write_outcomes(lake: Lake, horizon: str, as_of_ms: int, run_id: str, rows: list[dict]) -> str:
    key = outcome_key(horizon, as_of_ms, run_id)
    put_table(lake, key, _table(rows, OUTCOME_FIELDS), if_absent=True)
    return key


def read_outcomes(lake: Lake, keys: list[str]) -> list[dict]:
    table = read_tables(lake, keys)
    return [] if table is None else table.to_pylist()


# --- recent outcomes: the rolling state performance and drift read ---------------------------------------------


def _recent_key(horizon: str) -> str:
    return f"state/recent_outcomes/horizon={horizon}.parquet"


def recent_outcomes(lake: Lake, horizon: str) -> tuple[list[dict], dict]:
    """(outcomes sorted by decision time then coin, state metadata: total count, last absorbed run)."""
    try:
        table = get_table(lake, _recent_key(horizon))
    except LakeKeyNotFound:
        return [], {"total": 0, "last_run": None}
    meta = json.loads(table.schema.metadata[b"cst"])
    return table.to_pylist(), meta


def absorb(lake: Lake, horizon: str, run_id: str, new: list[dict], per_coin: int, overall: int) -> list[dict]:
    """Add a run's new outcomes to the rolling state (the last `per_coin` of each coin and the last `overall` of
    the horizon); a run already absorbed changes nothing. Returns the state's outcomes."""
    rows, meta = recent_outcomes(lake, horizon)
    if meta.get("last_run") == run_id:
        return rows
    rows = sorted(rows + new, key=lambda d: (d["decision_ts"], d["coin"]))
    keep = np.zeros(len(rows), bool)
    keep[max(0, len(rows) - overall):] = True
    by_coin: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_coin.setdefault(r["coin"], []).append(i)
    for idx in by_coin.values():
        keep[idx[-per_coin:]] = True
    rows = [r for r, k in zip(rows, keep, strict=True) if k]
    meta = {"total": int(meta.get("total", 0)) + len(new), "last_run": run_id}
    table = _table(rows, OUTCOME_FIELDS).replace_schema_metadata({"cst": json.dumps(meta)})
    put_table(lake, _recent_key(horizon), table)
    return rows


def performance_key(horizon: str, as_of_ms: int, run_id: str) -> str:
    return f"performance/horizon={horizon}/date={day_of(as_of_ms)}/run_id={run_id}.parquet"


def write_performance(lake: Lake, horizon: str, as_of_ms: int, run_id: str, rows: list[dict]) -> str:
    key = performance_key(horizon, as_of_ms, run_id)
    put_table(lake, key, pa.Table.from_pylist(rows), if_absent=True)
    return key
