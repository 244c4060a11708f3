"""A fake of Kraken's public REST API (the endpoints ccxt's kraken calls), with per-coin faults, request counts and
Kraken's per-IP rate limit."""

from __future__ import annotations

import asyncio
import functools
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.ingest.fakes.server import LoopbackServer, Pauses

# Every body below follows https://docs.kraken.com/api-reference/market-data/: {"error": [], "result": {...}}.

# 2024-01-01T00:00:00Z; the hand-written trades and book are placed around it.
T0 = 1_704_067_200
# The fake's default "now" (13:45 that day): the 13:00 hourly candle and trade bucket are still open then.
NOW_S = T0 + 13 * 3600 + 45 * 60

# Kraken's own ids for the two pairs whose legacy X/Z-prefixed names ccxt must map back to BTC / ETH and USD.
# Any other coin gets the plain form ("SOLUSD", base "SOL"), which is what Kraken uses for newer listings.
KNOWN_PAIRS: dict[str, dict[str, str]] = {
    "BTC": {"id": "XXBTZUSD", "base": "XXBT", "altname": "XBTUSD", "wsname": "XBT/USD"},
    "ETH": {"id": "XETHZUSD", "base": "XETH", "altname": "ETHUSD", "wsname": "ETH/USD"},
}

# /0/public/Assets (fetch_currencies, called by load_markets first). ccxt maps an X/Z-prefixed id to its
# altname (XXBT -> XBT -> BTC, ZUSD -> USD) and takes the amount precision from "decimals".
ASSETS: dict[str, dict[str, Any]] = {
    "ZUSD": {"aclass": "currency", "altname": "USD", "decimals": 4, "display_decimals": 2, "status": "enabled"},
    "XXBT": {"aclass": "currency", "altname": "XBT", "decimals": 10, "display_decimals": 5, "status": "enabled"},
    "XETH": {"aclass": "currency", "altname": "ETH", "decimals": 10, "display_decimals": 5, "status": "enabled"},
}


def asset_entry(coin: str) -> dict[str, Any]:
    """An Assets entry for a plain-named coin: 8 decimals (amount step 1e-8), enabled."""
    return {"aclass": "currency", "altname": coin, "decimals": 8, "display_decimals": 5, "status": "enabled"}


def pair_entry(base: str, altname: str, wsname: str) -> dict[str, Any]:
    """An AssetPairs entry quoted in USD, with the fields ccxt's fetch_markets reads."""
    return {
        "altname": altname,  # pair name without X/Z prefixes
        "wsname": wsname,  # ccxt also looks the Depth result up under this name
        "aclass_base": "currency",
        "base": base,  # an Assets id
        "aclass_quote": "currency",
        "quote": "ZUSD",  # an Assets id: USD
        "lot": "unit",
        "cost_decimals": 5,
        "pair_decimals": 1,  # price tick 0.1
        "lot_decimals": 8,  # amount step 1e-8
        "lot_multiplier": 1,
        "leverage_buy": [],  # empty: spot only, ccxt reads margin=False
        "leverage_sell": [],
        "fees": [[0, 0.26]],  # first taker tier: 0.26 % from volume 0
        "fees_maker": [[0, 0.16]],  # first maker tier: 0.16 %
        "fee_volume_currency": "ZUSD",
        "margin_call": 80,
        "margin_stop": 40,
        "ordermin": "0.0001",  # smallest order amount (base currency)
        "costmin": "0.5",  # smallest order cost (USD)
        "status": "online",  # ccxt's market["active"]
    }


# /0/public/Depth: three levels a side, best first as Kraken sends them: [price, volume, timestamp (epoch s)].
# Hand-computed summary: best bid 100.0, best ask 100.5, mid 100.25, spread 0.5 / 100.25 = 49.8753 bps;
# bid depth 100*2 + 99.5*1 + 99*4 = 695.5 USD; ask depth 100.5*1 + 101*3 + 102*0.5 = 454.5 USD.
BOOK: dict[str, list[list[Any]]] = {
    "bids": [["100.0", "2.0", NOW_S - 5], ["99.5", "1.0", NOW_S - 9], ["99.0", "4.0", NOW_S - 30]],
    "asks": [["100.5", "1.0", NOW_S - 2], ["101.0", "3.0", NOW_S - 12], ["102.0", "0.5", NOW_S - 40]],
}

# /0/public/Trades, oldest first: [price, volume, time (epoch s), b(uy)/s(ell), m(arket)/l(imit), misc, trade_id].
# With a 100,000 USD whale threshold, 1h buckets and now = 13:45, the complete buckets are 11:00 and 12:00:
#   11:00 -> 3 trades, notional 150k + 25k + 100k = 275k; whales 2 (150k buy, 100k sell) = 250k, whale buys 150k
#   12:00 -> 2 trades, notional 10k + 120k = 130k; whale 1 (120k sell) = 120k, whale buys 0
# The 10:00 bucket is dropped (coverage starts at the first trade, 10:20) and 13:00 is still open at 13:45.
TRADES: list[list[Any]] = [
    ["50000.0", "1.0", T0 + 10 * 3600 + 20 * 60, "b", "m", "", 1],  # 10:20, 50k: partial first bucket
    ["50000.0", "3.0", T0 + 11 * 3600 + 5 * 60, "b", "l", "", 2],  # 11:05, 150k whale buy
    ["50000.0", "0.5", T0 + 11 * 3600 + 40 * 60, "s", "l", "", 3],  # 11:40, 25k sell
    ["40000.0", "2.5", T0 + 11 * 3600 + 50 * 60, "s", "m", "", 4],  # 11:50, exactly 100k: a whale (>=), sell
    ["50000.0", "0.2", T0 + 12 * 3600 + 10 * 60, "b", "l", "", 5],  # 12:10, 10k buy
    ["60000.0", "2.0", T0 + 12 * 3600 + 30 * 60, "s", "m", "", 6],  # 12:30, 120k whale sell
    ["50000.0", "4.0", T0 + 13 * 3600 + 15 * 60, "b", "m", "", 7],  # 13:15, 200k whale buy: bucket still open
]

# What a body cut off mid-stream looks like: a 200 whose JSON does not parse.
TRUNCATED_BODY = '{"error": [], "result": {"XXBTZUSD": [[1704067200, "42000.0", '


# Kraken's answer to a client calling its public endpoints too fast: HTTP 200 with the error in the body, like every
# Kraken API error (ccxt maps it to DDoSProtection; seen in the wild e.g. ccxt/ccxt#20648).
TOO_MANY_REQUESTS = "EGeneral:Too many requests"


@dataclass
class RateLimit:
    """Kraken's public-endpoint limit (per client IP), modelled on the call counter its docs describe for the REST
    API: every request adds 1, the counter drains at `per_s`, and a request that takes it above `burst` is
    refused with TOO_MANY_REQUESTS (and still counts, so hammering on keeps the client locked out).

    A client that starts its requests at `per_s` never takes the counter above 1 but for arrival jitter and its
    own catch-up after a pause; `burst` allows for both, while any sustained excess fills it within seconds.
    Kraken's own allowance is deeper (ccxt/ccxt#20648: about a hundred calls at 1/s before the first refusal),
    so passing here is the stricter check.
    """

    per_s: float
    burst: float = 4.0
    counter: float = 0.0
    last: float = 0.0
    # Monotonic arrival times (time.monotonic, the clock asyncio's loop.time() reads in every thread).
    arrivals: list[float] = field(default_factory=list)
    refused: int = 0
    peak: float = 0.0

    def admit(self, now: float) -> bool:
        self.arrivals.append(now)
        self.counter = max(0.0, self.counter - (now - self.last) * self.per_s) + 1.0
        self.last = now
        self.peak = max(self.peak, self.counter)
        if self.counter > self.burst:
            self.refused += 1
            return False
        return True


@dataclass
class Fault:
    """How the fake answers one coin's market-data requests (OHLC, Depth, Trades)."""

    kind: Literal["rate_limited", "server_error", "slow", "malformed"]
    # None: every request; n: the first n requests per endpoint, healthy afterwards.
    times: int | None = None
    # For "slow": how long the answer takes; longer than any client timeout it is meant to trip.
    delay_s: float = 5.0
    # Requests per endpoint answered normally before the fault starts (an outage in the middle of a backfill).
    after: int = 0


class FakeKraken:
    """Kraken's public market-data endpoints for a list of coins, quoted in USD, on 127.0.0.1.

    OHLC candles are generated, not recorded: a seeded walk around 100 (see `candle`), so any page of any
    timeframe is reproducible. Pages hold candles strictly after `since`, at most `page_size` of them, up to
    and including the candle still forming at `now_s`.
    """

    def __init__(self, coins: list[str], *, now_s: int = NOW_S, page_size: int = 720, latency_s: float = 0.0,
                 seed: int = 7, rate_limit: RateLimit | None = None):
        self.coins = list(coins)
        # None: no limit (most tests); a RateLimit: every endpoint counts against it, as Kraken counts per IP.
        self.rate_limit = rate_limit
        self.now_s = now_s
        self.page_size = page_size
        self.latency_s = latency_s
        self.seed = seed
        self.faults: dict[str, Fault] = {}
        self.book = BOOK
        self.trades = TRADES
        self.trades_since: list[str | None] = []  # the `since` of each Trades request, in arrival order
        self.asset_pairs: dict[str, Any] | None = None  # an AssetPairs answer in place of the generated one
        # (endpoint, coin) -> requests received; coin is "" for Assets and AssetPairs.
        self.requests: Counter[tuple[str, str]] = Counter()
        # coin -> the `since` (epoch s, or None) of each OHLC request, in arrival order.
        self.ohlc_since: dict[str, list[int | None]] = {}
        self._pairs = {coin: KNOWN_PAIRS.get(coin) or {"id": f"{coin}USD", "base": coin, "altname": f"{coin}USD",
                                                       "wsname": f"{coin}/USD"} for coin in self.coins}
        self._coin_by_pair = {p["id"]: coin for coin, p in self._pairs.items()}
        app = web.Application()
        self._pauses = Pauses(app)
        app.router.add_get("/0/public/Assets", self._assets)
        app.router.add_get("/0/public/AssetPairs", self._asset_pairs)
        app.router.add_get("/0/public/OHLC", self._ohlc)
        app.router.add_get("/0/public/Depth", self._depth)
        app.router.add_get("/0/public/Trades", self._trades)
        self._server = LoopbackServer(app)
        self.url = ""

    def __enter__(self) -> FakeKraken:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def snapshot(self) -> dict[str, Any]:
        """What a run left behind, as plain data (what a ChildProcess hands back to its parent)."""
        return {"requests": Counter(self.requests), "rate_limit": self.rate_limit}

    def pair_id(self, coin: str) -> str:
        return self._pairs[coin]["id"]

    def requests_for(self, coin: str) -> dict[str, int]:
        """endpoint -> requests received for this coin."""
        return {endpoint: n for (endpoint, c), n in self.requests.items() if c == coin}

    def level(self, coin: str, step_s: int, t: int) -> float:
        """The close of the candle opening at t: a slow cycle (period 2*pi*24 candles) plus seeded noise in [-1, 1]."""
        k = t // step_s
        return round(100.0 + 5.0 * math.sin(k / 24) + _noise(self.seed, coin, step_s, k), 2)

    def candle(self, coin: str, step_s: int, t: int) -> list[Any]:
        """Kraken's OHLC row [time, open, high, low, close, vwap, volume, count]; open is the previous close."""
        o, c = self.level(coin, step_s, t - step_s), self.level(coin, step_s, t)
        # 300..304 coins at ~100 USD: above the universe's floor on traded value; never zero, so the volume rules
        # see a real volume.
        volume = 300.0 + (t // step_s) % 5
        return [t, f"{o:.2f}", f"{max(o, c) + 0.5:.2f}", f"{min(o, c) - 0.5:.2f}", f"{c:.2f}",
                f"{(o + c) / 2:.2f}", f"{volume:.8f}", 5]

    async def _assets(self, request: web.Request) -> web.Response:
        body = {**ASSETS, **{c: asset_entry(c) for c in self.coins if c not in KNOWN_PAIRS}}
        return await self._answer("Assets", "", lambda: body)

    async def _asset_pairs(self, request: web.Request) -> web.Response:
        body = {p["id"]: pair_entry(p["base"], p["altname"], p["wsname"]) for p in self._pairs.values()}
        if self.asset_pairs is not None:
            body = self.asset_pairs
        return await self._answer("AssetPairs", "", lambda: body)

    async def _ohlc(self, request: web.Request) -> web.Response:
        pair = request.query.get("pair", "")
        coin = self._coin_by_pair.get(pair)
        if coin is None:
            return _unknown_pair()
        step = int(request.query.get("interval", "1")) * 60
        since = int(float(request.query["since"])) if "since" in request.query else None
        self.ohlc_since.setdefault(coin, []).append(since)
        forming = self.now_s // step * step
        # The first candle strictly after since (Kraken's `since` is exclusive); without since, the last page.
        first = (since // step + 1) * step if since is not None else forming - (self.page_size - 1) * step
        last = min(forming, first + (self.page_size - 1) * step)

        def body() -> dict[str, Any]:
            rows = [self.candle(coin, step, t) for t in range(first, last + 1, step)]
            # "last": the id to pass as `since` for the next page (the last candle's time here).
            return {pair: rows, "last": rows[-1][0] if rows else since}

        return await self._answer("OHLC", coin, body)

    async def _depth(self, request: web.Request) -> web.Response:
        pair = request.query.get("pair", "")
        coin = self._coin_by_pair.get(pair)
        if coin is None:
            return _unknown_pair()
        count = int(request.query.get("count", "100"))
        return await self._answer("Depth", coin, lambda: {pair: {k: v[:count] for k, v in self.book.items()}})

    async def _trades(self, request: web.Request) -> web.Response:
        pair = request.query.get("pair", "")
        coin = self._coin_by_pair.get(pair)
        if coin is None:
            return _unknown_pair()
        count = int(request.query.get("count", "1000"))
        self.trades_since.append(request.query.get("since"))
        if "since" in request.query:
            # Trades from `since` (epoch s) on, oldest first, at most `count`: a page to continue from.
            since = float(request.query["since"])
            rows = [t for t in self.trades if t[2] >= since][:count]
        else:
            rows = self.trades[-count:]  # the latest trades
        if not rows:
            return await self._answer("Trades", coin, lambda: {pair: [], "last": str(int(float(
                request.query.get("since", self.now_s))) * 10**9)})
        # "last": Kraken's cursor for the next poll, a nanosecond timestamp of the last trade, as a string.
        return await self._answer("Trades", coin, lambda: {pair: rows, "last": str(int(rows[-1][2]) * 10**9)})

    async def _answer(self, endpoint: str, coin: str, result: Callable[[], Any]) -> web.Response:
        self.requests[(endpoint, coin)] += 1
        seen = self.requests[(endpoint, coin)]
        if self.rate_limit is not None and not self.rate_limit.admit(asyncio.get_running_loop().time()):
            await self._pauses.sleep(self.latency_s)
            return web.json_response({"error": [TOO_MANY_REQUESTS]})
        await self._pauses.sleep(self.latency_s)
        fault = self.faults.get(coin)
        if fault is not None and seen > fault.after and (fault.times is None or seen <= fault.after + fault.times):
            if fault.kind == "rate_limited":
                return web.Response(status=429, text="Too Many Requests")
            if fault.kind == "server_error":
                return web.Response(status=500, text="Internal Server Error")
            if fault.kind == "malformed":
                return web.Response(status=200, text=TRUNCATED_BODY, content_type="application/json")
            await self._pauses.sleep(fault.delay_s)
        return web.json_response({"error": [], "result": result()})


@functools.lru_cache(maxsize=4096)
def _noise(seed: int, coin: str, step_s: int, k: int) -> float:
    # Seeding a generator is most of a page's cost, and each candle's open is the previous candle's close: the
    # cache halves it, which keeps the fake's own pauses (it shares the GIL with the client) short at high rates.
    return random.Random(f"{seed}:{coin}:{step_s}:{k}").uniform(-1.0, 1.0)


def _unknown_pair() -> web.Response:
    # Kraken reports errors with HTTP 200 and a non-empty "error" list; ccxt maps this one to BadSymbol.
    return web.json_response({"error": ["EQuery:Unknown asset pair"]})
