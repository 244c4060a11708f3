"""Backfill pages per second against a loopback Kraken rate-limited to 10 requests per second: how close to the limit."""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta

from services.ingest.backfill import backfill
from shared.settings import ExchangeSettings, HttpSettings, Settings, SourceSettings
from shared.storage import LocalLake
from tests.ingest.fakes.kraken import NOW_S, FakeKraken
from tests.ingest.fakes.market import FakeMarketApis

COINS = [f"C{i:03d}" for i in range(20)]
RATE_PER_S = 10.0  # Kraken's public REST allowance is of this order; the fake answers at once
PAGE = 24  # candles per OHLC page: 10 days of hourly history is 10 pages per coin
DAYS = 10
HOUR_MS = 3_600_000


def main() -> dict:
    now = NOW_S // 3600 * 3600 * 1000
    with FakeKraken(COINS, page_size=PAGE) as kraken, FakeMarketApis() as market, \
            tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            universe=COINS, timeframes=["1h"],
            http=HttpSettings(timeout_s=10.0, rate_per_s={"exchange": RATE_PER_S}),
            exchange=ExchangeSettings(base_url=kraken.url, history={"1h": timedelta(days=DAYS)}),
            sources=SourceSettings(fear_greed_url=market.fear_greed_url, blockchain_url=market.blockchain_url,
                                   coinmetrics_url=market.coinmetrics_url, blockchain_metrics=["hash-rate"],
                                   coinmetrics_assets=[]),
        )
        started = time.perf_counter()
        report = backfill(settings, LocalLake(tmp), since_ms=now - DAYS * 24 * HOUR_MS, now_ms=now)
        wall = time.perf_counter() - started
        requests = sum(n for (endpoint, _), n in kraken.requests.items() if endpoint == "OHLC")
        market_load = sum(n for (endpoint, _), n in kraken.requests.items() if endpoint in ("Assets", "AssetPairs"))
    floor = (requests + market_load) / RATE_PER_S
    out = {"coins": len(COINS), "pages": report.pages, "candles": report.candles, "failures": len(report.failures),
           "ohlc_requests": requests, "wall_s": round(wall, 2), "pages_per_s": round(report.pages / wall, 2),
           "rate_limit_per_s": RATE_PER_S, "rate_limit_floor_s": round(floor, 2),
           "wall_over_floor": round(wall / floor, 3)}
    print(out)
    return out


if __name__ == "__main__":
    main()
