"""Concurrent fetching: bounded concurrency, per-source rate limits, timeouts, retries with backoff and jitter."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import socket
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from shared.errors import FetchError
from shared.logging import redact
from shared.settings import HttpSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class RateLimiter:
    """Spaces request starts of one source at 1/rate seconds on average; requests may still overlap in flight.

    Two steps, so that queueing never holds a request permit and freed permits never bunch starts: `wait()` books
    the caller a slot in the source's queue (no permit held while it sleeps); `admit()`, taken under the permit
    right before the request goes out, is the start itself. It keeps a schedule (one interval per start) and lets
    a start run at most `tolerance_s` ahead of it, so the starts conform to a token bucket of rate `rate_per_s`
    and depth 1 + rate * tolerance_s: whatever releases callers together (freed permits, a stalled event loop)
    releases at most that many back to back.

    Why a tolerance at all: the loop wakes a sleeper a few milliseconds late (a garbage collection or a busy
    machine pauses it for longer), and a schedule that restarted from each late start would lose every such delay
    for good (measured: +30 % wall at 80 requests/s on a busy 2-core machine). With the tolerance, the starts
    fall behind their slots only by the longest single delay beyond it. At Kraken's 0.8/s, 0.25 s still keeps any
    two starts at least 1 s apart.
    """

    def __init__(self, rate_per_s: float, tolerance_s: float = 0.25):
        self.interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self.tolerance = tolerance_s
        self._next = 0.0
        self._due = float("-inf")  # when the next start is due on the schedule
        self._lock = asyncio.Lock()

    @property
    def burst(self) -> float:
        """The most starts that may go out back to back."""
        return 1.0 + self.tolerance / self.interval if self.interval else float("inf")

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)

    async def admit(self, units: float = 1.0) -> None:
        """A start that spends `units` of the rate (1 a request; a weighted API's request weight)."""
        if not self.interval:
            return
        # No await between reading the clock and booking: the event loop makes this atomic without a lock.
        now = asyncio.get_running_loop().time()
        start = self.book(now, units)
        if start > now:
            await asyncio.sleep(start - now)

    def book(self, now: float, units: float = 1.0) -> float:
        """The start for a caller ready at `now` (a GCRA): when it is due, or up to `tolerance` earlier. A late
        start makes the next one due an interval after it, but the next callers may start up to the tolerance
        before that, so a delay shorter than the tolerance does not hold back the callers after it. A start
        worth several units holds the next one back by as many intervals."""
        start = max(now, self._due - self.tolerance)
        self._due = max(self._due, start) + self.interval * units
        return start


@dataclass
class _Admission:
    """The request slot Fetcher.call admitted for one attempt of an operation, shared by the tasks it spawns."""

    limiter: RateLimiter
    used: bool = False


_admission: ContextVar[_Admission | None] = ContextVar("cst_fetch_admission", default=None)


async def pace_request(units: float = 1.0) -> None:
    """Called at the start of every HTTP request an operation makes (ccxt's per-request throttle hook), with what
    the request spends of the rate: 1, or its weight where the API limits request weight.

    Fetcher.call admits one start per attempt; an operation that makes more than one request (ccxt's
    load_markets: Assets, then AssetPairs; on some exchanges one request per market type) takes a slot of its
    own for each further one, so no request of the source ever starts outside the rate limit. Under a weighted
    call nothing is admitted ahead: each request is admitted here with its own weight, known only now (Binance's
    klines weigh by `limit`), since a weight charged after the start would let several heavy starts through
    together.
    """
    admission = _admission.get()
    if admission is None:
        return  # not under Fetcher.call: nothing to pace against (no such caller in the ingest paths)
    if not admission.used:
        admission.used = True
        return
    await admission.limiter.admit(units)


@dataclass
class Classified:
    code: str
    retryable: bool
    detail: str


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def classify(exc: BaseException) -> Classified:
    """Map any fetch exception (aiohttp, ccxt, JSON) to a reason code and whether retrying can help."""
    import ccxt  # the async and sync ccxt share their exception classes

    chain = _chain(exc)
    for e in chain:
        # Name resolution or refused connections do not heal within a retry budget: fail fast.
        if isinstance(e, (aiohttp.ClientConnectorDNSError, socket.gaierror)):
            return Classified("unreachable", False, f"cannot resolve host: {e}")
        if isinstance(e, aiohttp.ClientConnectorError):
            return Classified("unreachable", False, f"cannot connect: {e}")
    top = chain[0]
    if isinstance(top, HttpStatusError):
        if top.status == 418:
            # Binance's answer to an IP that kept hammering after 429s: banned for minutes to days; retrying
            # extends the ban.
            return Classified("ip_banned", False, str(top))
        if top.status == 429:
            return Classified("rate_limited", True, str(top))
        if top.status >= 500:
            return Classified("server_error", True, str(top))
        return Classified(f"http_{top.status}", False, str(top))
    if isinstance(top, ccxt.DDoSProtection) and _BAN.search(str(top)):
        return Classified("ip_banned", False, str(top))
    if isinstance(top, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
        return Classified("rate_limited", True, str(top))
    if isinstance(top, (ccxt.RequestTimeout, asyncio.TimeoutError, TimeoutError)):
        return Classified("timeout", True, str(top) or "request timed out")
    if isinstance(top, (MalformedResponse, ccxt.BadResponse, json.JSONDecodeError, aiohttp.ContentTypeError)):
        return Classified("malformed_response", False, str(top))
    if isinstance(top, ccxt.BadSymbol):
        return Classified("unknown_symbol", False, str(top))
    if isinstance(top, (ccxt.ExchangeNotAvailable, ccxt.OnMaintenance)):
        return Classified("server_error", True, str(top))
    if isinstance(top, (ccxt.NetworkError, aiohttp.ClientError)):
        return Classified("network_error", True, str(top))
    if isinstance(top, ccxt.ExchangeError):
        return Classified("exchange_error", False, str(top))
    return Classified("unexpected_error", False, f"{type(top).__name__}: {top}")


# ccxt words an HTTP status as "<id> <method> <url> <status> <reason> <body>".
_BAN = re.compile(r"\s418\s|IP banned", re.IGNORECASE)


class HttpStatusError(Exception):
    """A non-2xx answer; the API's own explanation (its body, redacted and shortened) travels with it."""

    def __init__(self, status: int, url: str, body: str = "", limit: int = 300):
        text = " ".join(redact(body).split())
        detail = f": {text[:limit]}{'...' if len(text) > limit else ''}" if text else ""
        super().__init__(f"HTTP {status} from {url}{detail}")
        self.status = status


class MalformedResponse(Exception):
    pass


class Fetcher:
    """Shared by every source of one run: a global concurrency bound, a rate limiter per source, one retry loop."""

    def __init__(self, http: HttpSettings, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.http = http
        self.semaphore = asyncio.Semaphore(http.concurrency)
        self._limiters: dict[str, RateLimiter] = {}
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self.attempts: dict[str, int] = {}

    def limiter(self, source: str) -> RateLimiter:
        if source not in self._limiters:
            rate = self.http.rate_per_s.get(source, self.http.default_rate_per_s)
            self._limiters[source] = RateLimiter(rate)
        return self._limiters[source]

    def backoff(self, attempt: int) -> float:
        # Retry timing only, never data. Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2^attempt)].
        return random.uniform(0, min(self.http.backoff_max_s, self.http.backoff_base_s * 2**attempt))

    async def call(self, source: str, what: str, op: Callable[[], Awaitable[T]], *, weighted: bool = False) -> T:
        """Run op under the concurrency bound and rate limit, retrying what can heal; raise FetchError otherwise.
        `weighted`: the op's requests admit themselves with their weight (pace_request), none is admitted ahead."""
        limiter = self.limiter(source)
        attempt = 0
        while True:
            attempt += 1
            self.attempts[source] = self.attempts.get(source, 0) + 1
            await limiter.wait()
            try:
                async with self.semaphore:
                    if not weighted:
                        await limiter.admit()
                    # The op's task (wait_for runs it as one) inherits this attempt's admission.
                    token = _admission.set(_Admission(limiter, used=weighted))
                    try:
                        return await asyncio.wait_for(op(), timeout=self.http.timeout_s)
                    finally:
                        _admission.reset(token)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is classified, reported or retried
                verdict = classify(exc)
                if not verdict.retryable or attempt > self.http.max_retries:
                    raise FetchError(
                        verdict.code,
                        f"{source} {what}: {verdict.detail} (after {attempt} attempt{'s' if attempt > 1 else ''})",
                        source=source,
                        attempts=attempt,
                        retryable=verdict.retryable,
                    ) from None
                delay = self.backoff(attempt - 1)
                log.info("%s %s: %s, retry %d in %.2fs", source, what, verdict.code, attempt, delay)
                await self._sleep(delay)

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.http.timeout_s), headers={"User-Agent": "cst/0.1"}
            )
        return self._session

    async def get_json(self, source: str, url: str, params: dict[str, Any] | None = None) -> Any:
        """GET a JSON document with the retry policy; non-2xx and unparsable bodies are errors, never empty data."""

        async def op() -> Any:
            session = await self.session()
            async with session.get(url, params=params) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    raise HttpStatusError(resp.status, url.split("?")[0], text)
                try:
                    return json.loads(text)
                except ValueError as exc:
                    raise MalformedResponse(f"malformed JSON from {url.split('?')[0]} ({len(text)} bytes)") from exc

        return await self.call(source, url.split("?")[0], op)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
