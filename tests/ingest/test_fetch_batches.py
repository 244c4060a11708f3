"""A live run's fetch as a Map over symbol batches: each batch fetches, lands and stages its own symbols (the first
also the market-wide sources), the ingest step joins them, and a batch without output is a named failure while the
other batches' coins go on."""

from __future__ import annotations

import re
from pathlib import Path

from services.features.steps import quality_report
from services.orchestrator import runner
from shared import runs
from shared.pipeline.context import StepContext
from shared.storage import LocalLake
from tests.ingest.fakes.config import loopback_settings
from tests.ingest.fakes.kraken import NOW_S, FakeKraken
from tests.ingest.fakes.market import FakeMarketApis

COINS = ["BTC", "ETH", "XRP", "LTC", "ADA"]
NOW_MS = NOW_S * 1000


def _landed(lake: LocalLake) -> dict[str, set[str]]:
    """Raw records per source: the symbols they are for."""
    found: dict[str, set[str]] = {}
    for key in lake.list("raw/"):
        m = re.search(r"raw/source=([^/]+)/.*?symbol=([^/]+)/", key)
        if m:
            found.setdefault(m[1], set()).add(m[2])
    return found


def test_batches_split_the_universe_and_the_ingest_step_joins_them(tmp_path: Path, market_apis: FakeMarketApis):
    with FakeKraken(COINS) as kraken:
        cfg = loopback_settings(kraken.url, market_apis, coins=COINS, batch_symbols=2)
        ctx = StepContext(cfg, LocalLake(tmp_path / "lake"))
        ref = runs.new_ref(cfg, "live", NOW_MS)
        assert ref.batches == ["0", "1", "2"]  # 2 + 2 + 1 symbols
        out = runner.run_ingest(ctx, ref)
        batches = {b: ctx.output(ref.run_id, "fetch", b) for b in ref.batches}
    assert out.failures == [] and out.landed == sum(b.landed for b in batches.values())
    assert sorted(out.staged) == sorted(k for b in batches.values() for k in b.staged)
    # Each batch fetched its own symbols; only the first fetched the market-wide sources (once per run).
    per_batch = {}
    for b, fetched in batches.items():
        lake = LocalLake(tmp_path / f"only{b}")
        for key in fetched.staged:
            lake.put(key, ctx.lake.get(key))
        from shared.datasets import get_series

        per_batch[b] = {s.symbol for s in get_series(lake, fetched.staged)}
    assert per_batch["0"] >= {"BTC-USD", "ETH-USD", "market"} and not per_batch["0"] & {"XRP-USD", "LTC-USD", "ADA-USD"}
    assert per_batch["1"] == {"XRP-USD", "LTC-USD"} and per_batch["2"] == {"ADA-USD"}
    assert _landed(ctx.lake)["kraken"] == {f"{c}-USD" for c in COINS}
    # The validate step reads every batch's series through the ingest step's hand-off.
    runner.run_step(ctx, "validate", ref)
    report = quality_report(ctx, ref.run_id)
    assert {k for k in report.series if k.startswith("ohlcv/1h/")} == {f"ohlcv/1h/{c}-USD" for c in COINS}


def test_a_batch_without_output_is_a_named_failure_and_the_others_go_on(tmp_path: Path, market_apis: FakeMarketApis):
    with FakeKraken(COINS) as kraken:
        cfg = loopback_settings(kraken.url, market_apis, coins=COINS, batch_symbols=2)
        ctx = StepContext(cfg, LocalLake(tmp_path / "lake"))
        ref = runs.new_ref(cfg, "live", NOW_MS)
        for item in ("0", "2"):  # batch 1 failed (its Lambda timed out, say): no output under the run
            runner.run_step(ctx, "fetch", ref, item)
        out = runner.run_step(ctx, "ingest", ref)
    [failure] = out.failures
    assert (failure.task, failure.code) == ("batch 1", "batch_failed")
    assert "2 symbols, XRP..LTC" in failure.message
    runner.run_step(ctx, "validate", ref)
    coins = {k.split("/")[2] for k in quality_report(ctx, ref.run_id).series if k.startswith("ohlcv/1h/")}
    assert coins == {"BTC-USD", "ETH-USD", "ADA-USD"}


def test_a_file_import_has_no_fetch_batches():
    from shared.settings import Settings

    assert runs.new_ref(Settings(), "/tmp", NOW_MS).batches == []
    assert runs.new_ref(Settings(universe=[f"C{i}" for i in range(1000)]), "live", NOW_MS).batches == \
        [str(i) for i in range(10)]  # 100 symbols a batch by default
