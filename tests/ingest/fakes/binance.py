"""A fake of Binance's USDT-M futures public REST API (the endpoints ccxt's binanceusdm calls: exchangeInfo,
klines, depth, aggTrades) for any number of perpetuals, with Binance's request-weight limit per IP and its error
bodies. The shapes are the recorded bodies in tests/ingest/corpus/binance_fapi_*.json (Binance's documentation:
https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api)."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.ingest.fakes.server import LoopbackServer, Pauses

CORPUS = Path(__file__).resolve().parents[1] / "corpus"

# 2024-01-01T00:00:00Z and the fake's default clock, 13:45 that day (the 13:00 hourly candle is still forming).
T0_MS = 1_704_067_200_000
NOW_MS = T0_MS + (13 * 60 + 45) * 60_000
INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}


def corpus(name: str) -> Any:
    return json.loads((CORPUS / name).read_text())


def klines_weight(limit: int) -> int:
    """GET /fapi/v1/klines: weight by `limit` (documented: [1,100) 1, [100,500) 2, [500,1000] 5, > 1000 10)."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def depth_weight(limit: int) -> int:
    """GET /fapi/v1/depth: 5, 10, 20, 50 levels weigh 2; 100 weighs 5; 500 10; 1000 20."""
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
WEIGHTS = {"exchangeInfo": 1, "aggTrades": 20}


@dataclass
class WeightLimit:
    """Binance's REQUEST_WEIGHT limit: the weight of every request from one IP in the current window (a minute,
    counted from the start of each minute of the server's clock) may not exceed `limit`; a request over it is
    refused with HTTP 429 and the -1003 body, and still counts. `window_s` may be scaled down for tests."""

    limit: float = 2400
    window_s: float = 60.0
    used: float = 0.0
    window: int = -1
    refused: int = 0
    peak: float = 0.0
    # weight used per window, for a benchmark's report
    per_window: dict[int, float] = field(default_factory=dict)

    def charge(self, now: float, weight: float) -> bool:
        w = int(now // self.window_s)
        if w != self.window:
            self.window, self.used = w, 0.0
        self.used += weight
        self.per_window[w] = self.used
        self.peak = max(self.peak, self.used)
        if self.used > self.limit:
            self.refused += 1
            return False
        return True


def base_of(symbol: str) -> str:
    return symbol.removesuffix("USDT")


class FakeBinanceUsdm:
    """USDT-settled perpetuals for a list of coins on 127.0.0.1, plus the recorded exchangeInfo's other contracts
    (a quarterly delivery, a USDC-settled perpetual, one settling), which a listed universe must leave out.

    Candles are generated: a seeded walk around 100 per coin; klines follow the documented row
    [open time, open, high, low, close, volume, close time, quote volume, trades, taker buy base, taker buy quote,
    ignore], startTime inclusive, the candle forming at `now_ms` included (as Binance sends it). aggTrades: one
    trade every `trade_every_ms` per coin, every third a whale (notional 150k USDT), ids increasing.
    """

    def __init__(self, coins: list[str], *, now_ms: int = NOW_MS, weight_limit: WeightLimit | None = None,
                 latency_s: float = 0.0, trade_every_ms: int = 600_000, history_ms: int = 400 * 86_400_000):
        self.coins = list(coins)
        self.now_ms = now_ms
        self.weight_limit = weight_limit
        self.latency_s = latency_s
        self.trade_every_ms = trade_every_ms
        self.listed_from_ms = now_ms - history_ms  # no candle or trade before this
        self.requests: Counter[tuple[str, str]] = Counter()
        self.weight: Counter[str] = Counter()  # weight per endpoint
        self.missing: set[str] = set()  # coins answering -1121 (delisted between exchangeInfo and klines)
        info = corpus("binance_fapi_exchangeinfo.json")
        template = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
        others = [s for s in info["symbols"] if s["contractType"] != "PERPETUAL" or s["marginAsset"] != "USDT"
                  or s["status"] != "TRADING"]
        symbols = []
        for coin in self.coins:
            entry = copy.deepcopy(template)
            entry.update(symbol=f"{coin}USDT", pair=f"{coin}USDT", baseAsset=coin, onboardDate=self.listed_from_ms)
            symbols.append(entry)
        self.exchange_info = {**info, "serverTime": now_ms, "symbols": symbols + others}
        app = web.Application()
        self._pauses = Pauses(app)
        app.router.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        app.router.add_get("/fapi/v1/klines", self._klines)
        app.router.add_get("/fapi/v1/depth", self._depth)
        app.router.add_get("/fapi/v1/aggTrades", self._agg_trades)
        self._server = LoopbackServer(app)
        self.url = ""

    def __enter__(self) -> FakeBinanceUsdm:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def snapshot(self) -> dict[str, Any]:
        return {"requests": Counter(self.requests), "weight": Counter(self.weight), "weight_limit": self.weight_limit}

    # --- generated market data -----------------------------------------------------------------------------------

    def close(self, coin: str, step: int, k: int) -> float:
        seed = zlib.crc32(f"{coin}:{step}".encode())
        noise = ((k * 2_654_435_761 + seed) % 2001) / 1000.0 - 1.0
        return round(100.0 + 5.0 * math.sin(k / 24) + noise, 2)

    def kline(self, coin: str, step: int, t: int) -> list[Any]:
        k = t // step
        o, c = self.close(coin, step, k - 1), self.close(coin, step, k)
        hi, lo = max(o, c) + 0.5, min(o, c) - 0.5
        volume = 3000.0 + k % 7 * 10  # contracts of one coin at ~100 USDT: ~300k USDT a bar, above the floors
        quote = volume * (o + c) / 2
        return [t, f"{o:.2f}", f"{hi:.2f}", f"{lo:.2f}", f"{c:.2f}", f"{volume:.3f}", t + step - 1,
                f"{quote:.5f}", 1000 + k % 13, f"{volume / 2:.3f}", f"{quote / 2:.5f}", "0"]

    def trades_between(self, coin: str, start: int, end: int) -> list[dict[str, Any]]:
        every = self.trade_every_ms
        first = max(start, self.listed_from_ms)
        t = -(-first // every) * every
        out = []
        while t <= min(end, self.now_ms):
            n = t // every
            whale = n % 3 == 0
            price = self.close(coin, 3_600_000, t // 3_600_000)
            qty = 150_000 / price if whale else 1_000 / price
            out.append({"a": n, "p": f"{price:.2f}", "q": f"{qty:.3f}", "f": 2 * n, "l": 2 * n + 1, "T": t,
                        "m": n % 2 == 1})
            t += every
        return out

    # --- endpoints ----------------------------------------------------------------------------------------------

    def _coin(self, request: web.Request) -> str | None:
        symbol = request.query.get("symbol", "")
        coin = base_of(symbol)
        return coin if symbol.endswith("USDT") and coin in self.coins and coin not in self.missing else None

    async def _exchange_info(self, request: web.Request) -> web.Response:
        return await self._answer("exchangeInfo", "", WEIGHTS["exchangeInfo"], lambda: self.exchange_info)

    async def _klines(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "500"))
        coin = self._coin(request)
        if coin is None:
            return await self._error("klines", 1, 400, "binance_fapi_invalid_symbol.json")
        step = INTERVALS_MS[request.query["interval"]]
        limit = min(limit, 1500)
        forming = self.now_ms // step * step
        if "startTime" in request.query:
            first = -(-int(request.query["startTime"]) // step) * step
        else:
            first = forming - (limit - 1) * step
        first = max(first, -(-self.listed_from_ms // step) * step)
        last = min(forming, first + (limit - 1) * step)
        if "endTime" in request.query:
            last = min(last, int(request.query["endTime"]) // step * step)
        return await self._answer("klines", coin, klines_weight(limit),
                                  lambda: [self.kline(coin, step, t) for t in range(first, last + 1, step)])

    async def _depth(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "500"))
        coin = self._coin(request)
        if limit not in DEPTH_LIMITS:
            # Binance answers only its documented level counts.
            return web.json_response({"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."},
                                     status=400)
        if coin is None:
            return await self._error("depth", depth_weight(limit), 400, "binance_fapi_invalid_symbol.json")
        book = corpus("binance_fapi_depth.json")

        def body() -> dict[str, Any]:
            mid = self.close(coin, 3_600_000, self.now_ms // 3_600_000)
            scale = mid / 42170.35  # the recorded book, moved to the coin's price
            return {**book, "E": self.now_ms, "T": self.now_ms,
                    "bids": [[f"{float(p) * scale:.4f}", q] for p, q in book["bids"]][:limit],
                    "asks": [[f"{float(p) * scale:.4f}", q] for p, q in book["asks"]][:limit]}

        return await self._answer("depth", coin, depth_weight(limit), body)

    async def _agg_trades(self, request: web.Request) -> web.Response:
        coin = self._coin(request)
        if coin is None:
            return await self._error("aggTrades", WEIGHTS["aggTrades"], 400, "binance_fapi_invalid_symbol.json")
        limit = min(int(request.query.get("limit", "500")), 1000)
        if "startTime" in request.query:
            start = int(request.query["startTime"])
            end = int(request.query.get("endTime", start + 3_600_000))
            if end - start > 3_600_000:
                return web.json_response({"code": -1127, "msg": "More than 1 hours between startTime and endTime."},
                                         status=400)
            rows = self.trades_between(coin, start, end)[:limit]
        else:
            rows = self.trades_between(coin, self.now_ms - 24 * 3_600_000, self.now_ms)[-limit:]
        return await self._answer("aggTrades", coin, WEIGHTS["aggTrades"], lambda: rows)

    async def _error(self, endpoint: str, weight: int, status: int, body: str) -> web.Response:
        refused = self._charge(endpoint, "", weight)
        if refused is not None:
            return refused
        return web.json_response(corpus(body), status=status)

    def _charge(self, endpoint: str, coin: str, weight: int) -> web.Response | None:
        self.requests[(endpoint, coin)] += 1
        self.weight[endpoint] += weight
        if self.weight_limit is not None and not self.weight_limit.charge(asyncio.get_running_loop().time(), weight):
            return web.json_response(corpus("binance_fapi_429.json"), status=429,
                                     headers={"X-MBX-USED-WEIGHT-1M": str(int(self.weight_limit.used))})
        return None

    async def _answer(self, endpoint: str, coin: str, weight: int, body) -> web.Response:
        refused = self._charge(endpoint, coin, weight)
        await self._pauses.sleep(self.latency_s)
        if refused is not None:
            return refused
        used = int(self.weight_limit.used) if self.weight_limit is not None else sum(self.weight.values())
        return web.json_response(body(), headers={"X-MBX-USED-WEIGHT-1M": str(used)})
