"""Exchange data through ccxt (any exchange, default kraken): paginated OHLCV, L2 order books, whale trades."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlparse

import numpy as np

from services.ingest.fetch import Fetcher, pace_request
from services.ingest.sources.base import FetchResult, FetchTask, Source
from shared.contracts import Provenance, RawRecord, Series, utcnow
from shared.errors import CstError
from shared.settings import ExchangeSettings, timeframe_ms

RATE_KEY = "exchange"

log = logging.getLogger(__name__)


def _strict_json_hook(exchange: Any):
    """ccxt hands a 2xx body it cannot parse to the caller as text, which parses as *no data*: refuse it."""
    import ccxt

    def on_rest_response(code, reason, url, method, headers, body, request_headers, request_body):
        body = body.strip() if isinstance(body, str) else body
        if 200 <= int(code) < 300:
            try:
                json.loads(body)
            except (TypeError, ValueError):
                raise ccxt.BadResponse(f"{exchange.id} {method} {url.split('?')[0]}: malformed JSON ({len(body or '')} bytes)") from None
        return body

    return on_rest_response


def make_exchange(settings: ExchangeSettings, timeout_s: float) -> Any:
    import ccxt.async_support as ccxt_async

    try:
        cls = getattr(ccxt_async, settings.id)
    except AttributeError:
        raise CstError("unknown_exchange", f"ccxt has no exchange {settings.id!r}") from None
    config: dict[str, Any] = {
        # ccxt runs its throttle hook before every HTTP request it makes; the hook is replaced below by the
        # Fetcher's pacing, so ccxt's own token bucket never runs and an operation that makes several requests
        # (load_markets) still spaces each of them.
        "enableRateLimit": True,
        "timeout": int(timeout_s * 1000),
    }
    if settings.api_key is not None:
        config["apiKey"] = settings.api_key.get_secret_value()
    if settings.api_secret is not None:
        config["secret"] = settings.api_secret.get_secret_value()
    exchange = cls(config)
    if settings.base_url:
        exchange.urls["api"] = redirect_urls(exchange.urls.get("api"), settings.base_url)
    if settings.market_types is not None:
        # Which market lists load_markets asks for (e.g. Binance spot only, never its futures hosts).
        exchange.options["fetchMarkets"] = {"types": list(settings.market_types)}
    exchange.on_rest_response = _strict_json_hook(exchange)
    exchange.throttle = _weighted_pacing if settings.weighted else _fetcher_pacing
    return exchange


async def _fetcher_pacing(cost: float | None = None) -> None:
    """ccxt's per-request throttle hook: the Fetcher's rate limit, every request alike (Kraken counts calls; its
    default rate sits under its costliest endpoint's pace, see settings)."""
    await pace_request()


async def _weighted_pacing(cost: float | None = None) -> None:
    """ccxt's per-request throttle hook for an API that limits request weight: each request spends ccxt's cost
    for its endpoint and parameters (for Binance's USDT-M API, the published weight: klines by limit, depth by
    levels)."""
    await pace_request(float(cost) if cost else 1.0)


def redirect_urls(urls: Any, base_url: str) -> Any:
    """Every API URL of an exchange (nested in any shape) moved to `base_url`, each keeping its own path, so a
    proxy or a loopback fake receives every endpoint the exchange would call."""
    if isinstance(urls, dict):
        return {k: redirect_urls(v, base_url) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        return base_url.rstrip("/") + urlparse(urls).path
    return urls


def aggregate_whales(
    ts: np.ndarray,
    price: np.ndarray,
    amount: np.ndarray,
    is_buy: np.ndarray,
    *,
    threshold: float,
    bucket_ms: int,
    covered_from_ms: int,
    covered_to_ms: int,
) -> dict[str, np.ndarray]:
    """Per complete bucket: trade count and notional, and count / notional of trades at or above threshold.

    Only buckets wholly inside [covered_from, covered_to) are returned: a bucket the fetched trades only
    partly cover would under-count, and an under-count is an invented value.
    """
    first = -(-covered_from_ms // bucket_ms) * bucket_ms  # first bucket boundary at or after coverage start
    last = (covered_to_ms // bucket_ms) * bucket_ms  # end of the last complete bucket
    n = max(0, (last - first) // bucket_ms)
    starts = first + bucket_ms * np.arange(n, dtype=np.int64)
    out = {k: np.zeros(n) for k in ("trades", "notional", "whale_trades", "whale_notional", "whale_buy_notional")}
    if n == 0 or ts.size == 0:
        return {"ts": starts, **out}
    inside = (ts >= first) & (ts < last)
    b = ((ts[inside] - first) // bucket_ms).astype(np.int64)
    notional = (price * amount)[inside]
    whale = notional >= threshold
    buy = is_buy[inside]
    out["trades"] = np.bincount(b, minlength=n).astype(float)
    out["notional"] = np.bincount(b, weights=notional, minlength=n)
    out["whale_trades"] = np.bincount(b, weights=whale.astype(float), minlength=n)
    out["whale_notional"] = np.bincount(b, weights=notional * whale, minlength=n)
    out["whale_buy_notional"] = np.bincount(b, weights=notional * (whale & buy), minlength=n)
    return {"ts": starts, **out}


def listed_coins(markets: dict[str, dict], settings: ExchangeSettings) -> list[str]:
    """The base coins of the active markets in `settings.quote`: perpetual swaps settled in `settings.settle` when it
    is set, spot pairs otherwise (a contract keeps its name: 1000PEPE, not PEPE)."""
    found = set()
    for m in markets.values():
        if m.get("active") is False or m.get("quote") != settings.quote:
            continue
        if settings.settle:
            if m.get("swap") and m.get("settle") == settings.settle:
                found.add(m["base"])
        elif m.get("spot"):
            found.add(m["base"])
    return sorted(found)


def _levels(rows: list) -> np.ndarray:
    """[price, amount, ...] rows -> (n, 2) floats; ccxt appends a timestamp or order count for some exchanges."""
    return np.asarray([row[:2] for row in rows], dtype=float).reshape(-1, 2)


def book_summary(bids: list, asks: list) -> dict[str, float]:
    """Top-of-book and depth (quote currency) over the levels fetched."""
    b, a = _levels(bids), _levels(asks)
    if not len(b) or not len(a):
        raise CstError("empty_book", "order book has no bids or no asks")
    best_bid, best_ask = b[0, 0], a[0, 0]
    mid = (best_bid + best_ask) / 2
    return {
        "best_bid": best_bid,
        "best_ask": best_ask,
        "spread_bps": (best_ask - best_bid) / mid * 1e4,
        "bid_depth_quote": float((b[:, 0] * b[:, 1]).sum()),
        "ask_depth_quote": float((a[:, 0] * a[:, 1]).sum()),
        "levels": float(min(len(b), len(a))),
    }


class ExchangeSource(Source):
    name = "exchange"

    def __init__(self, settings: ExchangeSettings, coins: list[str], timeframes: list[str], timeout_s: float,
                 *, now_ms: int | None = None, include: tuple[str, ...] = ("ohlcv", "orderbook", "trades"),
                 trades_since: dict[str, int] | None = None):
        self.settings = settings
        # Per coin, where the trades already collected end (ms): this run's trades continue from there.
        self.trades_since = dict(trades_since or {})
        # Per coin, the span this run's fetched trades cover completely: [from, to) in ms.
        self.coverage: dict[str, tuple[int, int]] = {}
        self.coins = coins
        self.timeframes = timeframes
        self.include = include
        self.exchange = make_exchange(settings, timeout_s)
        self.now_ms = now_ms
        self._markets_lock = asyncio.Lock()
        # A failed market load fails every later task at once instead of re-asking a dead host per coin.
        self._markets_error: Exception | None = None
        url = settings.base_url or str((self.exchange.urls.get("api") or {}).get("public", ""))
        self.host = urlparse(url).netloc or self.exchange.id

    @property
    def source_id(self) -> str:
        return self.settings.id

    def symbol(self, coin: str) -> str:
        """ccxt's symbol: BTC/USD (spot), 1000PEPE/USDT:USDT (a perpetual settled in USDT)."""
        settle = f":{self.settings.settle}" if self.settings.settle else ""
        return f"{coin}/{self.settings.quote}{settle}"

    def series_symbol(self, coin: str) -> str:
        """The lake's symbol: BTC-USD, 1000PEPE-USDT:USDT (the perpetual's contract name and settlement, as the
        file layouts name it, so its venue is `<exchange>-perp`)."""
        return self.symbol(coin).replace("/", "-")

    async def listed(self, fetcher: Fetcher) -> list[str]:
        """The coins of every active market in the quote (and settlement) currency the exchange lists, sorted."""
        await self._markets(fetcher)
        return listed_coins(self.exchange.markets, self.settings)

    def tasks(self) -> list[FetchTask]:
        tasks: list[FetchTask] = []
        for coin in self.coins:
            if "ohlcv" in self.include:
                for tf in self.timeframes:
                    tasks.append(self._task(f"ohlcv {coin} {tf}", self._ohlcv_run(coin, tf)))
            if "orderbook" in self.include:
                tasks.append(self._task(f"orderbook {coin}", self._book_run(coin)))
            if "trades" in self.include and (self.settings.trades_coins is None or coin in self.settings.trades_coins):
                tasks.append(self._task(f"trades {coin}", self._trades_run(coin)))
        return tasks

    def _task(self, name: str, run) -> FetchTask:
        return FetchTask(self.source_id, name, run, host=self.host)

    async def _markets(self, fetcher: Fetcher) -> None:
        async with self._markets_lock:
            if self._markets_error is not None:
                raise self._markets_error
            if not self.exchange.markets:
                self._check_rate(fetcher)
                try:
                    await self.call(fetcher, "load_markets", self.exchange.load_markets)
                    if not self.exchange.markets:
                        # An exchange always lists markets: an empty list is a broken answer, not "no such coin".
                        raise CstError("malformed_response", f"{self.source_id} answered an empty market list")
                except Exception as exc:
                    self._markets_error = exc
                    raise

    async def call(self, fetcher: Fetcher, what: str, op):
        """One exchange operation under the exchange's rate (by request weight where the exchange counts it)."""
        return await fetcher.call(RATE_KEY, what, op, weighted=self.settings.weighted)

    def _check_rate(self, fetcher: Fetcher) -> None:
        """Warn when the configured rate is above what ccxt publishes for the exchange (its `rateLimit`, the
        milliseconds between two requests): the exchange would answer rate-limit errors. Skipped with `base_url`:
        that host (a proxy, a fake) has limits of its own."""
        published_s = float(getattr(self.exchange, "rateLimit", 0) or 0) / 1000
        interval = fetcher.limiter(RATE_KEY).interval
        if self.settings.weighted and self.settings.published_weight_per_min:
            published_s = 60.0 / self.settings.published_weight_per_min
            if self.settings.base_url is None and interval < published_s:
                log.warning("http.rate_per_s[%r] = %.1f weight/s is above %s's published %d request weight a minute: "
                            "expect rate-limit errors", RATE_KEY, 1 / interval if interval else float("inf"),
                            self.exchange.id, self.settings.published_weight_per_min)
            return
        if self.settings.base_url is None and published_s > 0 and interval < published_s:
            log.warning("http.rate_per_s[%r] = %.2f/s is above %s's published limit of %.2f requests/s (ccxt "
                        "rateLimit %d ms): expect rate-limit errors", RATE_KEY, 1 / interval if interval else
                        float("inf"), self.exchange.id, 1 / published_s, self.exchange.rateLimit)

    def _record(self, layer: str, coin: str, tf: str, request: dict, body: Any) -> RawRecord:
        return RawRecord(
            provenance=Provenance(source=self.source_id, request=request, fetched_at=utcnow()),
            layer=layer,  # type: ignore[arg-type]
            symbol=self.series_symbol(coin),
            timeframe=tf,
            body=body,
        )

    def _ohlcv_run(self, coin: str, tf: str):
        async def run(fetcher: Fetcher) -> FetchResult:
            await self._markets(fetcher)
            step = timeframe_ms(tf)
            now = self.now_ms if self.now_ms is not None else int(utcnow().timestamp() * 1000)
            lookback = self.settings.history.get(tf)
            since = now - int(lookback.total_seconds() * 1000) if lookback else None
            symbol = self.symbol(coin)
            records: list[RawRecord] = []
            candles: list[list] = []
            # Page forward until the exchange returns nothing new; every page lands only if all succeed.
            for _ in range(10_000):
                page = await self.ohlcv_page(fetcher, coin, tf, since)
                fresh = [c for c in page if not candles or c[0] > candles[-1][0]]
                if not fresh:
                    break
                records.append(self.ohlcv_record(coin, tf, since, page))
                candles.extend(fresh)
                since = fresh[-1][0] + step
                # A candle opening at `since` or later is still forming at `now` and would be dropped below: asking
                # for it would spend a request of the rate limit on nothing (a whole request per series and run
                # when a page ends at the last closed candle).
                if since + step > now:
                    break
            if not candles:
                raise CstError("no_data", f"{self.source_id} returned no {tf} candles for {symbol}")
            # The candle still forming at fetch time is not a candle yet.
            done = [c for c in candles if c[0] + step <= now]
            return FetchResult(records, [self.candle_series(coin, tf, done)])

        return run

    async def ohlcv_page(self, fetcher: Fetcher, coin: str, tf: str, since: int | None) -> list:
        """One page of candles from `since` (the exchange's own page size at most)."""
        symbol = self.symbol(coin)
        page = await self.call(
            fetcher, f"ohlcv {symbol} {tf} since={since}",
            lambda: self.exchange.fetch_ohlcv(symbol, tf, since=since, limit=self.settings.ohlcv_page_limit),
        )
        if not isinstance(page, list):
            raise CstError("malformed_response", f"fetchOHLCV {symbol} returned {type(page).__name__}")
        return page

    def ohlcv_record(self, coin: str, tf: str, since: int | None, page: list) -> RawRecord:
        request = {"method": "fetchOHLCV", "symbol": self.symbol(coin), "timeframe": tf, "since": since,
                   "limit": self.settings.ohlcv_page_limit}
        return self._record("ohlcv", coin, tf, request, page)

    def candle_series(self, coin: str, tf: str, candles: list[list]) -> Series:
        """Closed candles as delivered ([ts, open, high, low, close, volume]) -> a Series; a null stays NaN."""
        arr = np.asarray([[np.nan if v is None else v for v in c[:6]] for c in candles], dtype=float).reshape(-1, 6)
        return Series("ohlcv", tf, self.series_symbol(coin), self.source_id, arr[:, 0].astype(np.int64),
                      {"open": arr[:, 1], "high": arr[:, 2], "low": arr[:, 3], "close": arr[:, 4], "volume": arr[:, 5]},
                      [json.dumps(c) for c in candles])

    def _book_run(self, coin: str):
        async def run(fetcher: Fetcher) -> FetchResult:
            await self._markets(fetcher)
            symbol, levels = self.symbol(coin), self.settings.orderbook_levels
            book = await self.call(fetcher, f"orderbook {symbol}",
                                      lambda: self.exchange.fetch_order_book(symbol, limit=levels))
            bids, asks = book.get("bids", [])[:levels], book.get("asks", [])[:levels]
            body = {"bids": bids, "asks": asks, "timestamp": book.get("timestamp"), "nonce": book.get("nonce")}
            record = self._record("orderbook", coin, "snapshot",
                                  {"method": "fetchOrderBook", "symbol": symbol, "limit": levels}, body)
            observed = book.get("timestamp") or int(record.provenance.fetched_at.timestamp() * 1000)
            summary = book_summary(bids, asks)
            series = Series("orderbook", "snapshot", self.series_symbol(coin), self.source_id,
                            np.asarray([self.book_time(observed)], dtype=np.int64),
                            {k: np.asarray([v]) for k, v in summary.items()}, [json.dumps(body)[:2000]])
            return FetchResult([record], [series])

        return run

    def book_time(self, observed_ms: int) -> int:
        """A snapshot observed within the run's window (a few seconds or minutes after its as-of, as every live
        fetch is) is the book as of the run; one observed later stays at its own time (after the as-of)."""
        if self.now_ms is not None and 0 <= observed_ms - self.now_ms <= self.settings.orderbook_window_s * 1000:
            return self.now_ms
        return int(observed_ms)

    def _trades_run(self, coin: str):
        async def run(fetcher: Fetcher) -> FetchResult:
            await self._markets(fetcher)
            symbol, limit = self.symbol(coin), self.settings.trades_limit
            since = self.trades_since.get(coin)
            records: list[RawRecord] = []
            trades: list[dict] = []
            seen: set = set()
            cursor, caught_up = since, since is None  # without a start, the latest page reaches the present
            clock = self.now_ms if self.now_ms is not None else int(utcnow().timestamp() * 1000)
            span = int(self.settings.trades_span.total_seconds() * 1000) if self.settings.trades_span else None
            reached = since  # every trade before this is fetched
            for _ in range(self.settings.trades_max_pages):
                # An exchange that answers at most `span` after `since` (Binance's aggTrades: an hour) is asked for
                # that window explicitly, so a short page means "nothing more in this window", not "caught up".
                until = min(cursor + span - 1, clock) if span is not None and cursor is not None else None
                params = {"until": until} if until is not None else {}
                page = await self.call(
                    fetcher, f"trades {symbol} since={cursor}",
                    lambda c=cursor, p=params: self.exchange.fetch_trades(symbol, since=c, limit=limit, params=p))
                body = [{k: t.get(k) for k in ("id", "timestamp", "price", "amount", "cost", "side")} for t in page]
                records.append(self._record("trades", coin, self.settings.whale_timeframe,
                                            {"method": "fetchTrades", "symbol": symbol, "since": cursor,
                                             "limit": limit, **params}, body))
                fresh = [t for t in body if (t["id"], t["timestamp"]) not in seen]
                seen.update((t["id"], t["timestamp"]) for t in fresh)
                trades.extend(fresh)
                if since is None:
                    break
                if len(page) < limit:
                    if until is None or until + 1 >= clock:
                        caught_up = True  # the exchange has nothing newer: the coverage reaches the fetch
                        break
                    cursor = reached = until + 1  # the window is exhausted: the next one starts after it
                    continue
                if not fresh:
                    break
                cursor = fresh[-1]["timestamp"]
            fetched = int(records[-1].provenance.fetched_at.timestamp() * 1000)
            now = self.now_ms if self.now_ms is not None else fetched
            if not trades and since is None:
                raise CstError("no_data", f"{self.source_id} returned no trades for {symbol}")
            ts = np.asarray([t["timestamp"] for t in trades], dtype=np.int64)
            # Covered: from where the collected trades ended (or the first trade fetched) to the present when the
            # exchange had nothing newer, else only to the last trade fetched. Hours outside are not observed.
            covered = (since if since is not None else int(ts.min()),
                       now if caught_up else max(int(ts.max()) if ts.size else since, reached or since))
            self.coverage[coin] = covered
            agg = aggregate_whales(
                ts,
                np.asarray([t["price"] for t in trades], dtype=float),
                np.asarray([t["amount"] for t in trades], dtype=float),
                np.asarray([t["side"] == "buy" for t in trades], dtype=bool),
                threshold=self.settings.whale_notional,
                bucket_ms=timeframe_ms(self.settings.whale_timeframe),
                covered_from_ms=covered[0],
                covered_to_ms=covered[1],
            )
            series = Series("trades", self.settings.whale_timeframe, self.series_symbol(coin), self.source_id,
                            agg.pop("ts"), agg, [])
            return FetchResult(records, [series])

        return run

    async def close(self) -> None:
        await self.exchange.close()
