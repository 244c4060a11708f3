"""What the API reads from the lake: runs and their summaries, predictions by horizon and date, models, quality."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from services.predict import logbook
from shared.datasets import get_table
from shared.errors import LakeKeyNotFound
from shared.pipeline import quality_key, summary_key
from shared.registry import current_version, model_prefix
from shared.storage import Lake

RUN_ID = re.compile(r"^[0-9A-Za-z.\-_]{1,80}$")
_RUN_IN_KEY = re.compile(r"runs/run_id=([^/]+)/summary\.json$")
_VERSION_IN_KEY = re.compile(r"models/horizon=[^/]+/version=([^/]+)/metadata\.json$")


def run_ids(lake: Lake) -> list[str]:
    """Runs that wrote a summary, newest first (run ids begin with their as-of)."""
    ids = [m[1] for k in lake.list("runs/") if (m := _RUN_IN_KEY.search(k))]
    return sorted(ids, reverse=True)


def summary(lake: Lake, run_id: str) -> dict | None:
    try:
        return lake.get_json(summary_key(run_id))
    except LakeKeyNotFound:
        return None


def latest_summary(lake: Lake) -> dict | None:
    for run_id in run_ids(lake):
        doc = summary(lake, run_id)
        if doc is not None:
            return doc
    return None


def _days(since_ms: int | None, until_ms: int | None) -> list[str] | None:
    if since_ms is None or until_ms is None:
        return None
    start = datetime.fromtimestamp(since_ms / 1000, UTC).date()
    end = datetime.fromtimestamp(until_ms / 1000, UTC).date()
    if (end - start).days > 366:
        return None
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def predictions(lake: Lake, horizons: list[str], *, coin: str | None = None, run_id: str | None = None,
                since_ms: int | None = None, until_ms: int | None = None) -> list[dict]:
    """Logged predictions matching the filters, newest decision first. A time range reads only its date partitions."""
    days = _days(since_ms, until_ms)
    rows: list[dict] = []
    for h in horizons:
        if days is not None:
            keys = [k for d in days for k in lake.list(f"predictions/horizon={h}/date={d}/")]
        else:
            keys = lake.list(f"predictions/horizon={h}/")
        for key in keys:
            if run_id is not None and not key.endswith(f"/run_id={run_id}.parquet"):
                continue
            for r in get_table(lake, key).to_pylist():
                if coin is not None and r["coin"] != coin:
                    continue
                if since_ms is not None and r["decision_ts"] < since_ms:
                    continue
                if until_ms is not None and r["decision_ts"] > until_ms:
                    continue
                rows.append(r)
    rows.sort(key=lambda r: (-r["decision_ts"], r["horizon"], r["coin"]))
    return rows


def latest_per_horizon(lake: Lake, horizons: list[str], coin: str) -> dict[str, dict]:
    """A coin's most recent logged prediction per horizon (the newest date partition that holds it)."""
    out = {}
    for h in horizons:
        for day in sorted({k.split("/date=")[1].split("/")[0] for k in lake.list(f"predictions/horizon={h}/")},
                          reverse=True):
            found = [r for k in lake.list(f"predictions/horizon={h}/date={day}/")
                     for r in logbook.read_predictions(lake, k) if r["coin"] == coin]
            if found:
                out[h] = max(found, key=lambda r: r["decision_ts"])
                break
    return out


def models(lake: Lake, horizons: list[str]) -> dict[str, dict]:
    out = {}
    for h in horizons:
        versions = sorted((m[1] for k in lake.list(f"models/horizon={h}/") if (m := _VERSION_IN_KEY.search(k))),
                          reverse=True)
        current = current_version(lake, h)
        entries = []
        for v in versions:
            meta = lake.get_json(model_prefix(h, v) + "metadata.json")
            metrics = meta.get("metrics", {})
            entries.append({"version": v, "current": v == current, "created": meta.get("created"),
                            "training_window": meta.get("training_window"), "skill": meta.get("skill"),
                            "brier_skill": metrics.get("brier_skill"), "ece": metrics.get("ece"),
                            "gate": meta.get("gate")})
        out[h] = {"current": current, "versions": entries}
    return out


def model_card(lake: Lake, horizon: str, version: str) -> str | None:
    try:
        return lake.get(model_prefix(horizon, version) + "MODEL_CARD.md").decode()
    except LakeKeyNotFound:
        return None


def quality(lake: Lake) -> dict | None:
    for run_id in run_ids(lake):
        try:
            return {"run_id": run_id, **lake.get_json(quality_key(run_id))}
        except LakeKeyNotFound:
            continue
    return None


# --- what the dashboard pages read beyond the JSON endpoints ------------------------------------------------------


def _dates(lake: Lake, prefix: str) -> list[str]:
    """The date partitions under a dataset prefix, newest first."""
    return sorted({k.split("/date=")[1].split("/")[0] for k in lake.list(prefix) if "/date=" in k}, reverse=True)


def latest_rows(lake: Lake, horizon: str) -> list[dict]:
    """Every coin's prediction at the newest logged decision time of a horizon, by coin."""
    for day in _dates(lake, f"predictions/horizon={horizon}/"):
        rows = [r for k in lake.list(f"predictions/horizon={horizon}/date={day}/")
                for r in logbook.read_predictions(lake, k)]
        if rows:
            newest = max(r["decision_ts"] for r in rows)
            return sorted((r for r in rows if r["decision_ts"] == newest), key=lambda r: r["coin"])
    return []


def coin_outcomes(lake: Lake, horizon: str, coin: str) -> list[dict]:
    """A coin's recent matured predictions of a horizon (the rolling state performance reads), oldest first."""
    rows, _meta = logbook.recent_outcomes(lake, horizon)
    return [r for r in rows if r["coin"] == coin]


def latest_performance(lake: Lake, horizon: str) -> list[dict]:
    """The newest per-coin performance table of a horizon (hit rate, Brier, ECE over each coin's recent window)."""
    for day in _dates(lake, f"performance/horizon={horizon}/"):
        keys = sorted(lake.list(f"performance/horizon={horizon}/date={day}/"))
        if keys:
            return sorted(get_table(lake, keys[-1]).to_pylist(), key=lambda r: r["coin"])
    return []


def recent_outcomes(lake: Lake, horizon: str) -> list[dict]:
    return logbook.recent_outcomes(lake, horizon)[0]
