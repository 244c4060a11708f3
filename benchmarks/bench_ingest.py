"""Ingest wall time of 100 symbols from a loopback Kraken answering in 200 ms: concurrency 1 vs the default."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from math import ceil

from services.ingest.logic import fetch_sources, land
from services.ingest.sources.exchange import ExchangeSource
from shared.settings import ExchangeSettings, HttpSettings, Settings
from shared.storage import LocalLake
from tests.ingest.fakes.kraken import NOW_S, FakeKraken

SYMBOLS = 100
LATENCY_S = 0.2
# 48 h of 1h candles is one OHLC page per symbol (a page holds up to 720).
HISTORY = timedelta(hours=48)
# Far above 100 requests per run, so the rate limiter never paces the run.
RATE_PER_S = 10_000.0
CONCURRENT_REPEATS = 3
COINS = [f"C{i:03d}" for i in range(SYMBOLS)]


def ingest_once(url: str, concurrency: int) -> float:
    """Wall seconds to build the exchange source, fetch every symbol's OHLCV and land it in a fresh lake."""
    settings = Settings(
        universe=COINS,
        timeframes=["1h"],
        http=HttpSettings(concurrency=concurrency, timeout_s=30.0, rate_per_s={"exchange": RATE_PER_S}),
        exchange=ExchangeSettings(base_url=url, history={"1h": HISTORY}),
    )
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as lake_dir:
        start = time.perf_counter()
        source = ExchangeSource(settings.exchange, COINS, settings.timeframes, settings.http.timeout_s,
                                now_ms=NOW_S * 1000, include=("ohlcv",))
        fetched = asyncio.run(fetch_sources([source], settings))
        landed, _ = land(LocalLake(lake_dir), fetched)
        wall = time.perf_counter() - start
    if fetched.failures or landed != SYMBOLS:
        raise RuntimeError(f"benchmark run broken: landed {landed}/{SYMBOLS}, failures {fetched.failures[:3]}")
    return wall


def main() -> dict[str, float | int]:
    default = Settings().http.concurrency
    with FakeKraken(COINS, latency_s=LATENCY_S) as fake:
        # Untimed warm-up: the first ccxt exchange object of a process pays for building its API methods.
        ingest_once(fake.url, default)
        warm = sum(fake.requests.values())
        serial = ingest_once(fake.url, 1)
        requests_per_run = sum(fake.requests.values()) - warm
        concurrent = statistics.median(ingest_once(fake.url, default) for _ in range(CONCURRENT_REPEATS))
    # Lower bounds from latency alone: the market load (Assets, AssetPairs) is sequential, then the OHLC pages.
    floor_serial = requests_per_run * LATENCY_S
    floor_concurrent = (2 + ceil(SYMBOLS / default)) * LATENCY_S
    figures: dict[str, float | int] = {
        "symbols": SYMBOLS,
        "latency_ms": int(LATENCY_S * 1000),
        "requests_per_run": requests_per_run,
        "default_concurrency": default,
        "wall_s_concurrency_1": round(serial, 2),
        f"wall_s_concurrency_{default}": round(concurrent, 2),
        "speedup": round(serial / concurrent, 1),
        "latency_floor_s_concurrency_1": round(floor_serial, 2),
        f"latency_floor_s_concurrency_{default}": round(floor_concurrent, 2),
        "ideal_speedup": round(floor_serial / floor_concurrent, 1),
    }
    print(f"{SYMBOLS} symbols, {LATENCY_S * 1000:.0f} ms per request: concurrency 1 {serial:.2f} s, "
          f"concurrency {default} {concurrent:.2f} s (median of {CONCURRENT_REPEATS}), "
          f"speedup {serial / concurrent:.1f}x (latency-bound ideal {floor_serial / floor_concurrent:.1f}x)")
    return figures


if __name__ == "__main__":
    main()
