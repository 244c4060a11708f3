"""Ingest fixtures: the loopback Kraken and market-API fakes, started per test on ephemeral ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ingest.fakes.kraken import FakeKraken
from tests.ingest.fakes.market import FakeMarketApis


@pytest.fixture
def kraken() -> Iterator[FakeKraken]:
    """BTC and ETH (Kraken's legacy XXBTZUSD / XETHZUSD ids), 24 candles per OHLC page so history spans pages."""
    with FakeKraken(["BTC", "ETH"], page_size=24) as fake:
        yield fake


@pytest.fixture
def market_apis() -> Iterator[FakeMarketApis]:
    with FakeMarketApis() as fake:
        yield fake
