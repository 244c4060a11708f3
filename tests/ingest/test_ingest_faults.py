"""A whole ingest run against loopback fakes with failing coins: the rest lands; failures are reported, bounded."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.features.steps import quality_report
from services.ingest.logic import Fetched, fetch_sources
from services.ingest.sources.base import FetchResult, FetchTask
from services.ingest.sources.exchange import ExchangeSource
from services.orchestrator import runner
from shared import runs
from shared.contracts import Series
from shared.errors import CstError
from shared.pipeline.context import StepContext
from shared.settings import ExchangeSettings, Settings, SourceSettings
from shared.storage import LocalLake
from tests.ingest.fakes.config import fast_http, loopback_settings
from tests.ingest.fakes.kraken import NOW_S, FakeKraken, Fault
from tests.ingest.fakes.market import FakeMarketApis
from tests.ingest.fakes.server import closed_port

NOW_MS = NOW_S * 1000
HEALTHY = ["BTC", "ETH"]
# Each failing coin fails every market-data request; FLAKY is rate limited twice per endpoint, then answers.
FAULTS = {
    "RATE": Fault("rate_limited"),
    "BOOM": Fault("server_error"),
    "SLOW": Fault("slow", delay_s=5.0),  # five times the 1 s client timeout
    "JUNK": Fault("malformed"),
    "FLAKY": Fault("rate_limited", times=2),
}
EXPECTED = {"RATE": "rate_limited", "BOOM": "server_error", "SLOW": "timeout", "JUNK": "malformed_response"}
ENDPOINTS = {"OHLC", "Depth", "Trades"}  # one task each per coin: ohlcv 1h, orderbook, trades


@pytest.fixture
def faulty_kraken() -> Iterator[FakeKraken]:
    with FakeKraken([*HEALTHY, *FAULTS]) as fake:
        fake.faults.update(FAULTS)
        yield fake


def ingest(settings: Settings, lake: LocalLake, now_ms: int):
    """The pipeline's ingest and validate steps of a live run at `now_ms`: their outputs and the quality report."""
    ctx = StepContext(settings, lake)
    ref = runs.new_ref(settings, "live", now_ms)
    ingested = runner.run_ingest(ctx, ref)
    validated = runner.run_step(ctx, "validate", ref)
    return ingested, validated, quality_report(ctx, ref.run_id)


def landed_symbols(lake: LocalLake, source: str) -> set[str]:
    return {m.group(1) for k in lake.list(f"raw/source={source}/") if (m := re.search(r"/symbol=([^/]+)/", k))}


def test_ingest_lands_healthy_coins_and_reports_each_failure_with_its_code(faulty_kraken: FakeKraken,
                                                                          market_apis: FakeMarketApis, tmp_path: Path):
    settings = loopback_settings(faulty_kraken.url, market_apis, coins=[*HEALTHY, *FAULTS])
    retries = settings.http.max_retries
    lake = LocalLake(tmp_path / "lake")

    report, validated, quality = ingest(settings, lake, NOW_MS)

    # Every task of a failing coin is reported with its code; nothing else failed.
    attempts = {code: 1 if code == "malformed_response" else 1 + retries for code in EXPECTED.values()}
    expected = {(task, code, attempts[code]) for coin, code in EXPECTED.items()
                for task in (f"ohlcv {coin} 1h", f"orderbook {coin}", f"trades {coin}")}
    assert {(f.task, f.code, f.attempts) for f in report.failures} == expected
    assert {f.source for f in report.failures} == {"kraken"}

    # Retries are bounded: the fake saw exactly that many requests per failing coin and endpoint.
    for coin, code in EXPECTED.items():
        assert faulty_kraken.requests_for(coin) == dict.fromkeys(ENDPOINTS, attempts[code]), coin
    # FLAKY healed on the third try of each endpoint (48 h of history is one OHLC page).
    assert faulty_kraken.requests_for("FLAKY") == dict.fromkeys(ENDPOINTS, 3)

    # Nothing of a failed task lands; healthy and healed coins land all three layers.
    assert landed_symbols(lake, "kraken") == {"BTC-USD", "ETH-USD", "FLAKY-USD"}
    for symbol in ("BTC-USD", "ETH-USD", "FLAKY-USD"):
        timeframes = {k.split("/timeframe=")[1].split("/")[0] for k in lake.list(f"raw/source=kraken/symbol={symbol}/")}
        assert timeframes == {"1h", "snapshot"}, symbol  # ohlcv and trades are 1h, the book a snapshot
    assert landed_symbols(lake, "alternative.me") == {"market"}
    assert landed_symbols(lake, "blockchain.com") == {"BTC.hash-rate"}
    assert landed_symbols(lake, "coinmetrics") == {"ETH"}
    assert report.landed == len(lake.list("raw/")) and report.already_present == 0

    # The gate saw the healthy series, and none of a failed coin.
    assert "ohlcv/1h/FLAKY-USD" in quality.series
    assert not [k for k in quality.series if any(c in k for c in EXPECTED)]
    assert lake.exists(validated.quality_key)


def test_a_second_identical_run_lands_nothing_new(faulty_kraken: FakeKraken, market_apis: FakeMarketApis,
                                                  tmp_path: Path):
    faulty_kraken.faults.clear()
    settings = loopback_settings(faulty_kraken.url, market_apis, coins=HEALTHY)
    lake = LocalLake(tmp_path / "lake")
    first, _, _ = ingest(settings, lake, NOW_MS)
    keys = lake.list()
    requests = sum(faulty_kraken.requests.values())
    again, _, _ = ingest(settings, lake, NOW_MS)
    assert first.landed > 0 and first.failures == []
    # The same run again: its steps are done, so nothing is fetched or written.
    assert again == first and lake.list() == keys and sum(faulty_kraken.requests.values()) == requests
    # The landing itself is content-addressed: the same raw records land once whichever run brings them.
    from services.ingest import logic

    # At the run's as-of: its cycle, the close of the hour (13:00), not the moment it was started (13:45).
    fetched = asyncio.run(fetch_sources(logic.build_sources("live", settings, runs.cycle_as_of(settings, NOW_MS)),
                                        settings))
    assert logic.land(lake, fetched) == (0, first.landed)


def test_exchange_only_run_with_a_rate_limited_coin_is_bounded(faulty_kraken: FakeKraken):
    # The exchange source alone, built directly: one failing coin beside a healthy one, OHLCV only.
    settings = loopback_settings(faulty_kraken.url, coins=["BTC", "RATE"])
    source = ExchangeSource(settings.exchange, ["BTC", "RATE"], ["1h"], settings.http.timeout_s, now_ms=NOW_MS,
                            include=("ohlcv",))
    fetched = asyncio.run(fetch_sources([source], settings))
    assert [(f.task, f.code, f.attempts) for f in fetched.failures] == [("ohlcv RATE 1h", "rate_limited", 3)]
    assert [t.name for t, _ in fetched.results] == ["ohlcv BTC 1h"]
    assert faulty_kraken.requests_for("RATE") == {"OHLC": 3}


def test_nothing_reachable_is_one_actionable_error_and_lands_nothing(tmp_path: Path):
    dead = f"http://127.0.0.1:{closed_port()}"
    settings = Settings(
        universe=["BTC"],
        timeframes=["1h"],
        http=fast_http(),
        exchange=ExchangeSettings(base_url=dead),
        sources=SourceSettings(fear_greed_url=f"{dead}/fng/", blockchain_url=f"{dead}/charts",
                               coinmetrics_url=f"{dead}/v4", blockchain_metrics=["hash-rate"], coinmetrics_assets=[]),
    )
    lake = LocalLake(tmp_path / "lake")
    with pytest.raises(CstError) as info:
        ingest(settings, lake, NOW_MS)
    assert info.value.code == "sources_unreachable"
    assert "127.0.0.1" in info.value.message and "offline replay" in info.value.message
    assert lake.list() == []


def test_fetched_repr_is_a_summary_not_the_data():
    # asyncio.run() formats its finished main task, result included, twice per run (restoring SIGINT handling);
    # a full repr of 100 symbols' series took about a second of every ingest.
    big = Series("ohlcv", "1h", "BTC-USD", "kraken", np.arange(5000, dtype=np.int64), {"close": np.ones(5000)},
                 ["[1, 2, 3, 4, 5, 6]"] * 5000)
    task = FetchTask("kraken", "ohlcv BTC 1h", run=None)  # type: ignore[arg-type]
    fetched = Fetched(results=[(task, FetchResult([], [big]))] * 100, unreachable={"127.0.0.1:1": "refused"})
    assert repr(fetched) == "Fetched(results=100, failures=0, unreachable=['127.0.0.1:1'])"
