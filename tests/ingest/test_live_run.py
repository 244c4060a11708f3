"""`cst run --source live` end to end against the loopback fakes: an empty lake trains on the run's own fetched
history, predicts, and a later run with drift retrains through the registry gate. Generated fake candles: the
mechanics only, nothing about forecasts."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from services import cli
from shared.contracts import ms_to_iso
from tests.ingest.fakes.kraken import NOW_S, FakeKraken
from tests.ingest.fakes.market import FakeMarketApis

pytest.importorskip("torch")

COINS = ["BTC", "ETH", "XRP", "LTC"]
HOUR = 3600


@pytest.fixture
def live_env(monkeypatch, tmp_path):
    with FakeKraken(COINS, page_size=720) as kraken, FakeMarketApis() as market:
        env = {
            "CST_EXCHANGE__BASE_URL": kraken.url, "CST_EXCHANGE__HISTORY": '{"1h": "P30D"}',
            "CST_EXCHANGE__TRADES_LIMIT": "50",
            "CST_SOURCES__FEAR_GREED_URL": market.fear_greed_url, "CST_SOURCES__BLOCKCHAIN_URL": market.blockchain_url,
            "CST_SOURCES__COINMETRICS_URL": market.coinmetrics_url, "CST_SOURCES__BLOCKCHAIN_METRICS": '["hash-rate"]',
            "CST_SOURCES__COINMETRICS_ASSETS": '["ETH"]',
            "CST_HTTP__TIMEOUT_S": "5", "CST_HTTP__MAX_RETRIES": "1", "CST_HTTP__BACKOFF_BASE_S": "0.01",
            "CST_UNIVERSE": json.dumps(COINS), "CST_TIMEFRAMES": '["1h"]', "CST_HORIZONS": '["1h"]',
            "CST_TRAINING__BUDGETS": json.dumps({"quick": {"folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1},
                                                           "timeout_s": 300, "epochs": 1, "gbt_max_estimators": 50}}),
            "CST_TRAINING__CALIBRATION_GRID": "64",
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield kraken, tmp_path / "lake"


def summary(lake: Path, as_of_s: int) -> dict:
    (path,) = [p for p in lake.glob("runs/*/summary.json")
               if json.loads(p.read_text())["as_of"] == ms_to_iso(as_of_s * 1000)]
    return json.loads(path.read_text())


def test_live_run_on_an_empty_lake_backfills_trains_predicts_then_retrains_on_drift(live_env, monkeypatch, capsys):
    kraken, lake = live_env
    first = NOW_S // HOUR * HOUR  # the latest closed candle of the fake's clock
    assert cli.main(["run", "--source", "live", "--lake", str(lake), "--as-of", ms_to_iso(first * 1000)]) == 0
    said = capsys.readouterr().err
    # An empty lake is backfilled first (30 days of hourly candles per coin), saying how much and how long.
    assert "empty lake: backfilling" in said and f"backfilled {len(COINS)} pages, {len(COINS) * 720} candles" in said
    s = summary(lake, first)
    assert s["status"] == "complete" and s["failures"] == []
    assert s["trained"]["1h"].startswith("v")  # trained on the run's own fetched 30 days: no `no_model`
    assert s["predictions"] == len(COINS) and s["coins_predicted"] == len(COINS)
    version = (lake / "models/horizon=1h/CURRENT").read_text()
    # Six hours later, with every feature judged as drifting: the run retrains 1h on live data through the gate.
    for key, value in (("CST_RUN__DRIFT_WINDOW", '{"1h": 5, "1d": 5}'), ("CST_RUN__PSI_MIN_ROWS", "5"),
                       ("CST_RUN__PSI_THRESHOLD", "0"), ("CST_RUN__PSI_FEATURE_SHARE", "0")):
        monkeypatch.setenv(key, value)
    kraken.now_s = NOW_S + 6 * HOUR
    later = first + 6 * HOUR
    assert cli.main(["run", "--source", "live", "--lake", str(lake), "--as-of", ms_to_iso(later * 1000)]) == 0
    s2 = summary(lake, later)
    assert s2["status"] == "complete" and s2["drift"]["1h"]["retrain"]
    retrained = s2["retrained"]["1h"]
    assert retrained["version"] and retrained["version"] != version and retrained["promoted"] in (True, False)
    current = (lake / "models/horizon=1h/CURRENT").read_text()
    assert current == (retrained["version"] if retrained["promoted"] else version)
    # The 1h outcomes of the first run's decision matured and were recorded once.
    assert s2["outcomes_recorded"] == len(COINS)


def test_a_live_run_trains_on_backfilled_history_beyond_its_own_fetch(live_env, monkeypatch):
    from services.ingest.backfill import backfill
    from shared.settings import Settings

    kraken, lake = live_env
    first = NOW_S // HOUR * HOUR
    # The run fetches (and the empty lake's automatic backfill lands) two days of hourly candles: too few rows.
    monkeypatch.setenv("CST_EXCHANGE__HISTORY", '{"1h": "P2D"}')
    monkeypatch.setenv("CST_FEATURES__SETTLE_BARS", "0")  # a two-day span settles no indicator: write every row
    assert cli.main(["run", "--source", "live", "--lake", str(lake), "--as-of", ms_to_iso(first * 1000)]) == 0
    s = summary(lake, first)
    assert "too_few_rows" in s["trained"]["1h"] and s["predictions"] == 0 and s["horizons_without_model"]
    # Backfill 30 days, then the next hour's run trains on them with its own fetch.
    from shared.storage import LocalLake

    report = backfill(Settings(), LocalLake(lake), since_ms=(first - 30 * 24 * HOUR) * 1000, now_ms=first * 1000)
    # Only what is missing: the 28 days before the two the first run's automatic backfill landed.
    assert report.failures == [] and report.candles == len(COINS) * 28 * 24
    kraken.now_s = NOW_S + HOUR
    later = first + HOUR
    assert cli.main(["run", "--source", "live", "--lake", str(lake), "--as-of", ms_to_iso(later * 1000)]) == 0
    s2 = summary(lake, later)
    assert s2["trained"]["1h"].startswith("v") and s2["predictions"] == len(COINS)
    meta = json.loads(next(lake.glob("models/horizon=1h/version=*/metadata.json")).read_text())
    assert meta["training_window"]["first"] < ms_to_iso((first - 2 * 24 * HOUR) * 1000)  # older than its own fetch


def test_the_liquidity_layer_reaches_the_features_on_live_path_data(tmp_path):
    """Whale buckets and order books fetched live, stamped as of the run, fused into the run's feature rows."""
    from services.features.store import read_frame
    from services.orchestrator import runner
    from shared import runs
    from shared.pipeline.context import StepContext
    from shared.settings import (
        ExchangeSettings,
        FeatureSettings,
        Settings,
        SourceSettings,
    )
    from shared.storage import LocalLake
    from tests.ingest.fakes.config import fast_http

    now_s = int(time.time())
    as_of_s = now_s // HOUR * HOUR  # a live run's as-of: the latest closed hourly candle
    with FakeKraken(COINS, now_s=now_s, page_size=720) as kraken, FakeMarketApis() as market:
        # Every coin trades each minute of the last three hours; one 150k whale buy in the closed hour.
        trades = [["100.0", "1.0", t, "b", "m", "", i] for i, t in enumerate(range(as_of_s - 3 * HOUR, now_s, 60))]
        trades.append(["50000.0", "3.0", as_of_s - HOUR + 600, "b", "l", "", len(trades)])
        kraken.trades = sorted(trades, key=lambda t: t[2])
        cfg = Settings(_env_file=None, universe=COINS, timeframes=["1h"], horizons=["1h"], http=fast_http(),
                       exchange=ExchangeSettings(base_url=kraken.url, history={"1h": timedelta(days=3)}),
                       sources=SourceSettings(fear_greed_url=market.fear_greed_url, blockchain_url=market.blockchain_url,
                                              coinmetrics_url=market.coinmetrics_url, blockchain_metrics=["hash-rate"],
                                              coinmetrics_assets=[]),
                       features=FeatureSettings(settle_bars=0))  # three days settle nothing: every row is written
        fs = cfg.features.sets["1h"]
        cfg.features.sets["1h"] = fs.model_copy(update={
            "layers": [*fs.layers, "liquidity"],
            "excluded_layers": {k: v for k, v in fs.excluded_layers.items() if k != "liquidity"}})
        lake = LocalLake(tmp_path / "lake")
        ctx = StepContext(cfg, lake)
        ref = runs.new_ref(cfg, "live", as_of_s * 1000)
        runner.run_ingest(ctx, ref)
        for step in ("validate", "features"):
            runner.run_step(ctx, step, ref)
    quality = json.loads((lake.root / f"quality/run_id={ref.run_id}/report.json").read_text())
    book = quality["series"]["orderbook/snapshot/BTC-USD"]
    assert book["status"] == "ok" and book["after_as_of"] == 0  # observed within the run: the book as of the run
    frame = read_frame(lake, "1h", since_ms=as_of_s * 1000, until_ms=as_of_s * 1000)
    assert frame is not None and sorted(frame.coin.tolist()) == sorted(COINS)
    cols = {n: frame.X[:, frame.names.index(n)] for n in ("whale_share", "spread_bps", "depth_imbalance")}
    assert all(np.isfinite(v).all() for v in cols.values())
    # The closed hour's trades: 60 small ones at 100 each and the 150k whale: a whale share of 150k / 156k.
    btc = frame.coin.tolist().index("BTC")
    assert cols["whale_share"][btc] == pytest.approx(150_000 / 156_000, rel=1e-6)
