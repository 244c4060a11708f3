"""What the real APIs do on the wire, and how cst answers: every endpoint redirected, bans, empty market lists,
trades collected only where they were observed, order books as of the run."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np
import pytest
from aiohttp import web

from services.ingest.fetch import Fetcher, classify
from services.ingest.logic import fetch_sources
from services.ingest.sources.exchange import (
    ExchangeSource,
    make_exchange,
    redirect_urls,
)
from shared.errors import FetchError
from shared.settings import ExchangeSettings
from tests.ingest.fakes.config import fast_http, loopback_settings
from tests.ingest.fakes.kraken import NOW_S, T0, FakeKraken
from tests.ingest.fakes.server import LoopbackServer

HOUR, MINUTE = 3600, 60


def test_base_url_moves_every_endpoint_of_any_exchange_keeping_its_path():
    exchange = make_exchange(ExchangeSettings(id="binance", base_url="http://127.0.0.1:9/proxy",
                                              market_types=["spot"]), 1.0)
    try:
        flat = []

        def walk(v):
            if isinstance(v, dict):
                for x in v.values():
                    walk(x)
            elif isinstance(v, str):
                flat.append(v)

        walk(exchange.urls["api"])
        assert flat and all(u.startswith("http://127.0.0.1:9/proxy/") for u in flat)
        # Spot and futures keep their own paths, so the fake sees which endpoint was asked.
        assert exchange.urls["api"]["public"] == "http://127.0.0.1:9/proxy/api/v3"
        assert exchange.urls["api"]["fapiPublic"] == "http://127.0.0.1:9/proxy/fapi/v1"
        # Market loading asks for spot markets only: never Binance's futures hosts.
        assert exchange.options["fetchMarkets"] == {"types": ["spot"]}
    finally:
        asyncio.run(exchange.close())
    assert redirect_urls({"a": ["x"], "b": 3, "c": "https://api.kraken.com"}, "http://h") == \
        {"a": ["x"], "b": 3, "c": "http://h"}


def test_an_empty_market_list_is_a_broken_answer_not_an_unknown_symbol(kraken: FakeKraken):
    kraken.asset_pairs = {}
    settings = loopback_settings(kraken.url, coins=["BTC"])
    source = ExchangeSource(settings.exchange, ["BTC"], ["1h"], 1.0, now_ms=NOW_S * 1000, include=("ohlcv",))
    fetched = asyncio.run(fetch_sources([source], settings))
    [failure] = fetched.failures
    assert failure.code == "malformed_response" and "empty market list" in failure.message


def test_418_is_a_ban_never_retried_and_its_reason_is_kept():
    calls = []

    async def banned(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.json_response({"code": -1003, "msg": "Way too many requests; IP banned until 1730000000000."},
                                 status=418)

    app = web.Application()
    app.router.add_get("/api/v3/klines", banned)
    with LoopbackServer(app) as server:
        async def go():
            fetcher = Fetcher(fast_http())
            try:
                return await fetcher.get_json("exchange", f"{server.url}/api/v3/klines")
            finally:
                await fetcher.close()

        with pytest.raises(FetchError) as info:
            asyncio.run(go())
    assert info.value.code == "ip_banned" and info.value.attempts == 1 and len(calls) == 1
    assert "IP banned until 1730000000000" in info.value.message
    import ccxt

    # ccxt words the same answer as DDoSProtection: still a ban, not a rate limit to retry.
    verdict = classify(ccxt.DDoSProtection("binance GET https://api.binance.com/api/v3/klines 418 I'm a teapot {}"))
    assert (verdict.code, verdict.retryable) == ("ip_banned", False)
    assert classify(ccxt.DDoSProtection("binance GET https://x 429 Too Many Requests")).code == "rate_limited"


def trades_every_minute(start_s: int, end_s: int) -> list[list]:
    return [["100.0", "1.0", t, "b", "m", "", i] for i, t in enumerate(range(start_s, end_s + 1, MINUTE))]


def test_trades_covering_two_and_a_half_hours_give_two_complete_hours_and_no_zero_filled_ones(kraken: FakeKraken):
    # The exchange holds a trade every minute from 10:30 to 16:00; the collected trades end at 10:30, and this run
    # may fetch two pages of 76: 10:30 .. 11:45, then from that trade on (it comes again and counts once)
    # 11:45 .. 13:00; more exist. Now is 20:00.
    kraken.trades = trades_every_minute(T0 + 10 * HOUR + 30 * MINUTE, T0 + 16 * HOUR)
    settings = loopback_settings(kraken.url, coins=["BTC"], trades_limit=76, trades_max_pages=2)
    now_ms = (T0 + 20 * HOUR) * 1000
    source = ExchangeSource(settings.exchange, ["BTC"], ["1h"], 1.0, now_ms=now_ms, include=("trades",),
                            trades_since={"BTC": (T0 + 10 * HOUR + 30 * MINUTE) * 1000})
    fetched = asyncio.run(fetch_sources([source], settings))
    assert not fetched.failures
    [(_, result)] = fetched.results
    [series] = result.series
    # Only the hours the fetched trades cover completely: 11:00 and 12:00. 13:00 .. 19:00 were not observed.
    np.testing.assert_array_equal(series.ts, [(T0 + 11 * HOUR) * 1000, (T0 + 12 * HOUR) * 1000])
    np.testing.assert_array_equal(series.fields["trades"], [60, 60])
    assert source.coverage["BTC"] == ((T0 + 10 * HOUR + 30 * MINUTE) * 1000, (T0 + 13 * HOUR) * 1000)
    # It continued from the collected end, then from its own last trade.
    assert kraken.trades_since == [str(T0 + 10 * HOUR + 30 * MINUTE), str(T0 + 11 * HOUR + 45 * MINUTE)]


def test_trades_caught_up_to_the_present_cover_up_to_the_fetch(kraken: FakeKraken):
    kraken.trades = trades_every_minute(T0 + 10 * HOUR, T0 + 12 * HOUR + 20 * MINUTE)
    settings = loopback_settings(kraken.url, coins=["BTC"], trades_limit=1000)
    now_ms = (T0 + 13 * HOUR + 10 * MINUTE) * 1000
    source = ExchangeSource(settings.exchange, ["BTC"], ["1h"], 1.0, now_ms=now_ms, include=("trades",),
                            trades_since={"BTC": (T0 + 10 * HOUR) * 1000})
    [(_, result)] = asyncio.run(fetch_sources([source], settings)).results
    [series] = result.series
    # The exchange answered a short page: nothing newer exists, so 12:00 .. 13:00 (20 trades, then none) is
    # observed; 13:00 is still open at 13:10.
    np.testing.assert_array_equal(series.ts, [(T0 + h * HOUR) * 1000 for h in (10, 11, 12)])
    np.testing.assert_array_equal(series.fields["trades"], [60, 60, 21])


def test_an_order_book_fetched_within_the_run_is_the_book_as_of_the_run(kraken: FakeKraken):
    settings = loopback_settings(kraken.url, coins=["ETH"])
    as_of = int(__import__("time").time() * 1000) - 2_000  # the run started two seconds ago
    source = ExchangeSource(settings.exchange, ["ETH"], ["1h"], 1.0, now_ms=as_of, include=("orderbook",))
    [(_, result)] = asyncio.run(fetch_sources([source], settings)).results
    assert result.series[0].ts.tolist() == [as_of]
    # Observed long after the as-of (a replayed or stuck fetch): it keeps its own time and the gate leaves it out.
    late = as_of + int(settings.exchange.orderbook_window_s * 1000) + 1
    assert source.book_time(late) == late and source.book_time(as_of + 1000) == as_of
    assert timedelta(seconds=settings.exchange.orderbook_window_s) == timedelta(hours=1)
