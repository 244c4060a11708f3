"""Ingest: 100 symbols at 200 ms (concurrency 1 vs default); 1,000 symbols' hourly cycle vs a rate limit's floor."""

from __future__ import annotations

import asyncio
import functools
import os
import statistics
import tempfile
import time
from datetime import timedelta
from math import ceil, floor

from services.ingest.logic import fetch_sources, land
from services.ingest.sources.exchange import ExchangeSource
from shared.settings import ExchangeSettings, HttpSettings, Settings
from shared.storage import LocalLake
from tests.ingest.fakes.kraken import NOW_S, FakeKraken, RateLimit
from tests.ingest.fakes.server import ChildProcess

SYMBOLS = 100
LATENCY_S = 0.2
# 48 h of 1h candles is one OHLC page per symbol (a page holds up to 720).
HISTORY = timedelta(hours=48)
# Far above 100 requests per run, so the rate limiter never paces the run.
RATE_PER_S = 10_000.0
CONCURRENT_REPEATS = 3
COINS = [f"C{i:03d}" for i in range(SYMBOLS)]

# The rate-limited case: Kraken's real public limit (about 1 request/s per IP) would make 4,000 requests an hour
# of benchmark, so the fake and our Fetcher are both set to a scaled rate; the floor scales with it.
LIMITED_SYMBOLS = 1_000
LIMITED_RATE_PER_S = 50.0
LIMITED_LATENCY_S = 0.15
# How far ahead of its rate the fake lets a client's requests arrive before refusing one. It must cover the
# Fetcher's own catch-up allowance (RateLimiter tolerance, 0.25 s) plus the arrival jitter of a busy shared machine
# (peaks of 0.4 s seen at the fake); any sustained excess still trips it within seconds (10 % too fast: after
# about 7 s at 50/s). Kraken's own allowance is deeper (ccxt/ccxt#20648: about a hundred calls at 1/s before the
# first refusal).
FAKE_TOLERANCE_S = 0.75
# The arithmetic at the real rate.
LAMBDA_LIMIT_S = 900
LAMBDA_BUDGET = 0.7  # share of a Lambda's 15 minutes a batch may plan for: retries and extra trade pages


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


def concurrency_case() -> dict[str, float | int]:
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
    print(f"{SYMBOLS} symbols, {LATENCY_S * 1000:.0f} ms per request: concurrency 1 {serial:.2f} s, "
          f"concurrency {default} {concurrent:.2f} s (median of {CONCURRENT_REPEATS}), "
          f"speedup {serial / concurrent:.1f}x (latency-bound ideal {floor_serial / floor_concurrent:.1f}x)")
    return {
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


def rate_limited_case() -> dict[str, float | int | str]:
    """One hourly live cycle of the exchange source (what `cst run --source live` fetches from it: OHLCV for every
    default timeframe, the order book and the trades since the previous run, per symbol) at 1,000 symbols, with
    the default settings but the scaled rate, against a fake Kraken that refuses requests above that rate."""
    coins = [f"C{i:04d}" for i in range(LIMITED_SYMBOLS)]
    limit = RateLimit(per_s=LIMITED_RATE_PER_S, burst=1 + LIMITED_RATE_PER_S * FAKE_TOLERANCE_S)
    # The fake runs in a process of its own: in a thread it would share the client's GIL and see requests in
    # bunches whenever either side parses or builds a 720-candle page.
    fake = ChildProcess(functools.partial(FakeKraken, coins, latency_s=LIMITED_LATENCY_S, rate_limit=limit))
    with fake, tempfile.TemporaryDirectory(prefix="bench-lake-") as lake_dir:
        settings = Settings(universe=coins, http=HttpSettings(rate_per_s={"exchange": LIMITED_RATE_PER_S}),
                            exchange=ExchangeSettings(base_url=fake.url))
        # The steady state: each coin's trades continue from where the previous hourly run's ended.
        since = {coin: (NOW_S - 3600) * 1000 for coin in coins}
        start = time.perf_counter()
        source = ExchangeSource(settings.exchange, coins, settings.timeframes, settings.http.timeout_s,
                                now_ms=NOW_S * 1000, trades_since=since)
        fetched = asyncio.run(fetch_sources([source], settings))
        fetch_wall = time.perf_counter() - start
        landed, _ = land(LocalLake(lake_dir), fetched)
        total_wall = time.perf_counter() - start
    seen = fake.snapshot["requests"]
    enforced: RateLimit = fake.snapshot["rate_limit"]  # the fake's counter as the run left it
    requests = sum(seen.values())
    market_load = seen[("Assets", "")] + seen[("AssetPairs", "")]
    data = requests - market_load
    per_symbol = data / LIMITED_SYMBOLS
    tasks_per_symbol = len(source.tasks()) // LIMITED_SYMBOLS
    landed_symbols = len({task.name.split()[1] for task, _ in fetched.results})
    if fetched.failures or enforced.refused or landed_symbols != LIMITED_SYMBOLS:
        raise RuntimeError(f"rate-limited run broken: {enforced.refused} refused, {len(fetched.failures)} failures "
                           f"({fetched.failures[:3]}), {landed_symbols}/{LIMITED_SYMBOLS} symbols")
    # The floor: the market load is two requests in sequence, then the data requests start one per 1/rate and
    # the last answer takes one latency.
    floor_s = market_load * LIMITED_LATENCY_S + (data - 1) / LIMITED_RATE_PER_S + LIMITED_LATENCY_S

    real_rate = Settings().http.rate_per_s["exchange"]
    hourly = LIMITED_SYMBOLS * per_symbol + market_load
    real_floor = hourly / real_rate
    per_lambda = floor((LAMBDA_LIMIT_S * LAMBDA_BUDGET * real_rate - market_load) / per_symbol)
    # The fetch step's Map as configured: batches of `exchange.batch_symbols`, one after another.
    batch = Settings().exchange.batch_symbols
    batch_s = (batch * per_symbol + market_load) / real_rate
    print(f"{LIMITED_SYMBOLS} symbols x {per_symbol:g} requests + {market_load} at {LIMITED_RATE_PER_S:g}/s, "
          f"{LIMITED_LATENCY_S * 1000:.0f} ms: fetch {fetch_wall:.2f} s vs floor {floor_s:.2f} s "
          f"(x{fetch_wall / floor_s:.3f}), {enforced.refused} refused (peak counter {enforced.peak:.1f} of "
          f"{enforced.burst:g}), {len(fetched.failures)} failures, {landed} records landed in "
          f"{total_wall - fetch_wall:.2f} s")
    print(f"at Kraken's {real_rate:g}/s: {hourly:.0f} requests per hourly cycle = {real_floor:.0f} s "
          f"({real_floor / 3600:.2f} h); one Lambda ({LAMBDA_LIMIT_S} s, {LAMBDA_BUDGET:.0%} planned) fits "
          f"{per_lambda} symbols; the fetch Map's batches of {batch}: {ceil(LIMITED_SYMBOLS / batch)} in sequence, "
          f"{batch_s:.0f} s each ({batch_s / LAMBDA_LIMIT_S:.0%} of a Lambda's limit)")
    return {
        "limited_symbols": LIMITED_SYMBOLS,
        "limited_tasks_per_symbol": tasks_per_symbol,
        "limited_requests_per_symbol": round(per_symbol, 2),
        "limited_requests": requests,
        "limited_rate_per_s": LIMITED_RATE_PER_S,
        "limited_latency_ms": int(LIMITED_LATENCY_S * 1000),
        "limited_fake_burst": enforced.burst,
        "limited_fetch_wall_s": round(fetch_wall, 2),
        "limited_floor_s": round(floor_s, 2),
        "limited_wall_over_floor": round(fetch_wall / floor_s, 3),
        "limited_refused_by_fake": enforced.refused,
        "limited_peak_counter": round(enforced.peak, 1),
        "limited_failures": len(fetched.failures),
        "limited_symbols_landed": landed_symbols,
        "limited_records_landed": landed,
        "limited_land_wall_s": round(total_wall - fetch_wall, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "real_rate_per_s": real_rate,
        "real_requests_per_hourly_cycle": round(hourly),
        "real_floor_s_hourly_cycle": round(real_floor),
        "real_requests_per_day": round(24 * hourly),
        "real_floor_h_per_day": round(24 * real_floor / 3600, 1),
        "real_max_symbols_per_hour": floor((3600 * real_rate - market_load) / per_symbol),
        "real_symbols_per_lambda": per_lambda,
        "real_lambda_batches": ceil(LIMITED_SYMBOLS / per_lambda),
        "fetch_batch_symbols": batch,
        "fetch_batches": ceil(LIMITED_SYMBOLS / batch),
        "fetch_batch_s_at_real_rate": round(batch_s),
    }


def main() -> dict[str, float | int | str]:
    return {**concurrency_case(), **rate_limited_case()}


if __name__ == "__main__":
    main()
