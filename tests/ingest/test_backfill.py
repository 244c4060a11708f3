"""`cst backfill` against the loopback fakes: pages land one by one, an interrupted backfill resumes without fetching
or storing a page twice, and training reads the backfilled history with a run's own fetch."""

from __future__ import annotations

import numpy as np

from services.ingest.backfill import backfill, cursor_key
from shared.datasets import get_series, history_parts, merge_series
from shared.storage import LocalLake
from tests.ingest.fakes.config import loopback_settings
from tests.ingest.fakes.kraken import NOW_S, FakeKraken, Fault
from tests.ingest.fakes.market import FakeMarketApis

HOUR = 3600
NOW_MS = NOW_S // HOUR * HOUR * 1000  # the latest closed hourly candle ends here (13:00)
SINCE_MS = NOW_MS - 100 * HOUR * 1000


def btc_rows(lake: LocalLake) -> np.ndarray:
    """BTC's backfilled candle times, in time order (parts are stored in the order they were fetched)."""
    (btc,) = [s for s in merge_series(get_series(lake, history_parts(lake))) if s.key == "ohlcv/1h/BTC-USD"]
    return np.sort(btc.ts)


def test_an_interrupted_backfill_resumes_where_it_stopped_without_duplicates(kraken: FakeKraken,
                                                                         market_apis: FakeMarketApis, tmp_path):
    lake = LocalLake(tmp_path / "lake")
    settings = loopback_settings(kraken.url, market_apis, coins=["BTC", "ETH"])
    # BTC's OHLC answers twice, then the exchange fails: the backfill stops there for BTC, ETH goes on.
    kraken.faults["BTC"] = Fault("server_error", after=2)
    first = backfill(settings, lake, since_ms=SINCE_MS, now_ms=NOW_MS)
    assert [(f.task, f.code) for f in first.failures] == [("backfill BTC 1h", "server_error")]
    assert first.series["BTC 1h"]["pages"] == 2 and first.series["ETH 1h"]["pages"] == 5
    landed = btc_rows(lake)
    assert landed.size == first.series["BTC 1h"]["candles"] == 48  # two full pages of 24 closed candles
    resume_at = lake.get_json(cursor_key("kraken", "BTC", "1h"))["next_since"]
    assert resume_at == int(landed[-1]) + HOUR * 1000
    asked_before = list(kraken.ohlc_since["BTC"])

    kraken.faults.clear()
    second = backfill(settings, lake, since_ms=SINCE_MS, now_ms=NOW_MS)
    assert second.failures == []
    # BTC continued from its cursor; ETH was complete and asked nothing.
    assert kraken.ohlc_since["BTC"][len(asked_before)] == resume_at // 1000 - HOUR
    assert "ETH 1h" not in second.series or second.series["ETH 1h"]["pages"] == 0
    ts = btc_rows(lake)
    # 100 hours of closed candles, each once: no page stored twice.
    np.testing.assert_array_equal(ts, np.arange(SINCE_MS, NOW_MS, HOUR * 1000))
    assert len(set(history_parts(lake))) == len(history_parts(lake))
    # Sentiment and on-chain history came whole.
    assert {s.layer for s in get_series(lake, history_parts(lake))} == {"ohlcv", "sentiment", "onchain"}


def test_an_earlier_since_fills_only_the_missing_span_before_the_history(kraken: FakeKraken,
                                                                      market_apis: FakeMarketApis, tmp_path):
    lake = LocalLake(tmp_path / "lake")
    settings = loopback_settings(kraken.url, market_apis, coins=["BTC"])
    backfill(settings, lake, since_ms=NOW_MS - 48 * HOUR * 1000, now_ms=NOW_MS)
    asked = len(kraken.ohlc_since["BTC"])
    again = backfill(settings, lake, since_ms=SINCE_MS, now_ms=NOW_MS)
    # 100 h requested, 48 h were there: 52 candles fetched, starting at the new since, ending where history began.
    assert again.candles == 52 and kraken.ohlc_since["BTC"][asked] == SINCE_MS // 1000 - HOUR
    np.testing.assert_array_equal(btc_rows(lake), np.arange(SINCE_MS, NOW_MS, HOUR * 1000))
    state = lake.get_json(cursor_key("kraken", "BTC", "1h"))
    assert state == {"first": SINCE_MS, "next_since": NOW_MS}
