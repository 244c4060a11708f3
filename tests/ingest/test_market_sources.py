"""Fear & Greed, blockchain.com and Coin Metrics adapters against loopback fakes in each API's documented format."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from pydantic import SecretStr

import shared.logging
from services.ingest.logic import Fetched, fetch_sources, land
from services.ingest.sources.base import Source
from services.ingest.sources.market import BlockchainSource, CoinMetricsSource, FearGreedSource
from shared.settings import Settings, SourceSettings
from shared.storage import LocalLake
from tests.ingest.fakes.config import fast_http
from tests.ingest.fakes.market import D0, DAY, FakeMarketApis

API_KEY = "cm-test-key-5f2b9c"  # a made-up key; the point is where it must never show up
NOW_MS = (D0 + 3 * DAY) * 1000  # 2024-01-02T00:00Z


def settings_for(market: FakeMarketApis, **overrides: object) -> Settings:
    sources: dict[str, object] = {
        "fear_greed_url": market.fear_greed_url,
        "blockchain_url": market.blockchain_url,
        "coinmetrics_url": market.coinmetrics_url,
        "blockchain_metrics": ["hash-rate"],
        "coinmetrics_lookback": timedelta(days=3),
    }
    return Settings(http=fast_http(), sources=SourceSettings(**{**sources, **overrides}))  # type: ignore[arg-type]


def fetch(settings: Settings, source: Source) -> Fetched:
    return asyncio.run(fetch_sources([source], settings))


def ms(*epoch_s: int) -> list[int]:
    return [s * 1000 for s in epoch_s]


def only_failure(fetched: Fetched) -> tuple[str, int, str]:
    assert fetched.results == []
    [failure] = fetched.failures
    return failure.code, failure.attempts, failure.message


# ---- Fear & Greed --------------------------------------------------------------------------------------------

def test_fear_greed_values_and_days(market_apis: FakeMarketApis):
    settings = settings_for(market_apis)
    fetched = fetch(settings, FearGreedSource(settings.sources))
    [(_, result)] = fetched.results
    [series] = result.series
    # alternative.me sends newest first; the series keeps the delivered order (the gate sorts and notes it).
    np.testing.assert_array_equal(series.ts, ms(D0 + 2 * DAY, D0 + DAY, D0))
    np.testing.assert_array_equal(series.fields["value"], [65, 70, 54])
    assert (series.key, series.source) == ("sentiment/1d/market", "alternative.me")
    assert market_apis.requests == [("/fng/", {"limit": "0", "format": "json"})]
    assert result.records[0].body["data"][0]["value_classification"] == "Greed"


def test_fear_greed_metadata_error_is_reported_not_landed(market_apis: FakeMarketApis, tmp_path: Path):
    market_apis.mode["fear_greed"] = "api_error"
    settings = settings_for(market_apis)
    fetched = fetch(settings, FearGreedSource(settings.sources))
    code, attempts, message = only_failure(fetched)
    assert (code, attempts) == ("malformed_response", 1)
    assert "Invalid limit" in message
    lake = LocalLake(tmp_path / "lake")
    assert land(lake, fetched) == (0, 0) and lake.list() == []


def test_fear_greed_malformed_json_is_not_retried(market_apis: FakeMarketApis):
    market_apis.mode["fear_greed"] = "malformed"
    settings = settings_for(market_apis)
    code, attempts, _ = only_failure(fetch(settings, FearGreedSource(settings.sources)))
    assert (code, attempts) == ("malformed_response", 1)
    assert len(market_apis.requests) == 1


# ---- blockchain.com ------------------------------------------------------------------------------------------

def test_blockchain_chart_values(market_apis: FakeMarketApis):
    settings = settings_for(market_apis)
    [(_, result)] = fetch(settings, BlockchainSource(settings.sources)).results
    [series] = result.series
    np.testing.assert_array_equal(series.ts, ms(D0, D0 + DAY, D0 + 2 * DAY))
    np.testing.assert_allclose(series.fields["value"], [512_000_000.0, 498_500_000.5, 530_250_000.0])
    assert (series.key, series.source) == ("onchain/1d/BTC.hash-rate", "blockchain.com")
    assert market_apis.requests == [("/charts/hash-rate", {"timespan": "1year", "format": "json", "sampled": "false"})]


def test_blockchain_status_not_ok_is_reported(market_apis: FakeMarketApis):
    market_apis.mode["blockchain"] = "api_error"
    settings = settings_for(market_apis)
    code, attempts, message = only_failure(fetch(settings, BlockchainSource(settings.sources)))
    assert (code, attempts) == ("malformed_response", 1)
    assert "status error" in message


def test_blockchain_unknown_chart_is_a_client_error_not_retried(market_apis: FakeMarketApis):
    settings = settings_for(market_apis, blockchain_metrics=["no-such-chart"])
    code, attempts, _ = only_failure(fetch(settings, BlockchainSource(settings.sources)))
    assert (code, attempts) == ("http_404", 1)


def test_blockchain_malformed_json_is_reported(market_apis: FakeMarketApis):
    market_apis.mode["blockchain"] = "malformed"
    settings = settings_for(market_apis)
    assert only_failure(fetch(settings, BlockchainSource(settings.sources)))[:2] == ("malformed_response", 1)


# ---- Coin Metrics --------------------------------------------------------------------------------------------

def test_coinmetrics_follows_next_page_url_and_never_lands_the_api_key(market_apis: FakeMarketApis, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    # No redaction safety net: the lake would otherwise mask a key a CLI run had registered.
    monkeypatch.setattr(shared.logging, "_secrets", ())
    settings = settings_for(market_apis, coinmetrics_api_key=SecretStr(API_KEY))
    fetched = fetch(settings, CoinMetricsSource(settings.sources, ["ETH"], now_ms=NOW_MS))
    [(_, result)] = fetched.results

    # The key is sent on both pages (the second via next_page_url, as Coin Metrics builds it) ...
    [(_, first), (_, second)] = market_apis.requests
    assert first["api_key"] == API_KEY and "next_page_token" not in first
    assert second["api_key"] == API_KEY and second["next_page_token"] == "2"
    assert first["assets"] == "eth" and first["metrics"] == "AdrActCnt,TxCnt,HashRate"
    # now - 3 days lookback, as a date: the API answers 400 to epoch seconds (the fake enforces its formats).
    assert first["start_time"] == "2023-12-30"

    # ... the rows of both pages are parsed in order; ETH has no HashRate, so there is no such series ...
    by_key = {s.key: s for s in result.series}
    assert sorted(by_key) == ["onchain/1d/ETH.AdrActCnt", "onchain/1d/ETH.TxCnt"]
    np.testing.assert_array_equal(by_key["onchain/1d/ETH.AdrActCnt"].ts, ms(D0, D0 + DAY, D0 + 2 * DAY))
    np.testing.assert_array_equal(by_key["onchain/1d/ETH.TxCnt"].fields["value"], [1_003_456, 987_654, 1_012_345])

    # ... and both pages land, with no trace of the key anywhere in them.
    lake = LocalLake(tmp_path / "lake")
    assert land(lake, fetched) == (2, 0)
    keys = lake.list("raw/")
    assert len(keys) == 2 and all(k.startswith("raw/source=coinmetrics/symbol=ETH/timeframe=1d/") for k in keys)
    for key in keys:
        assert API_KEY not in lake.get(key).decode()
    pages = sorted((lake.get_json(k) for k in keys), key=lambda r: r["provenance"]["request"]["page"])
    # The cursor survives in the landed first page; only the key is gone from it.
    cursor = parse_qs(urlsplit(pages[0]["body"]["next_page_url"]).query)
    assert "api_key" not in cursor and cursor["next_page_token"] == ["2"] and cursor["assets"] == ["eth"]
    assert "next_page_url" not in pages[1]["body"]


def test_coinmetrics_malformed_json_is_reported(market_apis: FakeMarketApis):
    market_apis.mode["coinmetrics"] = "malformed"
    settings = settings_for(market_apis)
    code, attempts, _ = only_failure(fetch(settings, CoinMetricsSource(settings.sources, ["ETH"], now_ms=NOW_MS)))
    assert (code, attempts) == ("malformed_response", 1)


def test_coinmetrics_bad_parameter_is_a_client_error(market_apis: FakeMarketApis):
    market_apis.mode["coinmetrics"] = "api_error"
    settings = settings_for(market_apis, coinmetrics_api_key=SecretStr(API_KEY))
    source = CoinMetricsSource(settings.sources, ["ETH"], now_ms=NOW_MS)
    code, attempts, message = only_failure(fetch(settings, source))
    assert (code, attempts) == ("http_400", 1)
    assert API_KEY not in message
    # The API's own reason travels with the failure.
    assert "Bad parameter 'metrics'" in message


def test_the_coinmetrics_fake_refuses_times_outside_the_documented_formats(market_apis: FakeMarketApis):
    import urllib.error
    import urllib.request

    url = f"{market_apis.coinmetrics_url}/timeseries/asset-metrics?assets=eth&metrics=TxCnt"
    with urllib.request.urlopen(url + "&start_time=2023-12-30") as ok:
        assert ok.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url + f"&start_time={D0}")  # epoch seconds: what cst used to send
    assert refused.value.code == 400 and b"start_time" in refused.value.read()


def test_coinmetrics_asset_without_rows_is_no_data(market_apis: FakeMarketApis):
    settings = settings_for(market_apis)
    code, attempts, _ = only_failure(fetch(settings, CoinMetricsSource(settings.sources, ["LTC"], now_ms=NOW_MS)))
    assert (code, attempts) == ("no_data", 1)
