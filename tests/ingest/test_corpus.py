"""Every body in tests/ingest/corpus, replayed byte for byte on 127.0.0.1 through the real source adapters: good bodies
parse into the rows worked out by hand, bad ones end as a failure with its code and land nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np
import pytest

from services.ingest.logic import fetch_sources, land
from services.ingest.sources.exchange import ExchangeSource
from services.ingest.sources.market import (
    BlockchainSource,
    CoinMetricsSource,
    FearGreedSource,
)
from shared.settings import ExchangeSettings, Settings, SourceSettings
from shared.storage import LocalLake
from tests.ingest.fakes.config import fast_http
from tests.ingest.fakes.replay import Body, Replay

T = 1_704_067_200  # 2024-01-01T00:00Z, the corpus's clock
NOW_MS = (T + 2 * 3600 + 45 * 60) * 1000  # 02:45: the 02:00 candle is still forming
KRAKEN_MARKETS = {"/0/public/Assets": Body("kraken_assets.json"), "/0/public/AssetPairs": Body("kraken_assetpairs.json")}


def settings(url: str) -> Settings:
    return Settings(universe=["BTC"], timeframes=["1h"], http=fast_http(),
                    exchange=ExchangeSettings(base_url=url, history={"1h": timedelta(hours=6)}),
                    sources=SourceSettings(fear_greed_url=f"{url}/fng/", blockchain_url=f"{url}/charts",
                                           coinmetrics_url=f"{url}/v4", blockchain_metrics=["hash-rate"],
                                           coinmetrics_lookback=timedelta(days=3)))


def fetch(routes: dict[str, Body], make, tmp_path):
    with Replay(routes) as replay:
        cfg = settings(replay.url)
        fetched = asyncio.run(fetch_sources([make(cfg)], cfg))
    lake = LocalLake(tmp_path / "lake")
    landed, _ = land(lake, fetched)
    return fetched, landed


def kraken(include: str):
    return lambda cfg: ExchangeSource(cfg.exchange, ["BTC"], ["1h"], 1.0, now_ms=NOW_MS, include=(include,))


def only_series(fetched):
    assert not fetched.failures, fetched.failures
    [(_, result)] = fetched.results
    [series] = result.series
    return series


def test_kraken_ohlc_parses_the_closed_candles(tmp_path):
    fetched, landed = fetch({**KRAKEN_MARKETS, "/0/public/OHLC": Body("kraken_ohlc.json")}, kraken("ohlcv"), tmp_path)
    s = only_series(fetched)
    # Three entries; the 02:00 one is still forming at 02:45 and is not a candle yet.
    np.testing.assert_array_equal(s.ts, [T * 1000, (T + 3600) * 1000])
    np.testing.assert_array_equal(s.fields["close"], [42310.2, 42480.0])
    np.testing.assert_array_equal(s.fields["volume"], [12.51234567, 20.0])
    assert landed == 1


def test_kraken_trades_give_the_complete_hour_only(tmp_path):
    fetched, _ = fetch({**KRAKEN_MARKETS, "/0/public/Trades": Body("kraken_trades.json")}, kraken("trades"), tmp_path)
    s = only_series(fetched)
    # Covered from the first trade (00:10) to now (02:45): only 01:00-02:00 is complete. Its trades: 0.1 at
    # 42,310 (4,231) and a 2.5 at 42,320 sell (105,800, a whale at the 100,000 threshold).
    np.testing.assert_array_equal(s.ts, [(T + 3600) * 1000])
    assert s.fields["trades"].tolist() == [2] and s.fields["notional"].tolist() == pytest.approx([110_031.0])
    assert s.fields["whale_notional"].tolist() == pytest.approx([105_800.0])
    assert s.fields["whale_buy_notional"].tolist() == [0.0]


def test_kraken_depth_summary(tmp_path):
    fetched, _ = fetch({**KRAKEN_MARKETS, "/0/public/Depth": Body("kraken_depth.json")}, kraken("orderbook"), tmp_path)
    s = only_series(fetched)
    got = {k: float(v[0]) for k, v in s.fields.items()}
    assert got == pytest.approx({"best_bid": 42399.9, "best_ask": 42401.0, "spread_bps": 1.1 / 42400.45 * 1e4,
                                 "bid_depth_quote": 42399.9 * 2 + 42398 * 4,
                                 "ask_depth_quote": 42401 * 1.5 + 42402.5 * 0.25, "levels": 2})


def test_fear_greed_chart_and_coinmetrics_bodies_parse(tmp_path):
    fetched, _ = fetch({"/fng/": Body("fng.json")}, lambda c: FearGreedSource(c.sources), tmp_path)
    s = only_series(fetched)
    assert s.ts.tolist() == [(T + 86400) * 1000, T * 1000] and s.fields["value"].tolist() == [71.0, 65.0]
    fetched, _ = fetch({"/charts/hash-rate": Body("chart_hash_rate.json")}, lambda c: BlockchainSource(c.sources),
                       tmp_path / "b")
    s = only_series(fetched)
    assert s.fields["value"].tolist() == [512345678.9, 498765432.1]
    fetched, _ = fetch({"/v4/timeseries/asset-metrics": Body("coinmetrics_asset_metrics.json")},
                       lambda c: CoinMetricsSource(c.sources, ["ETH"], now_ms=NOW_MS), tmp_path / "c")
    [(_, result)] = fetched.results
    got = {s.symbol: s.fields["value"].tolist() for s in result.series}
    assert got == {"ETH.AdrActCnt": [401234.0, 398765.0], "ETH.TxCnt": [1012345.0, 987654.0]}


BAD = [
    # (routes, adapter, expected code, expected attempts (1: not retried), words the message must carry)
    ({**KRAKEN_MARKETS, "/0/public/OHLC": Body("kraken_error_200.json")}, kraken("ohlcv"), "exchange_error", 1,
     "Invalid arguments"),
    ({**KRAKEN_MARKETS, "/0/public/OHLC": Body("html_200.html")}, kraken("ohlcv"), "malformed_response", 1, "malformed"),
    ({**KRAKEN_MARKETS, "/0/public/OHLC": Body("truncated.json")}, kraken("ohlcv"), "malformed_response", 1, "malformed"),
    ({**KRAKEN_MARKETS, "/0/public/AssetPairs": Body("kraken_assetpairs_empty.json")}, kraken("ohlcv"),
     "malformed_response", 1, "empty market list"),
    ({**KRAKEN_MARKETS, "/0/public/OHLC": Body("server_error.html", 502)}, kraken("ohlcv"), "server_error", 3, "502"),
    ({**KRAKEN_MARKETS, "/0/public/OHLC": Body("rate_limited.txt", 429)}, kraken("ohlcv"), "rate_limited", 3, "429"),
    ({"/fng/": Body("fng_error.json")}, lambda c: FearGreedSource(c.sources), "malformed_response", 1, "Invalid limit"),
    ({"/fng/": Body("fng_empty.json")}, lambda c: FearGreedSource(c.sources), "no_data", 1, "empty"),
    ({"/fng/": Body("html_200.html")}, lambda c: FearGreedSource(c.sources), "malformed_response", 1, "malformed"),
    ({"/charts/hash-rate": Body("chart_error.json")}, lambda c: BlockchainSource(c.sources), "malformed_response", 1,
     "status error"),
    ({}, lambda c: BlockchainSource(c.sources), "http_404", 1, "404"),
    ({"/v4/timeseries/asset-metrics": Body("coinmetrics_400.json", 400)},
     lambda c: CoinMetricsSource(c.sources, ["ETH"], now_ms=NOW_MS), "http_400", 1, "Bad parameter 'metrics'"),
    ({"/v4/timeseries/asset-metrics": Body("coinmetrics_403.json", 403)},
     lambda c: CoinMetricsSource(c.sources, ["ETH"], now_ms=NOW_MS), "http_403", 1, "not available with supplied"),
    ({"/v4/timeseries/asset-metrics": Body("truncated.json")},
     lambda c: CoinMetricsSource(c.sources, ["ETH"], now_ms=NOW_MS), "malformed_response", 1, "malformed"),
    ({"/v4/timeseries/asset-metrics": Body("coinmetrics_empty.json")},
     lambda c: CoinMetricsSource(c.sources, ["ETH"], now_ms=NOW_MS), "no_data", 1, "none of"),
    ({"/api/v3/exchangeInfo": Body("binance_418.json", 418)},
     lambda c: ExchangeSource(c.exchange.model_copy(update={"id": "binance", "market_types": ["spot"]}), ["BTC"],
                              ["1h"], 1.0, now_ms=NOW_MS, include=("ohlcv",)), "ip_banned", 1, "IP banned until"),
]


@pytest.mark.parametrize(("routes", "make", "code", "attempts", "words"), BAD,
                         ids=[f"{c}-{'-'.join(b.file for b in r.values()) or 'no-route'}" for r, _, c, _, _ in BAD])
def test_every_bad_body_is_a_failure_with_its_code_and_lands_nothing(routes, make, code, attempts, words, tmp_path):
    fetched, landed = fetch(routes, make, tmp_path)
    assert fetched.results == [] and landed == 0
    [failure] = fetched.failures
    assert (failure.code, failure.attempts) == (code, attempts), failure.message
    assert words in failure.message
