"""The file layouts traders have, read by content: each written from real recorded rows in its own layout (values
unchanged) reads back as the same candles; a venue is its source and market type; a run reads one venue."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from services.ingest.sources.files import FileSource, discover, parse_time
from services.ingest.sources.layouts import SUPPORTED, recognize
from shared.errors import CstError

ROWS = 48


def _rows(path: Path, n: int = ROWS) -> tuple[str, list[list[str]]]:
    lines = path.read_text().splitlines()
    return lines[0], [line.split(",") for line in lines[1:n + 1]]


@pytest.fixture(scope="module")
def futures(wide_data) -> tuple[str, list[list[str]]]:
    path = wide_data / "binance-futures" / "1h" / "BTCUSDT.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return _rows(path)


@pytest.fixture(scope="module")
def spot(shared_data) -> tuple[str, list[list[str]]]:
    return _rows(shared_data / "binance" / "BTCUSDT-1d.csv")


def _read(root: Path, venue: str | None = None):
    source = FileSource(root)
    if venue:
        source.keep_venue(venue, [])
    from services.ingest.fetch import Fetcher  # noqa: F401  (the reader's signature)

    results = asyncio.run(_fetch(source))
    return source, {s.key: s for s in results}


async def _fetch(source: FileSource):
    out = []
    for task in source.tasks():
        out += (await task.run(None)).series
    await source.close()
    return out


def _candles(rows: list[list[str]], t: int, o: int, h: int, low: int, c: int, v: int) -> dict[str, np.ndarray]:
    return {"ts": np.array([parse_time(r[t]) for r in rows]), "open": np.array([float(r[o]) for r in rows]),
            "high": np.array([float(r[h]) for r in rows]), "low": np.array([float(r[low]) for r in rows]),
            "close": np.array([float(r[c]) for r in rows]), "volume": np.array([float(r[v]) for r in rows])}


def _same(series, want: dict[str, np.ndarray]) -> None:
    assert np.array_equal(series.ts, want["ts"])
    for f in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(series.fields[f], want[f]), f


def test_the_binance_kline_export_is_a_perpetual_under_its_contract_name(tmp_path, futures):
    header, rows = futures
    (tmp_path / "binance-futures" / "1h").mkdir(parents=True)
    (tmp_path / "binance-futures" / "1h" / "BTCUSDT.csv").write_text("\n".join([header, *map(",".join, rows)]) + "\n")
    # The same export without a timeframe folder: the bar length is read from open and close times.
    (tmp_path / "binance-futures" / "1000PEPEUSDT.csv").write_text("\n".join([header, *map(",".join, rows)]) + "\n")
    source, got = _read(tmp_path)
    assert sorted(got) == ["ohlcv/1h/1000PEPE-USDT:USDT", "ohlcv/1h/BTC-USDT:USDT"]
    s = got["ohlcv/1h/BTC-USDT:USDT"]
    assert (s.source, source.specs[0].venue) == ("binance", "binance-perp")
    _same(s, _candles(rows, 0, 1, 2, 3, 4, 5))
    assert np.array_equal(s.fields["quote_volume"], [float(r[6]) for r in rows])
    assert np.array_equal(s.fields["trades"], [float(r[7]) for r in rows])


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("packed", [False, True])
def test_binance_public_dumps_with_and_without_header_plain_or_zipped(tmp_path, spot, header, packed):
    _, rows = spot  # datetime,open,high,low,close,volume,close_time,quote,trades,taker base,taker quote,ignore
    # The dump writes epoch times; spot files from 2025 in microseconds: the same instants.
    lines = [",".join([str(parse_time(r[0]) * 1000), *r[1:6], str(parse_time(r[0]) + 86_399_999), *r[7:]])
             for r in rows]
    if header:
        lines.insert(0, "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
                        "taker_buy_quote_volume,ignore")
    name = "BTCUSDT-1d-2018-01"
    folder = tmp_path / "data" / "spot" / "monthly" / "klines" / "BTCUSDT" / "1d"
    folder.mkdir(parents=True)
    text = "\n".join(lines) + "\n"
    if packed:
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as z:
            z.writestr(f"{name}.csv", text)
    else:
        (folder / f"{name}.csv").write_text(text)
    _, got = _read(tmp_path)
    s = got["ohlcv/1d/BTC-USDT"]
    _same(s, _candles(rows, 0, 1, 2, 3, 4, 5))
    assert np.array_equal(s.fields["taker_buy_volume"], [float(r[9]) for r in rows])
    assert s.parse_errors == []


def test_a_dump_under_futures_um_is_the_perpetual(tmp_path, spot):
    _, rows = spot
    folder = tmp_path / "futures" / "um" / "daily" / "klines" / "BTCUSDT" / "1d"
    folder.mkdir(parents=True)
    body = "\n".join(",".join([str(parse_time(r[0])), *r[1:6], str(parse_time(r[0]) + 86_399_999), *r[7:]])
                     for r in rows)
    (folder / "BTCUSDT-1d-2018-01-01.csv").write_text(body + "\n")
    _, got = _read(tmp_path)
    assert list(got) == ["ohlcv/1d/BTC-USDT:USDT"]


def test_the_bybit_export(tmp_path, futures):
    _, rows = futures
    lines = ["timestamp,open,high,low,close,volume,turnover", *(",".join([*r[:6], r[6]]) for r in rows)]
    (tmp_path / "bybit" / "linear").mkdir(parents=True)
    (tmp_path / "bybit" / "linear" / "BTCUSDT.csv").write_text("\n".join(lines) + "\n")
    source, got = _read(tmp_path)
    s = got["ohlcv/1h/BTC-USDT:USDT"]
    assert (s.source, source.specs[0].venue) == ("bybit", "bybit-perp")
    _same(s, _candles(rows, 0, 1, 2, 3, 4, 5))
    assert np.array_equal(s.fields["quote_volume"], [float(r[6]) for r in rows])


@pytest.mark.parametrize("kind", ["json", "feather"])
def test_a_freqtrade_data_directory_spot_and_futures(tmp_path, futures, spot, kind):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.feather as feather

    data = tmp_path / "user_data" / "data" / "binance"
    (data / "futures").mkdir(parents=True)
    for (_, rows), path in ((spot, data / f"BTC_USDT-1d.{kind}"), (futures, data / "futures" / f"BTC_USDT_USDT-1h-futures.{kind}")):
        candles = [[parse_time(r[0]), *map(float, r[1:6])] for r in rows]
        if kind == "json":
            path.write_text(json.dumps(candles))
        else:
            cols = list(zip(*candles, strict=True))
            table = pa.table({"date": pa.array(cols[0], pa.timestamp("ms", tz="UTC")),
                              **{f: pa.array(cols[i + 1], pa.float64())
                                 for i, f in enumerate(("open", "high", "low", "close", "volume"))}})
            feather.write_feather(table, path)
    # freqtrade's other candle types are not traded prices: named, not read.
    (data / "futures" / f"BTC_USDT_USDT-8h-funding_rate.{kind}").write_bytes(b"[]")
    source, got = _read(tmp_path)
    assert "funding_rate candles" in source.ignored[f"user_data/data/binance/futures/BTC_USDT_USDT-8h-funding_rate.{kind}"]
    _same(got["ohlcv/1d/BTC-USDT"], _candles(spot[1], 0, 1, 2, 3, 4, 5))
    _same(got["ohlcv/1h/BTC-USDT:USDT"], _candles(futures[1], 0, 1, 2, 3, 4, 5))
    assert sorted(source.venues()) == ["binance", "binance-perp"]


def test_an_unknown_layout_is_reported_with_the_supported_ones(tmp_path):
    (tmp_path / "prices.csv").write_text("time,price\n1,2\n")
    (tmp_path / "notes.txt").write_text("hello")
    specs, ignored = discover(tmp_path)
    assert specs == [] and SUPPORTED in ignored["prices.csv"] and "not a data file" in ignored["notes.txt"]
    assert "contract name" in recognize(tmp_path, _write(tmp_path / "XYZ.csv",
                                                          "timestamp,open,high,low,close,volume,turnover\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_recorded_folder_reads_whole_and_a_run_reads_one_venue(wide_data):
    shared_data = wide_data
    specs, ignored = discover(shared_data)
    assert set(ignored) == {"README.md"}, ignored
    venues = {s.venue for s in specs if s.layer == "ohlcv"}
    assert {"yahoo", "binance"} <= venues
    source = FileSource(shared_data)
    assert source.keep_venue(None, ["yahoo", "binance-perp"]) == "yahoo"
    assert {s.venue for s in source.specs if s.layer == "ohlcv"} == {"yahoo"}
    assert any(s.layer == "sentiment" for s in source.specs)  # market-wide layers belong to every venue
    assert "CST_SOURCES__VENUE=binance" in source.ignored["binance/BTCUSDT-1d.csv"]
    with pytest.raises(CstError) as err:
        FileSource(shared_data).keep_venue("kraken", [])
    assert err.value.code == "unknown_venue" and "yahoo" in err.value.message


def test_a_zip_read_is_the_text_inside(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ETHUSDT-1h-2024-01.csv", "1704067200000,1,2,0.5,1.5,10,1704070799999,15,3,4,6,0\n")
    (tmp_path / "ETHUSDT-1h-2024-01.zip").write_bytes(buf.getvalue())
    _, got = _read(tmp_path)
    assert got["ohlcv/1h/ETH-USDT"].fields["close"].tolist() == [1.5]
