"""`cst run --source live` on Binance USDT-M end to end against the loopback fakes: the listed perpetuals are the
universe, an empty lake is backfilled, trained on, and every coin of the universe gets a prediction under its
contract name. Generated fake candles: the mechanics only, nothing about forecasts."""

from __future__ import annotations

import json

import pytest

from services import cli
from services.predict import logbook
from shared.contracts import ms_to_iso
from shared.storage import LocalLake
from tests.ingest.fakes.binance import NOW_MS, FakeBinanceUsdm
from tests.ingest.fakes.market import FakeMarketApis

pytest.importorskip("torch")

COINS = ["BTC", "ETH", "SOL", "1000PEPE"]
H = 3_600_000


def test_a_live_binance_usdm_run_predicts_every_listed_perpetual(monkeypatch, tmp_path):
    with FakeBinanceUsdm(COINS) as binance, FakeMarketApis() as market:
        env = {
            "CST_EXCHANGE__ID": "binanceusdm", "CST_EXCHANGE__BASE_URL": binance.url,
            "CST_EXCHANGE__HISTORY": '{"1h": "P30D"}', "CST_UNIVERSE__COINS": "listed",
            "CST_SOURCES__FEAR_GREED_URL": market.fear_greed_url, "CST_SOURCES__BLOCKCHAIN_URL": market.blockchain_url,
            "CST_SOURCES__COINMETRICS_URL": market.coinmetrics_url, "CST_SOURCES__BLOCKCHAIN_METRICS": '["hash-rate"]',
            "CST_SOURCES__COINMETRICS_ASSETS": '["ETH"]',
            "CST_HTTP__TIMEOUT_S": "5", "CST_HTTP__MAX_RETRIES": "1", "CST_HTTP__BACKOFF_BASE_S": "0.01",
            "CST_TIMEFRAMES": '["1h"]', "CST_HORIZONS": '["1h"]',
            "CST_TRAINING__BUDGETS": json.dumps({"quick": {"folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1},
                                                           "timeout_s": 300, "epochs": 1, "gbt_max_estimators": 50}}),
            "CST_TRAINING__CALIBRATION_GRID": "64",
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        lake = tmp_path / "lake"
        as_of = NOW_MS // H * H
        assert cli.main(["run", "--source", "live", "--lake", str(lake), "--as-of", ms_to_iso(as_of)]) == 0
    [path] = list(lake.glob("runs/*/summary.json"))
    s = json.loads(path.read_text())
    assert s["status"] == "complete" and s["failures"] == []
    # The recorded exchangeInfo's quarterly delivery, USDC-settled perpetual and settling contract are not listed.
    universe = s["universes"]["1h"]
    assert universe["venue"] == "binanceusdm-perp" and sorted(universe["members"]) == sorted(COINS)
    assert s["trained"]["1h"].startswith("v") and s["predictions"] == len(COINS)
    rows = [r for key in LocalLake(lake).list("predictions/") for r in logbook.read_predictions(LocalLake(lake), key)]
    assert sorted(r.coin for r in rows) == sorted(COINS)
    # Every request stayed inside the weight the profile paces to.
    assert binance.requests[("exchangeInfo", "")] >= 1 and ("aggTrades", "SOL") not in binance.requests
