"""Rate limits: the Fetcher's starts conform to the configured rate; a fake Kraken enforcing it never refuses one."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from services.ingest.fetch import Fetcher, RateLimiter, pace_request
from services.ingest.logic import Fetched, fetch_sources
from services.ingest.sources import exchange as exchange_module
from services.ingest.sources.exchange import RATE_KEY, ExchangeSource
from shared.settings import ExchangeSettings, HttpSettings, Settings
from tests.ingest.fakes.config import fast_http
from tests.ingest.fakes.kraken import NOW_S, FakeKraken, RateLimit

# A loop timer may fire up to one clock tick early.
TICK = time.get_clock_info("monotonic").resolution + 1e-6

# 30 symbols at 40 requests/s: 122 requests, about 3 s. The fake lets a client run 0.5 s ahead of the rate (the
# Fetcher's own catch-up allowance is 0.25 s), so only a client that really outruns the rate is refused.
COINS = [f"C{i:02d}" for i in range(30)]
RATE = 40.0
FAKE_TOLERANCE_S = 0.5
TASKS_PER_COIN = 4  # ohlcv 1h, ohlcv 1d, order book, trades: one request each with the histories below


def starts_conform(starts: list[float], interval: float, burst: float) -> bool:
    """No window holds more starts than a token bucket of this interval and depth lets through: for every pair,
    the j-th start after the i-th is at least (j - burst + 1) intervals later."""
    s = sorted(starts)
    return all(s[j] - s[i] >= (j - i - (burst - 1)) * interval - TICK
               for i in range(len(s)) for j in range(i + 1, len(s)))


# ---- RateLimiter.admit ----------------------------------------------------------------------------------------

def test_admitted_starts_conform_to_the_rate_and_its_burst():
    limiter = RateLimiter(200.0, tolerance_s=0.02)  # one start per 5 ms, at most 5 back to back

    async def go() -> list[float]:
        loop = asyncio.get_running_loop()
        seen: list[float] = []

        async def one() -> None:
            await limiter.admit()
            seen.append(loop.time())

        await asyncio.gather(*(one() for _ in range(40)))
        return seen

    starts = asyncio.run(go())
    assert limiter.burst == pytest.approx(5.0)
    assert starts_conform(starts, limiter.interval, limiter.burst)
    # 40 callers at once: the first 5 go out together, then one per interval.
    assert max(starts) - min(starts) >= (40 - 5) * limiter.interval - TICK
    # The check can fail: 40 starts at once do not conform.
    assert not starts_conform([0.0] * 40, limiter.interval, limiter.burst)


def test_callers_released_together_start_at_most_a_burst_at_once():
    # Clock values are given, not read: 100/s is one start per 10 ms, and a 50 ms tolerance lets 6 go at once.
    limiter = RateLimiter(100.0, tolerance_s=0.05)
    starts = [limiter.book(1.0) for _ in range(10)]
    assert starts == pytest.approx([1.0] * 6 + [1.01, 1.02, 1.03, 1.04])
    assert starts_conform(starts, limiter.interval, limiter.burst)


def test_a_start_delayed_less_than_the_tolerance_does_not_hold_back_the_next_ones():
    # Callers arrive on their 10 ms slots, except the third, which the loop wakes 15 ms late (a parse in the way),
    # and the fourth, right behind it.
    ready = [0.0, 0.01, 0.035, 0.036, 0.04, 0.05, 0.06]
    tolerant = RateLimiter(100.0, tolerance_s=0.05)
    assert [tolerant.book(t) for t in ready] == pytest.approx(ready)  # everyone else keeps their slot
    # Without a tolerance, every caller after the late one inherits its delay: the loss never comes back.
    strict = RateLimiter(100.0, tolerance_s=0.0)
    assert [strict.book(t) for t in ready] == pytest.approx([0.0, 0.01, 0.035, 0.045, 0.055, 0.065, 0.075])


def test_a_delay_longer_than_the_tolerance_costs_only_its_excess():
    # A 110 ms pause (a garbage collection) at 100/s with a 50 ms tolerance: the callers of the 11 slots it
    # covered are all ready when it ends; 6 go at once, the rest one per slot, and the callers after them end
    # up 50 ms behind their slots (the pause less the tolerance), not 110.
    limiter = RateLimiter(100.0, tolerance_s=0.05)
    ready = [0.0] + [0.11] * 11 + [0.12, 0.13, 0.14]
    starts = [limiter.book(t) for t in ready]
    assert starts == pytest.approx([0.0] + [0.11] * 6 + [0.12, 0.13, 0.14, 0.15, 0.16] + [0.17, 0.18, 0.19])
    assert starts_conform(starts, limiter.interval, limiter.burst)


def test_a_limiter_without_a_rate_admits_at_once():
    limiter = RateLimiter(0.0)
    asyncio.run(limiter.admit())
    assert limiter.interval == 0.0 and limiter.burst == float("inf")


# ---- against the fake enforcing Kraken's limit ----------------------------------------------------------------

@pytest.fixture
def limited_kraken() -> Iterator[FakeKraken]:
    limit = RateLimit(per_s=RATE, burst=1 + RATE * FAKE_TOLERANCE_S)
    with FakeKraken(COINS, latency_s=0.02, rate_limit=limit) as fake:
        yield fake


def hourly_cycle(url: str, rate: float, **http: object) -> tuple[Fetched, float]:
    """The exchange source's hourly task set for COINS (both default timeframes, book, trades since the previous
    run), fetched with the exchange paced at `rate`; the result and the wall seconds it took."""
    settings = Settings(universe=COINS, timeframes=["1h", "1d"],
                        http=fast_http(rate_per_s={RATE_KEY: rate}, **http),
                        exchange=ExchangeSettings(base_url=url,
                                                  history={"1h": timedelta(hours=48), "1d": timedelta(days=30)}))
    source = ExchangeSource(settings.exchange, COINS, settings.timeframes, settings.http.timeout_s,
                            now_ms=NOW_S * 1000, trades_since={c: (NOW_S - 3600) * 1000 for c in COINS})
    start = time.perf_counter()
    fetched = asyncio.run(fetch_sources([source], settings))
    return fetched, time.perf_counter() - start


def test_the_fetcher_never_trips_the_exchange_rate_limit(limited_kraken: FakeKraken):
    fetched, wall = hourly_cycle(limited_kraken.url, RATE)

    limit = limited_kraken.rate_limit
    assert limit is not None and limit.refused == 0, f"peak counter {limit.peak:.1f} of {limit.burst}"
    assert fetched.failures == []
    assert len(fetched.results) == TASKS_PER_COIN * len(COINS)
    # Every request went out once: the market load (Assets, AssetPairs) once, one request per task, no retries.
    requests = sum(limited_kraken.requests.values())
    assert requests == 2 + TASKS_PER_COIN * len(COINS) == len(limit.arrivals)
    # The rate's own lower bound: past the Fetcher's catch-up allowance, one start per interval.
    paced = RateLimiter(RATE)
    assert wall >= (requests - paced.burst) * paced.interval


def test_the_fake_refuses_a_client_that_outruns_its_limit(limited_kraken: FakeKraken):
    # The check above can fail: the same cycle paced at 1.5 times the fake's limit gains 20 requests a second on
    # it, past its 21-request allowance within the run. Kraken's answer is retried as a rate limit, and what
    # still fails says so.
    fetched, _ = hourly_cycle(limited_kraken.url, 1.5 * RATE, max_retries=0)

    limit = limited_kraken.rate_limit
    assert limit is not None and limit.refused > 0
    assert fetched.failures and {f.code for f in fetched.failures} == {"rate_limited"}


def test_every_request_of_a_multi_request_operation_is_paced(monkeypatch):
    # ccxt's load_markets makes two requests (Assets, then AssetPairs) inside one Fetcher call; ccxt's per-request
    # throttle hook is our pacing, which books the second a start of its own instead of sending it as soon as the
    # first answers (a few milliseconds later: the fake answers at once).
    hooked: list[str] = []
    booked: list[float] = []
    book = RateLimiter.book

    async def hook() -> None:
        hooked.append("request")
        await pace_request()

    def record(self: RateLimiter, now: float, units: float = 1.0) -> float:
        booked.append(book(self, now, units))
        return booked[-1]

    monkeypatch.setattr(exchange_module, "pace_request", hook)
    monkeypatch.setattr(RateLimiter, "book", record)
    rate = 2.0
    arrivals = RateLimit(per_s=1000.0)  # far above the rate: it only records when requests arrive
    with FakeKraken(["BTC"], rate_limit=arrivals) as fake:
        settings = Settings(universe=["BTC"], timeframes=["1h"], http=fast_http(rate_per_s={RATE_KEY: rate}),
                            exchange=ExchangeSettings(base_url=fake.url, history={"1h": timedelta(hours=48)}))
        source = ExchangeSource(settings.exchange, ["BTC"], ["1h"], 1.0, now_ms=NOW_S * 1000, include=("ohlcv",))
        fetched = asyncio.run(fetch_sources([source], settings))
    assert fetched.failures == []
    assert fake.requests[("Assets", "")] == fake.requests[("AssetPairs", "")] == 1
    # Assets, AssetPairs, OHLC: each passed the hook and got a start of its own, at most the catch-up allowance
    # ahead of one interval after the one before.
    paced = RateLimiter(rate)
    assert hooked == ["request"] * 3 and len(booked) == 3
    assert all(b - a >= paced.interval - paced.tolerance - 1e-9 for a, b in itertools.pairwise(booked))
    # At the fake (which sees transit too, the first request opening the connection): far apart, where an unpaced
    # AssetPairs would follow Assets within milliseconds.
    assets, pairs, ohlc = arrivals.arrivals
    assert pairs - assets >= (paced.interval - paced.tolerance) / 2
    assert ohlc - pairs >= (paced.interval - paced.tolerance) / 2


# ---- the configured rate vs what ccxt publishes for the exchange ----------------------------------------------

def test_a_rate_above_the_exchanges_published_limit_is_warned_about(caplog):
    source = ExchangeSource(ExchangeSettings(), ["BTC"], ["1h"], 1.0)  # kraken itself: ccxt's rateLimit 1000 ms
    try:
        with caplog.at_level(logging.WARNING, logger="services.ingest.sources.exchange"):
            source._check_rate(Fetcher(HttpSettings()))  # the default rate
            assert caplog.records == []
            source._check_rate(Fetcher(HttpSettings(rate_per_s={RATE_KEY: 10.0})))
        [record] = caplog.records
        assert "above kraken's published limit of 1.00 requests/s" in record.getMessage()
    finally:
        asyncio.run(source.close())
