"""The API's lake reads keep what they parsed and still see every run that lands: answers equal a fresh scan of the
files (local folder and S3), a new run, a new prediction file and a rewritten summary are seen at once, a kept
Parquet file is never parsed twice, callers get copies, and the caches stay within their bounds."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from services.api import reads
from services.predict import logbook
from shared.datasets import get_table
from shared.records import Prediction
from shared.runs import run_id_for, summary_key
from shared.storage import LocalLake

HOUR = 3_600_000
T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
COINS = ("BTC", "ETH", "XRP")


def land(lake, hour: int, coins=COINS, status: str = "complete") -> str:
    """One hourly run at T0 + `hour` hours: its 1h predictions (p_up tells the hour apart), a 24h prediction when it
    is the day's first run, and its summary."""
    as_of = T0 + hour * HOUR
    run_id = run_id_for("test", as_of)
    horizons = ["1h"] + (["24h"] if as_of % (24 * HOUR) == 0 else [])
    for h in horizons:
        logbook.write_predictions(lake, run_id, h, as_of, [
            Prediction(run_id=run_id, coin=c, horizon=h, as_of=str(as_of), decision_ts=as_of,
                       p_up=hour / 1000 + i / 10, p_low=0.0, p_high=1.0, direction=1, confidence=0.0, q10=0.0,
                       q50=0.0, q90=0.0, model_version="v1", actionable=False, shap_base=0.0, top_features="[]")
            for i, c in enumerate(coins)])
    lake.put_json(summary_key(run_id), {"run_id": run_id, "as_of": str(as_of), "status": status, "signals": []})
    return run_id


def settle(root: Path) -> None:
    """Age the files and folders of a local lake written within the settling time past it, as a lake between two
    runs is (what was settled before keeps its time)."""
    now = time.time_ns()
    past = now - 10 * LocalLake.SETTLE_NS
    for p in [root, *root.rglob("*")]:
        if now - p.stat().st_mtime_ns < LocalLake.SETTLE_NS:
            os.utime(p, ns=(past, past))


def scan_predictions(lake, horizons: list[str], coin: str | None = None, lo: int | None = None,
                     hi: int | None = None):
    """The answer without any kept state: every file of the horizons read and filtered."""
    rows = [r for h in horizons for k in lake.list(f"predictions/horizon={h}/") for r in get_table(lake, k).to_pylist()
            if (coin is None or r["coin"] == coin) and (lo is None or r["decision_ts"] >= lo)
            and (hi is None or r["decision_ts"] <= hi)]
    return [Prediction.model_validate(r) for r in sorted(rows, key=lambda r: (-r["decision_ts"], r["horizon"], r["coin"]))]


@pytest.fixture
def local(tmp_path):
    return LocalLake(tmp_path / "lake")


def test_answers_equal_a_fresh_scan_of_the_files(lake):
    ids = [land(lake, h) for h in range(30)]  # 1 May 00:00 to 2 May 05:00: two date partitions per horizon
    lake.put("runs/run_id=99990101T000000Z-started/ref.json", b"{}")  # a run still going: no summary yet
    if isinstance(lake, LocalLake):
        settle(lake.root)
    for _ in range(2):  # the first call parses, the second answers from what was kept
        assert reads.run_ids(lake) == ids[::-1]
        assert reads.latest_summary(lake).run_id == ids[-1]
        assert reads.predictions(lake, ["1h", "24h"]) == scan_predictions(lake, ["1h", "24h"])
        assert reads.predictions(lake, ["1h"], coin="ETH") == scan_predictions(lake, ["1h"], "ETH")
        lo, hi = T0 + 20 * HOUR, T0 + 26 * HOUR
        assert reads.predictions(lake, ["1h"], coin="XRP", since_ms=lo, until_ms=hi) == \
            scan_predictions(lake, ["1h"], "XRP", lo, hi)
        assert [r.run_id for r in reads.predictions(lake, ["1h"], run_id=ids[3])] == [ids[3]] * 3
        latest = reads.latest_per_horizon(lake, ["1h", "24h"], "BTC")
        assert latest["1h"].decision_ts == T0 + 29 * HOUR and latest["24h"].decision_ts == T0 + 24 * HOUR
        assert reads.latest_per_horizon(lake, ["1h"], "DOGE") == {}


def test_a_run_that_lands_is_seen_by_the_next_read(local):
    land(local, 0)
    settle(local.root)
    assert reads.latest_summary(local).run_id == run_id_for("test", T0)  # kept from here on
    assert reads.latest_per_horizon(local, ["1h"], "BTC")["1h"].decision_ts == T0
    newer = land(local, 1)  # same date partition, same runs/ folder: only the stamps tell
    assert reads.latest_summary(local).run_id == newer
    assert reads.run_ids(local)[0] == newer
    assert reads.latest_per_horizon(local, ["1h"], "BTC")["1h"].decision_ts == T0 + HOUR
    assert reads.predictions(local, ["1h"], coin="BTC")[0].run_id == newer
    settle(local.root)  # and once settled, the kept answers are the new ones
    assert reads.latest_summary(local).run_id == newer
    assert reads.predictions(local, ["1h"], coin="BTC", since_ms=T0, until_ms=T0 + HOUR)[0].run_id == newer


def test_a_second_write_within_one_clock_tick_is_never_hidden(local, monkeypatch):
    monkeypatch.setattr(LocalLake, "SETTLE_NS", 60 * 10**9)  # however slow this machine is, the writes stay fresh
    land(local, 0)
    runs = local.root / "runs"
    tick = runs.stat().st_mtime_ns
    assert reads.latest_summary(local).run_id == run_id_for("test", T0)  # read while the write is fresh
    newer = land(local, 1)
    os.utime(runs, ns=(tick, tick))  # the clock had not moved on: the folder's stamp is what the read saw
    assert reads.latest_summary(local).run_id == newer


def test_a_rewritten_summary_is_seen(local):
    run = land(local, 0, status="failed")
    settle(local.root)
    assert reads.summary(local, run).status == "failed"
    local.put_json(summary_key(run), {"run_id": run, "as_of": "x", "status": "complete", "signals": []})
    assert reads.summary(local, run).status == "complete"
    assert reads.latest_summary(local).status == "complete"


def test_a_summary_written_into_a_known_run_folder_is_seen(local):
    land(local, 0)
    started = run_id_for("test", T0 + HOUR)
    local.put(f"runs/run_id={started}/ref.json", b"{}")
    settle(local.root)
    assert reads.run_ids(local) == [run_id_for("test", T0)]
    land(local, 1)  # the run finishes: its folder was there already, runs/ itself does not change
    assert reads.run_ids(local) == [started, run_id_for("test", T0)]


def test_kept_files_are_parsed_once_and_a_new_file_alone_is_parsed(local, monkeypatch):
    for h in range(3):
        land(local, h)
    settle(local.root)
    parsed = []

    def counting(lake, key):
        parsed.append(key)
        return get_table(lake, key)

    monkeypatch.setattr(reads, "get_table", counting)
    reads.predictions(local, ["1h"], coin="BTC")
    assert len(parsed) == 3
    reads.predictions(local, ["1h"], coin="ETH")
    reads.latest_per_horizon(local, ["1h"], "XRP")
    assert len(parsed) == 3
    land(local, 3)
    settle(local.root)
    assert reads.predictions(local, ["1h"], coin="BTC")[0].decision_ts == T0 + 3 * HOUR
    assert len(parsed) == 4 and parsed[-1].endswith(f"run_id={run_id_for('test', T0 + 3 * HOUR)}.parquet")


def test_callers_get_copies(local):
    run = land(local, 0)
    settle(local.root)
    reads.summary(local, run).status = "changed by a caller"
    reads.latest_summary(local).signals.append("changed by a caller")
    reads.predictions(local, ["1h"], coin="BTC")[0].p_up = -1.0
    reads.latest_per_horizon(local, ["1h"], "BTC")["1h"].coin = "changed by a caller"
    assert reads.summary(local, run).status == "complete" and reads.latest_summary(local).signals == []
    assert reads.predictions(local, ["1h"], coin="BTC")[0].p_up == 0.0
    assert reads.latest_per_horizon(local, ["1h"], "BTC")["1h"].coin == "BTC"


def test_the_cache_keeps_its_bound_and_drops_the_least_recently_used(local):
    for i in range(4):
        local.put_json(f"docs/{i}.json", {"i": i})
    settle(local.root)
    cache = reads._LakeCache(capacity=5)
    built = []

    def get(i: int, weight: int = 2):
        return cache.get(local, "json", f"docs/{i}.json", lambda: built.append(i) or local.get_json(f"docs/{i}.json"),
                         lambda _v: weight)

    get(0), get(1), get(0), get(2)  # weights 2 + 2 + 2 > 5: the least recently used (1) goes
    assert built == [0, 1, 2] and get(0) == {"i": 0} and built == [0, 1, 2]
    get(1)
    assert built == [0, 1, 2, 1]
    get(3, weight=6)  # heavier than the whole cache: answered, never kept
    get(3, weight=6)
    assert built.count(3) == 2


def test_reads_from_many_threads_while_runs_land(local):
    land(local, 0)
    settle(local.root)
    errors, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                rows = reads.predictions(local, ["1h"], coin="ETH")
                assert [r.decision_ts for r in rows] == sorted((r.decision_ts for r in rows), reverse=True)
                assert reads.latest_summary(local) is not None
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for h in range(1, 6):
        land(local, h)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert reads.latest_summary(local).run_id == run_id_for("test", T0 + 5 * HOUR)
    assert len(reads.predictions(local, ["1h"], coin="ETH")) == 6


def test_a_fresh_write_is_not_settled_until_its_time_is_past(local):
    local.put("a/b.json", b"{}")
    fresh = local.stamp("a/b.json")
    assert fresh is not None and not fresh.settled and not local.stamp("a/").settled
    settle(local.root)
    aged = local.stamp("a/b.json")
    assert aged.settled and aged.identity != fresh.identity
    assert local.stamp("a/missing.json") is None and local.folders("a/") == [] and local.folders("") == ["a"]


def test_the_signals_page_never_calls_an_unjudged_horizon_certified_and_lists_horizons_in_order():
    from services.api.pages import signals_page
    from shared.records import Failure, RunSummary
    from shared.settings import Settings

    settings = Settings(_env_file=None)
    failed = RunSummary(run_id="r", as_of="2024-07-01T00:00:00Z", status="failed",
                        failures=[Failure(step="predict", item="1h", code="no_model", message="no CURRENT model")])
    page = signals_page(settings, failed)
    assert "did not complete (predict failed)" in page["nothing"] and "certified" in page["nothing"]
    assert "Every horizon is certified" not in page["nothing"]
    done = RunSummary(run_id="r", as_of="2024-07-01T00:00:00Z",
                      uncertified_horizons={"30d": "no demonstrated skill", "7d": "no demonstrated skill",
                                            "24h": "no demonstrated skill"},
                      horizons_without_model={"1h": "no CURRENT model"})
    page = signals_page(settings, done)
    assert [h for h, _ in page["why"]] == ["1h", "24h", "7d", "30d"] and page["nothing"] == ""


def test_every_page_says_how_old_its_data_is_and_whether_the_latest_run_finished():
    from services.api.pages import freshness
    from shared.records import RunSummary

    day = 86_400_000
    assert freshness(None, None, 2 * day)["stale"]
    done = RunSummary(run_id="r", as_of="2026-12-04T18:00:00Z")
    decided = T0 + 61 * day  # 2024-07-01T00:00Z
    fresh = freshness(done, decided, 2 * day, decided + 12 * HOUR)
    assert fresh == {"text": "newest forecasts made at 2024-07-01 00:00 UTC, 12 h ago", "stale": False,
                     "status": None, "run_id": "r"}
    # A run today on data that ends long ago is a run on old data: the page says its forecasts are old.
    old = freshness(done, decided, 2 * day, decided + 3 * day)
    assert old["stale"] and old["text"].endswith("3 days ago")
    failed = freshness(RunSummary(run_id="r", as_of="2024-07-01T00:00:00Z", status="failed"), decided, 2 * day,
                       decided + HOUR)
    assert failed["status"] == "failed" and not failed["stale"]


def test_a_hit_rate_is_shown_with_its_count_and_interval():
    from services.api.pages import mean_interval, rate
    import numpy as np

    # One outcome right: 100%, but the 95% Wilson interval runs from 21% (1 / (1 + z^2)) to 100%.
    assert rate(1, 1) == "100.0% (1/1; 95% 21–100%)"
    assert rate(0, 0) == "–"
    assert rate(60, 100) == "60.0% (60/100; 95% 50–69%)"
    assert mean_interval(np.array([0.2, 0.3])) == "0.250 (95% 0.152–0.348, n 2)"
    assert mean_interval(np.array([0.2])) == "0.200"
