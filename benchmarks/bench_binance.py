"""Binance USDT-M at the wide universe: one hourly cycle's fetch of 500 listed perpetuals at Binance's real request
weights and limit (2,400 a minute per IP), against a loopback fake that enforces them, batch after batch as the
pipeline's fetch Map runs."""

from __future__ import annotations

import asyncio
import functools
import math
import os
import tempfile
import time

from services.ingest.logic import build_sources, exchange_coins, fetch_sources, land
from shared.runs import batch_coins
from shared.settings import Settings
from shared.storage import LocalLake
from tests.ingest.fakes.binance import NOW_MS, FakeBinanceUsdm, WeightLimit
from tests.ingest.fakes.server import ChildProcess

SYMBOLS = 500
LATENCY_S = 0.15
GOAL_S = 300


def main() -> dict[str, float | int | str]:
    coins = [f"C{i:03d}" for i in range(SYMBOLS - 2)] + ["BTC", "ETH"]
    limit = WeightLimit(limit=2400, window_s=60.0)
    fake = ChildProcess(functools.partial(FakeBinanceUsdm, coins, weight_limit=limit, latency_s=LATENCY_S))
    with fake, tempfile.TemporaryDirectory(prefix="bench-lake-") as lake_dir:
        settings = Settings(universe="listed", exchange={"id": "binanceusdm", "base_url": fake.url})
        lake = LocalLake(lake_dir)
        start = time.perf_counter()
        listed, notes = exchange_coins(settings)
        # The steady state: the whale coins' trades continue from the previous hourly run's end.
        since = {c: NOW_MS - 3_600_000 for c in settings.exchange.trades_coins or []}
        failures, landed, symbols, batches = list(notes), 0, set(), 0
        for item in range(math.ceil(len(listed) / settings.exchange.batch_symbols)):
            batch = batch_coins(settings, str(item), listed)
            sources = build_sources("live", settings, NOW_MS, trades_since=since, coins=batch, market=False,
                                    universe=listed)
            fetched = asyncio.run(fetch_sources(sources, settings))
            landed += land(lake, fetched)[0]
            failures += fetched.failures
            symbols |= {task.name.split()[1] for task, _ in fetched.results}
            batches += 1
        wall = time.perf_counter() - start
    seen = fake.snapshot
    enforced: WeightLimit = seen["weight_limit"]
    weight = sum(seen["weight"].values())
    requests = sum(seen["requests"].values())
    rate = settings.http.rate_per_s["exchange"]
    floor_s = weight / rate
    per_symbol = (weight - seen["weight"]["aggTrades"] - seen["weight"]["exchangeInfo"]) / len(listed)
    print(f"{len(listed)} listed perpetuals in {batches} batches: {requests} requests, {weight} weight "
          f"({per_symbol:g} a symbol + {seen['weight']['aggTrades']} of trades for "
          f"{len(settings.exchange.trades_coins or [])} whale coins + {seen['weight']['exchangeInfo']} exchangeInfo); "
          f"fetch {wall:.1f} s vs floor {floor_s:.1f} s at {rate:g} weight/s (goal {GOAL_S} s); peak "
          f"{enforced.peak:.0f} of {enforced.limit:.0f} weight a minute, {enforced.refused} refused, "
          f"{len(failures)} failures, {len(symbols)} symbols landed")
    if failures or enforced.refused or len(symbols) != len(listed):
        raise RuntimeError(f"benchmark run broken: {enforced.refused} refused, failures {failures[:3]}")
    return {
        "listed_symbols": len(listed),
        "fetch_batches": batches,
        "requests": requests,
        "weight": weight,
        "weight_per_symbol": round(per_symbol, 2),
        "weight_trades": seen["weight"]["aggTrades"],
        "rate_weight_per_s": rate,
        "published_weight_per_min": settings.exchange.published_weight_per_min,
        "latency_ms": int(LATENCY_S * 1000),
        "fetch_wall_s": round(wall, 1),
        "floor_s": round(floor_s, 1),
        "goal_s": GOAL_S,
        "peak_weight_per_minute": round(enforced.peak),
        "refused_by_fake": enforced.refused,
        "failures": len(failures),
        "symbols_landed": len(symbols),
        "records_landed": landed,
        "max_symbols_in_goal_at_rate": math.floor((GOAL_S * rate - 1) / per_symbol),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
