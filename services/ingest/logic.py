"""Ingest: run every source's tasks concurrently, land what succeeded with provenance, gate it, report failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from services.features.quality.gate import GateOutcome, run_gate
from services.ingest.fetch import Fetcher
from services.ingest.sources.base import FetchResult, FetchTask, Source
from services.ingest.sources.exchange import ExchangeSource
from services.ingest.sources.files import FileSource
from services.ingest.sources.market import (
    BlockchainSource,
    CoinMetricsSource,
    FearGreedSource,
)
from shared.contracts import FetchFailure
from shared.errors import CstError, FetchError
from shared.settings import Settings
from shared.storage import Lake

log = logging.getLogger(__name__)
# Each failed fetch, for the logs where nobody reads a terminal (Lambda); the CLI prints the run's failures itself,
# grouped, and quiets this one.
fetch_log = logging.getLogger(__name__ + ".fetch_failures")

OFFLINE_HINT = "offline replay: make run SOURCE=../shared/data AS_OF=2024-07-01T00:00:00Z  (cst run --source ../shared/data --as-of ...)"


@dataclass
class Fetched:
    results: list[tuple[FetchTask, FetchResult]] = field(default_factory=list)
    failures: list[FetchFailure] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        # asyncio.run() formats its finished main task, result included, when it restores the SIGINT handler
        # (signal.getsignal -> enum ValueError message): a full repr would format every array and body fetched.
        return f"Fetched(results={len(self.results)}, failures={len(self.failures)}, unreachable={sorted(self.unreachable)})"


def build_sources(source: str, settings: Settings, now_ms: int, trades_since: dict[str, int] | None = None,
                  known_files: dict[str, dict] | None = None, coins: list[str] | None = None,
                  market: bool = True, universe: list[str] | None = None) -> list[Source]:
    """'live' -> exchange + sentiment + on-chain adapters; a directory -> file import. `trades_since`: per coin,
    where the trades already collected end; `known_files`: what earlier imports of the directory landed; `coins`:
    the exchange's symbols to fetch (the universe unless given); `universe`: all the exchange's coins of the run
    (`universe.coins` unless given: the listed markets when it is "listed"); `market`: with the market-wide
    sources (sentiment, on-chain: one batch of a run fetches them)."""
    if source != "live":
        files = FileSource(source, known_files)
        files.keep_venue(settings.sources.venue, settings.sources.venue_preference)
        return [files]
    universe = settings.universe.coins if universe is None else universe
    coins = universe if coins is None else coins
    if universe == "listed" or coins == "listed":
        raise ValueError("universe.coins is 'listed': the exchange's coins are read first (exchange_coins)")
    timeout = settings.http.timeout_s
    sources: list[Source] = [ExchangeSource(settings.exchange, coins, settings.timeframes, timeout, now_ms=now_ms,
                                            trades_since=trades_since)]
    if market:
        chain_assets = [a for a in settings.sources.coinmetrics_assets if a in universe]
        sources += [FearGreedSource(settings.sources), BlockchainSource(settings.sources),
                    CoinMetricsSource(settings.sources, chain_assets, now_ms=now_ms)]
    return sources


def exchange_coins(settings: Settings) -> tuple[list[str], list[FetchFailure]]:
    """The live exchange's coins: `universe.coins`, or with "listed" every active market of the exchange in the
    quote (and settlement) currency, read from its market list now, at most `exchange.max_symbols` of them (more is
    reported as a failure naming the coins left out)."""
    if settings.universe.coins != "listed":
        return list(settings.universe.coins), []

    async def read() -> list[str]:
        fetcher = Fetcher(settings.http)
        source = ExchangeSource(settings.exchange, [], settings.timeframes, settings.http.timeout_s)
        try:
            return await source.listed(fetcher)
        finally:
            await fetcher.close()
            await source.close()

    try:
        listed = asyncio.run(read())
    except (FetchError, CstError) as exc:
        raise CstError(exc.code, f"the markets of {settings.exchange.id} could not be read, so no coin is known: "
                                 f"{exc.message}") from None
    cap = settings.exchange.max_symbols
    if len(listed) <= cap:
        return listed, []
    left = listed[cap:]
    return listed[:cap], [FetchFailure(
        source=settings.exchange.id, task="markets", code="too_many_listed", attempts=1,
        message=f"{len(listed)} markets listed, exchange.max_symbols is {cap}: {len(left)} not fetched "
                f"({', '.join(left[:5])}{', ...' if len(left) > 5 else ''}); raise exchange.max_symbols")]


async def fetch_all(tasks: list[FetchTask], fetcher: Fetcher, on_done: Callable[[FetchTask], None] | None = None) -> Fetched:
    """Every task runs concurrently; one failing never stops another, and every failure is reported."""
    out = Fetched()

    async def one(task: FetchTask) -> None:
        try:
            result = await task.run(fetcher)
        except FetchError as exc:
            out.failures.append(FetchFailure(source=task.source, task=task.name, code=exc.code, message=exc.message,
                                             attempts=exc.attempts))
            if exc.code == "unreachable":
                out.unreachable[task.host or task.source] = exc.message
        except CstError as exc:
            out.failures.append(FetchFailure(source=task.source, task=task.name, code=exc.code, message=exc.message,
                                             attempts=1))
        except Exception as exc:  # noqa: BLE001 - an adapter bug must not take the other coins down
            log.exception("task %s failed unexpectedly", task.name)
            out.failures.append(FetchFailure(source=task.source, task=task.name, code="unexpected_error",
                                             message=f"{type(exc).__name__}: {exc}", attempts=1))
        else:
            out.results.append((task, result))
        finally:
            if on_done is not None:
                on_done(task)

    await asyncio.gather(*(one(t) for t in tasks))
    for f in out.failures:
        fetch_log.warning("fetch failed: %s %s [%s] %s", f.source, f.task, f.code, f.message)
    return out


async def fetch_sources(sources: list[Source], settings: Settings, on_start: Callable[[int], None] | None = None,
                        on_done: Callable[[FetchTask], None] | None = None) -> Fetched:
    fetcher = Fetcher(settings.http)
    try:
        tasks = [t for s in sources for t in s.tasks()]
        if on_start is not None:
            on_start(len(tasks))
        return await fetch_all(tasks, fetcher, on_done)
    finally:
        await fetcher.close()
        for s in sources:
            await s.close()


def land(lake: Lake, fetched: Fetched) -> tuple[int, int]:
    """Raw records of successful tasks; create-if-absent on content-addressed keys, so re-landing is a no-op."""
    landed = present = 0
    for _, result in fetched.results:
        for record in result.records:
            if lake.put_json(record.lake_key(), record.model_dump(mode="json"), if_absent=True):
                landed += 1
            else:
                present += 1
    return landed, present


def gate(fetched: Fetched, settings: Settings, as_of_ms: int, ignored: dict[str, str] | None = None,
         skip: frozenset[str] = frozenset()) -> GateOutcome:
    series = [s for _, r in fetched.results for s in r.series]
    outcome = run_gate(series, as_of_ms, settings.quality, skip)
    outcome.report.files_ignored = dict(ignored or {})
    return outcome


def unreachable_error(fetched: Fetched) -> CstError:
    hosts = ", ".join(sorted(fetched.unreachable))
    return CstError("sources_unreachable", f"no source could be reached ({hosts}); nothing was ingested.\n  {OFFLINE_HINT}")
