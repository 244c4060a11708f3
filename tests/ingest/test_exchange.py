"""ExchangeSource against the loopback Kraken: OHLCV pagination, order-book summary, whale aggregation."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np
import pytest

from services.ingest.logic import Fetched, fetch_sources, land
from services.ingest.sources.base import FetchResult
from services.ingest.sources.exchange import ExchangeSource, aggregate_whales, book_summary
from shared.contracts import Series
from shared.errors import CstError
from shared.settings import Settings
from shared.storage import LocalLake
from tests.ingest.fakes.config import loopback_settings
from tests.ingest.fakes.kraken import NOW_S, T0, FakeKraken

HOUR = 3600
NOW_MS = NOW_S * 1000  # 2024-01-01T13:45Z: the 13:00 candle is still forming


def run(settings: Settings, coins: list[str], *include: str) -> Fetched:
    source = ExchangeSource(settings.exchange, coins, settings.timeframes, settings.http.timeout_s, now_ms=NOW_MS,
                            include=include)
    return asyncio.run(fetch_sources([source], settings))


def only_series(fetched: Fetched) -> tuple[FetchResult, Series]:
    assert not fetched.failures, fetched.failures
    [(_, result)] = fetched.results
    [series] = result.series
    return result, series


def test_ohlcv_pages_all_land_and_parse_in_order_without_the_forming_candle(kraken: FakeKraken, tmp_path):
    # 100 h of history at 24 candles a page: since = now - 100 h = Dec 28 09:45, so the first complete candle
    # opens Dec 28 10:00 and the last Jan 1 12:00 (13:00 is forming): 98 h apart, 99 candles, over 5 pages.
    settings = loopback_settings(kraken.url, coins=["BTC"], history=timedelta(hours=100))
    fetched = run(settings, ["BTC"], "ohlcv")
    result, series = only_series(fetched)

    # ccxt asks from one candle before since and the fake answers strictly after it; each later page from the last
    # candle of the previous one.
    first_page_since = NOW_S - 100 * HOUR - HOUR
    later_pages_since = [T0 - 3 * 24 * HOUR + 8 * HOUR + 24 * HOUR * i for i in range(4)]  # Dec 29 08:00, +1 d ...
    assert kraken.ohlc_since["BTC"] == [first_page_since, *later_pages_since]
    # Page 1 loses 09:00 (before since) to ccxt's filter; page 5 ends with the forming 13:00 candle.
    assert [len(r.body) for r in result.records] == [23, 24, 24, 24, 5]

    expected_ts = np.arange(T0 - 4 * 24 * HOUR + 10 * HOUR, T0 + 13 * HOUR, HOUR) * 1000
    assert len(expected_ts) == 99
    np.testing.assert_array_equal(series.ts, expected_ts)
    assert (T0 + 13 * HOUR) * 1000 not in series.ts
    closes = [kraken.level("BTC", HOUR, int(t) // 1000) for t in expected_ts]
    np.testing.assert_allclose(series.fields["close"], closes)
    # The fake opens each candle at the previous close.
    np.testing.assert_allclose(series.fields["open"][1:], series.fields["close"][:-1])
    assert series.symbol == "BTC-USD" and series.source == "kraken"

    lake = LocalLake(tmp_path / "lake")
    assert land(lake, fetched) == (5, 0)
    keys = lake.list("raw/")
    assert len(keys) == 5 and all(k.startswith("raw/source=kraken/symbol=BTC-USD/timeframe=1h/") for k in keys)
    landed_since = sorted(lake.get_json(k)["provenance"]["request"]["since"] for k in keys)
    assert landed_since == [NOW_MS - 100 * HOUR * 1000] + [(s + HOUR) * 1000 for s in later_pages_since]
    # Landing the same pages again writes nothing: the keys are content-addressed.
    assert land(lake, fetched) == (0, 5)


@pytest.mark.parametrize(
    ("levels", "bid_depth", "ask_depth", "kept"),
    [
        (25, 100.0 * 2 + 99.5 * 1 + 99.0 * 4, 100.5 * 1 + 101.0 * 3 + 102.0 * 0.5, 3),  # the fake's whole book
        (2, 100.0 * 2 + 99.5 * 1, 100.5 * 1 + 101.0 * 3, 2),  # Depth count=2: the third level never arrives
    ],
)
def test_order_book_summary_matches_the_hand_computed_book(kraken: FakeKraken, levels, bid_depth, ask_depth, kept):
    settings = loopback_settings(kraken.url, coins=["ETH"], orderbook_levels=levels)
    result, series = only_series(run(settings, ["ETH"], "orderbook"))
    summary = {k: float(v[0]) for k, v in series.fields.items()}
    assert summary == pytest.approx({
        "best_bid": 100.0,
        "best_ask": 100.5,
        "spread_bps": 0.5 / 100.25 * 1e4,  # 49.875 bps of the 100.25 mid
        "bid_depth_quote": bid_depth,
        "ask_depth_quote": ask_depth,
        "levels": kept,
    })
    assert series.key == "orderbook/snapshot/ETH-USD"
    assert len(result.records[0].body["bids"]) == kept


def test_book_summary_ignores_extra_columns_and_refuses_an_empty_side():
    # Kraken rows come back from ccxt as [price, amount, timestamp]; only the first two are the level.
    summary = book_summary([[10.0, 1.0, 1704116695], [9.0, 2.0, 1704116690]], [[11.0, 3.0, 1704116698]])
    assert summary["bid_depth_quote"] == 10.0 + 18.0
    assert summary["ask_depth_quote"] == 33.0
    assert summary["levels"] == 1.0
    with pytest.raises(CstError) as info:
        book_summary([[10.0, 1.0]], [])
    assert info.value.code == "empty_book"


def test_aggregate_whales_keeps_complete_buckets_only():
    # Hourly buckets from 00:00 (epoch 0), whale threshold 100 (quote). Coverage is [00:30, 03:10):
    #   00:30  price 10 x 20 = 200  buy   -> bucket 00:00 only half covered: dropped
    #   01:00  price 10 x 10 = 100  sell  -> whale exactly at the threshold
    #   01:59  price 5  x 2  = 10   buy
    #   02:15  price 50 x 3  = 150  buy   -> whale buy
    #   03:05  price 40 x 10 = 400  buy   -> bucket 03:00 incomplete at 03:10: dropped
    minute = 60_000
    ts = np.array([30, 60, 119, 135, 185]) * minute
    out = aggregate_whales(
        ts,
        np.array([10.0, 10.0, 5.0, 50.0, 40.0]),
        np.array([20.0, 10.0, 2.0, 3.0, 10.0]),
        np.array([True, False, True, True, True]),
        threshold=100.0,
        bucket_ms=60 * minute,
        covered_from_ms=30 * minute,
        covered_to_ms=190 * minute,
    )
    np.testing.assert_array_equal(out["ts"], [60 * minute, 120 * minute])
    np.testing.assert_array_equal(out["trades"], [2, 1])
    np.testing.assert_array_equal(out["notional"], [110, 150])
    np.testing.assert_array_equal(out["whale_trades"], [1, 1])
    np.testing.assert_array_equal(out["whale_notional"], [100, 150])
    np.testing.assert_array_equal(out["whale_buy_notional"], [0, 150])


def test_aggregate_whales_with_no_complete_bucket_is_empty():
    out = aggregate_whales(np.array([10]), np.array([1.0]), np.array([1.0]), np.array([True]), threshold=1.0,
                           bucket_ms=100, covered_from_ms=10, covered_to_ms=150)
    assert out["ts"].size == 0 and out["trades"].size == 0


def test_whale_series_from_the_fake_trades(kraken: FakeKraken):
    # The fake's trade list (fakes/kraken.py TRADES) with the default 100k threshold and 1h buckets at now 13:45.
    settings = loopback_settings(kraken.url, coins=["BTC"])
    assert settings.exchange.whale_notional == 100_000.0
    result, series = only_series(run(settings, ["BTC"], "trades"))
    np.testing.assert_array_equal(series.ts, [(T0 + 11 * HOUR) * 1000, (T0 + 12 * HOUR) * 1000])
    np.testing.assert_allclose(series.fields["trades"], [3, 2])
    np.testing.assert_allclose(series.fields["notional"], [275_000, 130_000])
    np.testing.assert_allclose(series.fields["whale_trades"], [2, 1])
    np.testing.assert_allclose(series.fields["whale_notional"], [250_000, 120_000])
    np.testing.assert_allclose(series.fields["whale_buy_notional"], [150_000, 0])
    # All seven trades are kept raw, sides mapped from Kraken's b/s.
    assert [t["side"] for t in result.records[0].body] == ["buy", "buy", "sell", "sell", "buy", "sell", "buy"]


def test_unknown_symbol_fails_that_task_only_without_retrying(kraken: FakeKraken):
    settings = loopback_settings(kraken.url, coins=["BTC", "NOPE"])
    fetched = run(settings, ["BTC", "NOPE"], "ohlcv")
    assert [(f.task, f.code, f.attempts) for f in fetched.failures] == [("ohlcv NOPE 1h", "unknown_symbol", 1)]
    assert [t.name for t, _ in fetched.results] == ["ohlcv BTC 1h"]
    # Markets are loaded once for both tasks.
    assert kraken.requests[("AssetPairs", "")] == 1
