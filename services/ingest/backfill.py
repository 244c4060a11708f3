"""Backfill: real history into the lake, page by page, resumable where it stopped; training reads it with each run's data.

Every OHLCV page lands on its own as soon as it arrives (its raw record, its parsed candles as a staged,
content-addressed part, its history marker (state/history/parts/), then the series' cursor), so an interrupted
backfill loses nothing and the next one continues from the cursor without fetching a page twice. The market-wide
histories (Fear & Greed with limit=0, on-chain charts) come whole, one task each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from services.ingest import logic
from services.ingest.fetch import Fetcher
from services.ingest.sources.exchange import ExchangeSource
from services.ingest.sources.market import (
    BlockchainSource,
    CoinMetricsSource,
    FearGreedSource,
)
from shared.contracts import FetchFailure
from shared.datasets import STAGING, add_history_parts, put_series
from shared.errors import CstError, FetchError, LakeKeyNotFound
from shared.settings import Settings, timeframe_ms
from shared.storage import Lake


def cursor_key(exchange: str, coin: str, timeframe: str) -> str:
    return f"state/backfill/source={exchange}/coin={coin}/timeframe={timeframe}.json"


@dataclass
class BackfillReport:
    pages: int = 0
    candles: int = 0
    already_present: int = 0
    series: dict[str, dict] = field(default_factory=dict)  # "coin tf" -> {"from", "to", "pages", "candles"}
    failures: list[FetchFailure] = field(default_factory=list)


async def _ohlcv(source: ExchangeSource, fetcher: Fetcher, lake: Lake, coin: str, tf: str, since_ms: int,
                 now_ms: int, report: BackfillReport, on_page: Callable[[str], None]) -> None:
    """The series' history from `since_ms` to the latest closed candle. The cursor state keeps where the backfilled
    history starts and ends: a later backfill fills only what is missing before the start (an earlier --since) and
    after the end, and an interrupted one resumes inside the span it was filling."""
    settings = source.settings
    key = cursor_key(settings.id, coin, tf)
    try:
        state = lake.get_json(key)
    except LakeKeyNotFound:
        state = {}
    await source._markets(fetcher)
    stats = report.series.setdefault(f"{coin} {tf}", {"from": since_ms, "to": None, "pages": 0, "candles": 0})
    if "next_since" not in state:
        state = {"first": since_ms, "next_since": since_ms}
    elif since_ms < state["first"] and "gap_next" not in state:
        state = {**state, "gap_next": since_ms, "gap_end": state["first"], "first": since_ms}
    lake.put_json(key, state)
    if "gap_next" in state:  # the span before the earlier start, up to where the history already began
        await _pages(source, fetcher, lake, coin, tf, key, state, "gap_next", state["gap_end"], report, stats, on_page)
        state.pop("gap_next"), state.pop("gap_end")
        lake.put_json(key, state)
    await _pages(source, fetcher, lake, coin, tf, key, state, "next_since", now_ms, report, stats, on_page)


async def _pages(source: ExchangeSource, fetcher: Fetcher, lake: Lake, coin: str, tf: str, key: str, state: dict,
                 cursor_field: str, end_ms: int, report: BackfillReport, stats: dict,
                 on_page: Callable[[str], None]) -> None:
    """Pages from state[cursor_field] to end_ms, each landed and its part recorded before the cursor moves."""
    step = timeframe_ms(tf)
    while state[cursor_field] + step <= end_ms:
        cursor = state[cursor_field]
        page = await source.ohlcv_page(fetcher, coin, tf, cursor)
        done = [c for c in page if cursor <= c[0] and c[0] + step <= end_ms]  # closed candles of the span only
        if not done:
            break
        record = source.ohlcv_record(coin, tf, cursor, page)
        if not lake.put_json(record.lake_key(), record.model_dump(mode="json"), if_absent=True):
            report.already_present += 1
        # The page is history only once its part is recorded; the cursor moves last.
        add_history_parts(lake, put_series(lake, STAGING, [source.candle_series(coin, tf, done)], content_addressed=True))
        state[cursor_field] = int(done[-1][0]) + step
        lake.put_json(key, state)
        report.pages += 1
        report.candles += len(done)
        stats["pages"] += 1
        stats["candles"] += len(done)
        stats["to"] = state[cursor_field]
        on_page(f"{coin} {tf}")


def backfill(settings: Settings, lake: Lake, *, since_ms: int, now_ms: int,
             on_page: Callable[[str], None] = lambda _s: None) -> BackfillReport:
    """OHLCV of every coin and timeframe from the cursor (or `since_ms`) to the latest closed candle, and the
    market-wide histories; every failure is reported with its code, and what landed stays."""
    report = BackfillReport()
    coins, unlisted = logic.exchange_coins(settings)
    report.failures.extend(unlisted)
    source = ExchangeSource(settings.exchange, coins, settings.timeframes, settings.http.timeout_s,
                            now_ms=now_ms, include=())

    async def go() -> None:
        fetcher = Fetcher(settings.http)
        try:
            async def one(coin: str, tf: str) -> None:
                try:
                    await _ohlcv(source, fetcher, lake, coin, tf, since_ms, now_ms, report, on_page)
                except (FetchError, CstError) as exc:
                    report.failures.append(FetchFailure(source=settings.exchange.id, task=f"backfill {coin} {tf}",
                                                        code=exc.code, message=exc.message,
                                                        attempts=getattr(exc, "attempts", 1)))

            await asyncio.gather(*(one(c, tf) for c in coins for tf in settings.timeframes))
        finally:
            await fetcher.close()
            await source.close()

    asyncio.run(go())
    # The market-wide histories come whole: Fear & Greed with limit=0, the on-chain charts and Coin Metrics.
    chain = [a for a in settings.sources.coinmetrics_assets if a in coins]
    market = [FearGreedSource(settings.sources), BlockchainSource(settings.sources),
              CoinMetricsSource(settings.sources, chain, now_ms=now_ms)]
    fetched = asyncio.run(logic.fetch_sources(market, settings))
    _, present = logic.land(lake, fetched)
    report.already_present += present
    add_history_parts(lake, put_series(lake, STAGING, [s for _, r in fetched.results for s in r.series],
                                content_addressed=True))
    report.failures.extend(fetched.failures)
    return report
