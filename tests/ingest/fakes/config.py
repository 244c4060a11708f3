"""Settings that point every source at the loopback fakes, with timeouts and backoff small enough for tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.settings import ExchangeSettings, FeatureSettings, HttpSettings, Settings, SourceSettings
from tests.ingest.fakes.market import FakeMarketApis


def fast_http(**overrides: Any) -> HttpSettings:
    """One-second timeout, two retries, backoff of at most 50 ms; rate limits far above what a test sends."""
    knobs: dict[str, Any] = {"timeout_s": 1.0, "max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
                             "rate_per_s": {}, "default_rate_per_s": 10_000.0}
    return HttpSettings(**{**knobs, **overrides})


def loopback_settings(kraken_url: str, market: FakeMarketApis | None = None, *, coins: list[str],
                      history: timedelta = timedelta(hours=48), http: HttpSettings | None = None,
                      **exchange: Any) -> Settings:
    """One hourly timeframe, `history` of it, and (with `market`) the sentiment / on-chain sources on loopback. The
    fakes serve days, not the months the recursive indicators need to settle: every feature row of a run's span is
    written (tests/features/test_run_span.py checks the settling on the recorded files)."""
    sources = SourceSettings()
    if market is not None:
        sources = SourceSettings(fear_greed_url=market.fear_greed_url, blockchain_url=market.blockchain_url,
                                 coinmetrics_url=market.coinmetrics_url, blockchain_metrics=["hash-rate"],
                                 coinmetrics_assets=["ETH"])
    return Settings(
        universe=coins,
        timeframes=["1h"],
        http=http or fast_http(),
        exchange=ExchangeSettings(base_url=kraken_url, history={"1h": history}, **exchange),
        sources=sources,
        features=FeatureSettings(settle_bars=0),
    )
