"""A large file import parses in a process pool: the same raw records, series and staged parts as the in-process
parse, in the same order, for whole files and for the new lines of grown ones."""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path

import pytest

from services.ingest.sources import files
from services.orchestrator import runner
from shared import runs
from shared.contracts import iso_to_ms
from shared.datasets import get_series
from shared.pipeline.context import StepContext
from shared.settings import Settings
from shared.storage import LocalLake

AS_OF = [iso_to_ms(t) for t in ("2024-12-01T00:00:00Z", "2024-12-02T00:00:00Z")]
two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="with one core every import parses in process")


def _ingest(lake: LocalLake, src: Path, as_of: int = AS_OF[0]):
    cfg = Settings(_env_file=None)
    return runner.run_step(StepContext(cfg, lake), "ingest", runs.new_ref(cfg, str(src), as_of))


def _force_pool(mp: pytest.MonkeyPatch) -> list[str]:
    """From here on every import parses in the real pool (a threshold of 0 bytes); returns the series sent to it."""
    sent: list[str] = []

    class Counting(ProcessPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            sent.append("{layer}/{timeframe}/{symbol}".format(**fn.keywords))
            return super().submit(fn, *args, **kwargs)

    mp.setattr(files, "POOL_MIN_BYTES", 0)
    mp.setattr(files, "ProcessPoolExecutor", Counting)
    return sent


def _series(lake: LocalLake, keys: list[str]) -> list[tuple]:
    return [(s.key, s.source, s.ts.tolist(), {f: v.tolist() for f, v in s.fields.items()}, s.origin, s.parse_errors)
            for s in get_series(lake, keys)]


@two_cores
def test_the_pool_lands_and_stages_what_the_in_process_parse_does(shared_data, tmp_path):
    src = shutil.copytree(shared_data, tmp_path / "src")
    # Lines that cannot be parsed (they send their files down the line-by-line parse): a word for a price in the
    # middle of BTC's daily file, a byte that is not UTF-8 at the end of ETH's hourly one.
    daily = src / "ohlcv" / "1d" / "BTC-USD.csv"
    lines = daily.read_text().splitlines(keepends=True)
    daily.write_text("".join([*lines[:100], "2017-01-01,not-a-price,1,1,1,1\n", *lines[100:]]))
    with open(src / "ohlcv" / "1h" / "ETH-USD.csv", "ab") as f:
        f.write(b"2030-01-01 00:00:00+00:00,1\xff,1,1,1,1\n")
    # A series key two files share (Binance's BTCUSDT and a Yahoo BTC-USDT): staging keeps them in task order.
    shutil.copy(daily, src / "ohlcv" / "1d" / "BTC-USDT.csv")

    alone = LocalLake(tmp_path / "alone")
    in_process = _ingest(alone, src)
    pooled_lake = LocalLake(tmp_path / "pooled")
    with pytest.MonkeyPatch.context() as mp:
        sent = _force_pool(mp)
        pooled = _ingest(pooled_lake, src)

    read = files.FileSource(src)  # what a run reads: one venue's prices (Yahoo's here) and the market-wide layers
    read.keep_venue(None, Settings(_env_file=None).sources.venue_preference)
    specs = read.specs
    assert sorted(sent) == sorted(f"{s.layer}/{s.timeframe}/{s.symbol}" for s in specs)  # every file went to the pool
    assert pooled.failures == in_process.failures == []
    assert (pooled.landed, pooled.staged) == (in_process.landed, in_process.staged)
    assert sorted(pooled_lake.list("raw/")) == sorted(alone.list("raw/"))
    assert _series(pooled_lake, pooled.staged) == _series(alone, in_process.staged)
    errors = {s.key: [e.row for e in s.parse_errors] for s in get_series(pooled_lake, pooled.staged) if s.parse_errors}
    assert errors["ohlcv/1d/BTC-USD"] == ["2017-01-01,not-a-price,1,1,1,1"]
    assert errors["ohlcv/1h/ETH-USD"] == ["2030-01-01 00:00:00+00:00,1\udcff,1,1,1,1"]


@two_cores
def test_the_new_lines_of_a_grown_file_parse_in_the_pool_as_in_process(shared_data, tmp_path):
    src = tmp_path / "src"
    (src / "ohlcv" / "1h").mkdir(parents=True)
    for coin in ("BTC", "ETH"):
        shutil.copy(shared_data / "ohlcv" / "1h" / f"{coin}-USD.csv", src / "ohlcv" / "1h")
    hourly = src / "ohlcv" / "1h" / "BTC-USD.csv"
    lines = hourly.read_text().splitlines(keepends=True)
    hourly.write_text("".join(lines[:1200]))
    lake = LocalLake(tmp_path / "lake")
    _ingest(lake, src)  # in process: the first 1,199 rows
    with open(hourly, "a") as f:  # the tail brings a line that cannot be parsed, the file's line 1202
        f.write("".join([lines[1200], "not,a,row\n", *lines[1201:]]))

    with pytest.MonkeyPatch.context() as mp:
        sent = _force_pool(mp)
        grown = _ingest(lake, src, AS_OF[1])
    full = _ingest(LocalLake(tmp_path / "fresh"), src, AS_OF[1])

    assert sent == ["ohlcv/1h/BTC-USD"]  # only the grown file, and only its new lines (ETH is unchanged)
    assert grown.staged == full.staged
    [btc] = [s for s in get_series(lake, grown.staged) if s.key == "ohlcv/1h/BTC-USD"]
    assert [e.row for e in btc.parse_errors] == ["not,a,row"]
    assert btc.parse_errors[0].detail.startswith("line 1202:")


class ReversedPool(Executor):
    """Runs every parse in process, but finishes them last-sent first once all `expected` are sent (and each sender
    is waiting on its future): the worst order a real pool could finish them in."""

    def __init__(self, expected: int):
        self.expected, self.calls, self.finished = expected, [], []

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        self.calls.append((future, fn, args, kwargs))
        if len(self.calls) == self.expected:
            asyncio.get_running_loop().call_soon(self._finish)
        return future

    def _finish(self) -> None:
        for future, fn, args, kwargs in reversed(self.calls):
            future.set_result(fn(*args, **kwargs))
            self.finished.append(fn.args[0].splitlines()[1].split(",")[0])  # the first candle's open time


def test_series_come_back_in_task_order_whichever_parse_finishes_first(shared_data, tmp_path, monkeypatch):
    # Two files of one series key (two monthly dumps of Binance's BTCUSDT, without header as the spot dumps come):
    # the staged part holds them in task order, so a part staged from parses handed back in the order they
    # finished would differ from the in-process one.
    from services.ingest.sources.files import parse_time

    src = tmp_path / "src" / "spot" / "monthly" / "klines" / "BTCUSDT" / "1d"
    src.mkdir(parents=True)
    rows = (shared_data / "binance" / "BTCUSDT-1d.csv").read_text().splitlines()[1:60]
    for month in ("01", "02"):
        lines = [r.split(",") for r in rows if r.startswith(f"2018-{month}")]
        (src / f"BTCUSDT-1d-2018-{month}.csv").write_text("".join(
            ",".join([str(parse_time(r[0])), *r[1:6], str(parse_time(r[0]) + 86_399_999), *r[7:]]) + "\n"
            for r in lines))
    src = tmp_path / "src"
    in_process = _ingest(LocalLake(tmp_path / "alone"), src)

    pool = ReversedPool(expected=2)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(files, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(files, "ProcessPoolExecutor", lambda *a, **k: pool)
    lake = LocalLake(tmp_path / "pooled")
    pooled = _ingest(lake, src)

    assert pool.finished == ["1517443200000", "1514764800000"]  # February's file finished first
    assert pooled.staged == in_process.staged
    parts = get_series(lake, pooled.staged)
    assert [(s.key, int(s.ts[0]), len(s)) for s in parts] == [("ohlcv/1d/BTC-USDT", 1514764800000, 31),
                                                             ("ohlcv/1d/BTC-USDT", 1517443200000, 28)]
