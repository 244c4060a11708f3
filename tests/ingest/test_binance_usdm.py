"""Binance USDT-M perpetuals as a live source: the recorded bodies of its documentation parse into the rows worked out
by hand, a listed universe keeps only active USDT-settled perpetuals under their contract names, requests are paced
by Binance's request weight (not by count), and trades are asked for in the hour-long windows aggTrades allows."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.ingest.fetch import RateLimiter
from services.ingest.logic import exchange_coins, fetch_sources
from services.ingest.sources.exchange import ExchangeSource
from shared.settings import Settings
from tests.ingest.fakes.binance import NOW_MS, T0_MS, FakeBinanceUsdm, WeightLimit
from tests.ingest.fakes.config import fast_http
from tests.ingest.fakes.replay import Body, Replay

H = 3_600_000
MARKETS = {"/fapi/v1/exchangeInfo": Body("binance_fapi_exchangeinfo.json")}


def usdm(url: str, coins, **exchange) -> Settings:
    """Binance USDT-M on loopback through its profile (quote and settlement USDT, weighted pacing, 20 levels)."""
    return Settings(universe=coins, timeframes=["1h"], http=fast_http(),
                    exchange={"id": "binanceusdm", "base_url": url, "history": {"1h": "PT4H"}, **exchange})


def test_the_profile_of_binance_usdm_is_its_published_limits_and_a_value_set_explicitly_wins():
    s = Settings(exchange={"id": "binanceusdm"})
    assert (s.exchange.quote, s.exchange.settle, s.exchange.weighted) == ("USDT", "USDT", True)
    assert s.exchange.published_weight_per_min == 2400 and s.http.rate_per_s["exchange"] == 32.0  # 80% of 40/s
    assert s.exchange.orderbook_levels in (5, 10, 20, 50, 100, 500, 1000)  # the only depths Binance answers
    assert s.http.rate_per_s["fear_greed"] == Settings().http.rate_per_s["fear_greed"]  # the rest kept
    s = Settings(exchange={"id": "binanceusdm", "quote": "USDC", "settle": "USDC"}, http={"rate_per_s": {"exchange": 5}})
    assert (s.exchange.quote, s.exchange.settle, s.http.rate_per_s["exchange"]) == ("USDC", "USDC", 5.0)
    assert not Settings().exchange.weighted and Settings().exchange.settle is None  # Kraken spot unchanged


def test_recorded_bodies_parse_into_closed_candles_a_book_and_whale_buckets_under_the_contract_name():
    routes = {**MARKETS, "/fapi/v1/klines": Body("binance_fapi_klines.json"),
              "/fapi/v1/depth": Body("binance_fapi_depth.json"),
              "/fapi/v1/aggTrades": Body("binance_fapi_aggtrades.json")}
    with Replay(routes) as replay:
        settings = usdm(replay.url, ["BTC"], trades_coins=["BTC"])
        source = ExchangeSource(settings.exchange, ["BTC"], ["1h"], 5.0, now_ms=T0_MS + 13 * H + 45 * 60_000,
                                trades_since={"BTC": T0_MS + 11 * H})
        fetched = asyncio.run(fetch_sources([source], settings))
    assert fetched.failures == []
    series = {s.layer: s for _, r in fetched.results for s in r.series}
    candles = series["ohlcv"]
    assert candles.symbol == "BTC-USDT:USDT" and candles.source == "binanceusdm"
    # The four recorded klines; the 13:00 one is still forming at 13:45 and is not a candle yet.
    assert candles.ts.tolist() == [T0_MS + 10 * H, T0_MS + 11 * H, T0_MS + 12 * H]
    assert candles.fields["close"].tolist() == [42301.2, 42488.9, 42155.0]
    assert candles.fields["volume"].tolist() == [1523.412, 1897.006, 2210.78]
    book = series["orderbook"]
    # best bid 42170.30, best ask 42170.40: spread 0.1 / 42170.35 = 0.0237 bps; bid depth sums price x amount.
    assert book.fields["best_bid"][0] == 42170.3 and book.fields["best_ask"][0] == 42170.4
    assert book.fields["spread_bps"][0] == pytest.approx(0.1 / 42170.35 * 1e4)
    assert book.fields["bid_depth_quote"][0] == pytest.approx(42170.3 * 2.115 + 42170.2 * 0.04 + 42169.9 * 1.302)
    trades = series["trades"]
    # 11:00 bucket: 126,900 (3 x 42,300, buyer taker: a buy), 21,155.25 and 106,000 (sells): whales the first
    # and the last; whale buys 126,900. Every window up to 13:45 was asked: 11:00, 12:00, 13:00 buckets complete
    # (the recorded body answers the same trades for each window; they land once, by id).
    assert trades.symbol == "BTC-USDT:USDT"
    i = trades.ts.tolist().index(T0_MS + 11 * H)
    assert trades.fields["trades"][i] == 3 and trades.fields["whale_trades"][i] == 2
    assert trades.fields["whale_notional"][i] == pytest.approx(126_900 + 106_000)
    assert trades.fields["whale_buy_notional"][i] == pytest.approx(126_900)
    asked = [q for path, q in replay.requests if path == "/fapi/v1/aggTrades"]
    assert all(int(q["endTime"]) - int(q["startTime"]) < H for q in asked)
    assert [int(q["startTime"]) for q in asked] == [T0_MS + 11 * H, T0_MS + 12 * H, T0_MS + 13 * H]
    # Depth asked with a level count Binance answers.
    [(_, depth_query)] = [(p, q) for p, q in replay.requests if p == "/fapi/v1/depth"]
    assert depth_query["limit"] == "20"


def test_a_listed_universe_is_the_active_usdt_settled_perpetuals_by_contract_name():
    with Replay(MARKETS) as replay:
        coins, notes = exchange_coins(usdm(replay.url, "listed"))
        capped, capped_notes = exchange_coins(usdm(replay.url, "listed", max_symbols=1))
    # The recorded list also holds a quarterly delivery (BTCUSDT_240329), a USDC-settled perpetual and one settling.
    assert coins == ["1000PEPE", "BTC"] and notes == []
    assert capped == ["1000PEPE"]
    [note] = capped_notes
    assert note.code == "too_many_listed" and "BTC" in note.message and "max_symbols" in note.message


def test_an_unreadable_market_list_names_the_exchange_and_fails():
    with Replay({}) as replay:
        with pytest.raises(Exception) as caught:
            exchange_coins(usdm(replay.url, "listed"))
    assert "markets of binanceusdm could not be read" in str(caught.value)


def test_an_unknown_symbol_fails_that_coin_with_binances_own_message_and_the_others_land():
    with FakeBinanceUsdm(["BTC", "ETH"]) as fake:
        fake.missing.add("ETH")  # listed, then answering -1121 Invalid symbol
        settings = usdm(fake.url, ["BTC", "ETH"], trades_coins=[])
        source = ExchangeSource(settings.exchange, ["BTC", "ETH"], ["1h"], 5.0, now_ms=NOW_MS)
        fetched = asyncio.run(fetch_sources([source], settings))
    failed = {f.task: f for f in fetched.failures}
    assert set(failed) == {"ohlcv ETH 1h", "orderbook ETH"}
    assert all(f.code in ("unknown_symbol", "exchange_error") and "Invalid symbol" in f.message
               for f in failed.values())
    assert {t.name for t, _ in fetched.results} == {"ohlcv BTC 1h", "orderbook BTC"}


def run_at(rate_per_s: float, weighted: bool, limit: WeightLimit, coins: list[str]):
    with FakeBinanceUsdm(coins, weight_limit=limit) as fake:
        settings = usdm(fake.url, coins, trades_coins=[], weighted=weighted,
                        history={"1h": "P30D"}, ohlcv_page_limit=1000)
        settings.http.rate_per_s = {"exchange": rate_per_s}
        settings.http.max_retries = 0
        source = ExchangeSource(settings.exchange, coins, ["1h"], 5.0, now_ms=NOW_MS)
        fetched = asyncio.run(fetch_sources([source], settings))
        return fetched, fake.snapshot()


def test_requests_are_paced_by_binances_request_weight_and_counting_requests_would_be_refused():
    # Scaled: 2-second windows of 96 weight (Binance: a minute of 2,400; both 48 a second), the client at 80%.
    # 30 coins x (klines of 720 candles: weight 5 + depth of 20 levels: 2) + exchangeInfo = 211 weight, 61 requests.
    coins = [f"C{i:02d}" for i in range(30)]
    fetched, seen = run_at(38.4, True, WeightLimit(limit=96, window_s=2.0), coins)
    assert fetched.failures == [] and seen["weight_limit"].refused == 0
    assert sum(seen["weight"].values()) == 30 * 7 + 1
    assert max(seen["weight_limit"].per_window.values()) <= 96
    # The same rate counted in requests sends 38 requests (~270 weight) a second: Binance answers 429.
    fetched, seen = run_at(38.4, False, WeightLimit(limit=96, window_s=2.0), coins)
    assert seen["weight_limit"].refused > 0
    assert {f.code for f in fetched.failures} == {"rate_limited"}


def test_a_request_weighing_several_units_holds_back_the_next_start():
    limiter = RateLimiter(10.0, tolerance_s=0.0)  # 10 units a second
    assert limiter.book(0.0, units=5.0) == 0.0  # a request of weight 5 at 0
    assert limiter.book(0.0) == pytest.approx(0.5)
    assert limiter.book(0.0, units=2.0) == pytest.approx(0.6)
    assert limiter.book(0.0) == pytest.approx(0.8)


def test_trades_continue_window_by_window_to_the_present_and_a_quiet_window_is_not_the_end():
    coins = ["BTC"]
    with FakeBinanceUsdm(coins, trade_every_ms=2 * H) as fake:  # one trade every two hours: quiet windows
        settings = usdm(fake.url, coins, trades_coins=coins)
        since = NOW_MS - 6 * H
        source = ExchangeSource(settings.exchange, coins, ["1h"], 5.0, now_ms=NOW_MS, include=("trades",),
                                trades_since={"BTC": since})
        fetched = asyncio.run(fetch_sources([source], settings))
    assert fetched.failures == []
    # Six hour-long windows asked (a short page in a window is not "nothing newer"): covered to the present.
    assert fake.requests[("aggTrades", "BTC")] == 6
    assert source.coverage["BTC"] == (since, NOW_MS)
    [(_, result)] = fetched.results
    [series] = result.series
    # Complete buckets from 08:00 (the first boundary after 07:45) to 13:00 (open at 13:45): five, three trades.
    assert series.ts.tolist() == [T0_MS + h * H for h in range(8, 13)]
    assert np.sum(series.fields["trades"]) == 3
