"""Fetcher mechanics: rate-limit spacing, backoff bounds, the retry loop and classify()'s reason codes."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time

import aiohttp
import ccxt
import pytest

from services.ingest.fetch import Fetcher, HttpStatusError, MalformedResponse, RateLimiter, classify
from shared.errors import FetchError
from shared.settings import HttpSettings
from tests.ingest.fakes.config import fast_http
from tests.ingest.fakes.server import closed_port


class Sleeps:
    """Stands in for asyncio.sleep in the retry loop: records each backoff instead of waiting it out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


# ---- RateLimiter ---------------------------------------------------------------------------------------------

def test_rate_limiter_spaces_request_starts_by_its_interval():
    async def starts(limiter: RateLimiter, n: int) -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        seen: list[float] = []

        async def one() -> None:
            await limiter.wait()
            seen.append(loop.time())

        await asyncio.gather(*(one() for _ in range(n)))
        return t0, seen

    limiter = RateLimiter(50.0)  # one start every 20 ms
    t0, seen = asyncio.run(starts(limiter, 5))
    assert limiter.interval == pytest.approx(0.02)
    # The schedule reserves one slot per caller, back to back: the 6th caller would start 5 intervals on.
    assert limiter._next >= t0 + 5 * limiter.interval
    # The k-th start is never before slot k. A late wake-up may shorten the gap after it, so the bound is on
    # each start's offset from t0, not on gaps; a loop timer may fire up to one clock tick early.
    tolerance = time.get_clock_info("monotonic").resolution + 1e-6
    offsets = [t - t0 for t in sorted(seen)]
    assert all(off >= k * limiter.interval - tolerance for k, off in enumerate(offsets)), offsets


def test_rate_limiter_without_a_rate_never_waits():
    limiter = RateLimiter(0.0)
    asyncio.run(limiter.wait())
    assert limiter.interval == 0.0 and limiter._next == 0.0


def test_each_source_gets_its_own_limiter_at_its_configured_rate():
    fetcher = Fetcher(HttpSettings(rate_per_s={"exchange": 4.0}, default_rate_per_s=2.0))
    assert fetcher.limiter("exchange") is fetcher.limiter("exchange")
    assert fetcher.limiter("exchange").interval == 0.25
    assert fetcher.limiter("fear_greed").interval == 0.5  # not configured: the default rate
    assert fetcher.limiter("fear_greed") is not fetcher.limiter("blockchain")


# ---- backoff -------------------------------------------------------------------------------------------------

def test_backoff_upper_bound_doubles_from_base_up_to_the_cap(monkeypatch):
    fetcher = Fetcher(HttpSettings(backoff_base_s=0.5, backoff_max_s=8.0))
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the top of the full-jitter range
    assert [fetcher.backoff(a) for a in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    monkeypatch.setattr(random, "uniform", lambda low, high: low)
    assert {fetcher.backoff(a) for a in range(7)} == {0.0}


def test_backoff_draws_stay_within_full_jitter_bounds():
    fetcher = Fetcher(HttpSettings(backoff_base_s=0.1, backoff_max_s=1.0))
    state = random.getstate()
    random.seed(1234)  # backoff draws from the module-level generator
    try:
        for attempt in range(8):
            cap = min(1.0, 0.1 * 2**attempt)
            draws = [fetcher.backoff(attempt) for _ in range(200)]
            assert all(0.0 <= d <= cap for d in draws)
            # Jitter means spread, not a fixed delay: 200 draws cover most of [0, cap].
            assert max(draws) - min(draws) > 0.8 * cap
    finally:
        random.setstate(state)


# ---- the retry loop ------------------------------------------------------------------------------------------

def call(fetcher: Fetcher, op) -> object:
    async def go() -> object:
        try:
            return await fetcher.call("exchange", "probe", op)
        finally:
            await fetcher.close()

    return asyncio.run(go())


@pytest.mark.parametrize(("exc", "code"), [(HttpStatusError(429, "u"), "rate_limited"),
                                           (HttpStatusError(502, "u"), "server_error"),
                                           (ccxt.RequestTimeout("slow"), "timeout")])
def test_retryable_failures_are_tried_one_plus_max_retries_times(exc, code):
    sleeps = Sleeps()
    fetcher = Fetcher(fast_http(max_retries=3, backoff_base_s=0.1, backoff_max_s=0.3), sleep=sleeps)
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        raise exc

    with pytest.raises(FetchError) as info:
        call(fetcher, op)
    assert (info.value.code, info.value.attempts, info.value.retryable) == (code, 4, True)
    assert calls == 4 and fetcher.attempts == {"exchange": 4}
    assert len(sleeps.delays) == 3
    assert all(0.0 <= d <= min(0.3, 0.1 * 2**i) for i, d in enumerate(sleeps.delays)), sleeps.delays
    assert "after 4 attempts" in info.value.message


def test_a_non_retryable_failure_is_tried_once():
    sleeps = Sleeps()
    fetcher = Fetcher(fast_http(max_retries=3), sleep=sleeps)

    async def op() -> None:
        raise MalformedResponse("truncated body")

    with pytest.raises(FetchError) as info:
        call(fetcher, op)
    assert (info.value.code, info.value.attempts, info.value.retryable) == ("malformed_response", 1, False)
    assert sleeps.delays == []


def test_a_failure_that_heals_within_the_budget_returns_the_value():
    sleeps = Sleeps()
    fetcher = Fetcher(fast_http(max_retries=2), sleep=sleeps)
    answers = iter([HttpStatusError(429, "u"), HttpStatusError(429, "u"), "candles"])

    async def op() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert call(fetcher, op) == "candles"
    assert len(sleeps.delays) == 2 and fetcher.attempts == {"exchange": 3}


def test_an_operation_slower_than_the_timeout_is_cut_off_as_timeout():
    fetcher = Fetcher(fast_http(timeout_s=0.05, max_retries=1), sleep=Sleeps())

    async def op() -> None:
        await asyncio.Event().wait()  # never set: only the timeout ends it

    with pytest.raises(FetchError) as info:
        call(fetcher, op)
    assert (info.value.code, info.value.attempts) == ("timeout", 2)


def test_get_json_to_a_refused_port_fails_fast_as_unreachable():
    sleeps = Sleeps()
    fetcher = Fetcher(fast_http(max_retries=3), sleep=sleeps)

    async def go() -> None:
        try:
            await fetcher.get_json("fear_greed", f"http://127.0.0.1:{closed_port()}/fng/")
        finally:
            await fetcher.close()

    with pytest.raises(FetchError) as info:
        asyncio.run(go())
    assert (info.value.code, info.value.attempts, info.value.retryable) == ("unreachable", 1, False)
    assert sleeps.delays == []


# ---- classify ------------------------------------------------------------------------------------------------

def json_error() -> json.JSONDecodeError:
    try:
        json.loads("{")
    except json.JSONDecodeError as exc:
        return exc
    raise AssertionError("'{' parsed")


@pytest.mark.parametrize(
    ("exc", "code", "retryable"),
    [
        (HttpStatusError(429, "u"), "rate_limited", True),
        (HttpStatusError(500, "u"), "server_error", True),
        (HttpStatusError(503, "u"), "server_error", True),
        (HttpStatusError(404, "u"), "http_404", False),
        (HttpStatusError(401, "u"), "http_401", False),
        (ccxt.RateLimitExceeded("kraken 429"), "rate_limited", True),
        (ccxt.DDoSProtection("EAPI:Rate limit exceeded"), "rate_limited", True),
        (ccxt.RequestTimeout("kraken GET"), "timeout", True),
        (asyncio.TimeoutError(), "timeout", True),
        (MalformedResponse("cut"), "malformed_response", False),
        (ccxt.BadResponse("kraken: malformed JSON"), "malformed_response", False),
        (json_error(), "malformed_response", False),
        (ccxt.BadSymbol("kraken does not have market symbol X/USD"), "unknown_symbol", False),
        (ccxt.ExchangeNotAvailable("kraken 500"), "server_error", True),
        (ccxt.OnMaintenance("kraken maintenance"), "server_error", True),
        (ccxt.NetworkError("reset"), "network_error", True),
        (aiohttp.ServerDisconnectedError(), "network_error", True),
        (ccxt.ExchangeError("EGeneral:Invalid arguments"), "exchange_error", False),
        (KeyError("close"), "unexpected_error", False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_classify_maps_each_failure_to_its_code(exc, code, retryable):
    verdict = classify(exc)
    assert (verdict.code, verdict.retryable) == (code, retryable)


def test_classify_sees_a_name_resolution_failure_under_a_ccxt_wrapper():
    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as cause:
            raise ccxt.ExchangeNotAvailable("kraken GET https://api.kraken.com/0/public/Assets") from cause
    except ccxt.ExchangeNotAvailable as exc:
        verdict = classify(exc)
    assert (verdict.code, verdict.retryable) == ("unreachable", False)


def test_classify_sees_a_refused_connection_under_a_ccxt_wrapper():
    async def refused() -> BaseException:
        async with aiohttp.ClientSession() as session:
            try:
                await session.get(f"http://127.0.0.1:{closed_port()}/")
            except aiohttp.ClientConnectorError as cause:
                try:
                    raise ccxt.ExchangeNotAvailable("kraken GET") from cause
                except ccxt.ExchangeNotAvailable as exc:
                    return exc
        raise AssertionError("a closed port accepted the connection")

    verdict = classify(asyncio.run(refused()))
    assert (verdict.code, verdict.retryable) == ("unreachable", False)
