"""`cst run` killed with SIGKILL part-way (no handler runs, no file is closed cleanly) and run again, or two `cst run`
of the same as-of at once, end as a run that was never interrupted: the same predictions, outcomes, books and
summary."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import daily_source

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
COINS = ("BTC", "ETH", "XRP", "LTC", "ADA")
TINY = {"folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1}, "timeout_s": 120, "epochs": 1, "gbt_max_estimators": 50}
AS_OF = "2024-05-02T00:00:00Z"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CST_")}
    env.update(CST_HORIZONS='["24h","7d"]', CST_TRAINING__BUDGETS=json.dumps({"quick": TINY}),
               CST_TRAINING__CALIBRATION_GRID="64", CST_RUN__PSI_FEATURE_SHARE="1.0", CST_RUN__MIN_OUTCOMES="100000")
    return env


def _cst(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _state(lake: Path) -> dict:
    """What a run leaves that must not depend on having been interrupted: predictions (without the wall-clock
    fields), the books and the summary's counts."""
    import pyarrow.parquet as pq

    preds = sorted((r["horizon"], r["coin"], r["decision_ts"], r["model_version"], r["p_up"], r["q50"],
                    r["vol_forecast"], r["actionable"]) for p in lake.glob("predictions/horizon=*/date=*/*.parquet")
                   for r in pq.read_table(p).to_pylist())
    outcomes = sorted((r["horizon"], r["coin"], r["decision_ts"], r["realized_return"], r["hit"])
                      for p in lake.glob("outcomes/horizon=*/date=*/*.parquet") for r in pq.read_table(p).to_pylist())
    books = {p.relative_to(lake).as_posix(): json.loads(p.read_text()) for p in sorted((lake / "books").rglob("*.json"))}
    (summary,) = [doc for p in lake.glob("runs/run_id=*/summary.json")
                  if (doc := json.loads(p.read_text()))["as_of"] == AS_OF]
    counts = {k: summary[k] for k in ("status", "coins_total", "coins_predicted", "predictions", "new_predictions",
                                      "actionable", "excluded", "basket")}
    return {"predictions": preds, "outcomes": outcomes, "books": books, "summary": counts}


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    src = daily_source(shared_data, tmp_path_factory.mktemp("src") / "data", COINS)
    lake = tmp_path_factory.mktemp("trained")
    assert _cst("run", "--source", str(src), "--lake", str(lake), "--as-of", "2024-05-01T00:00:00Z").wait(600) == 0
    return src, lake


def _kill_after(proc: subprocess.Popen, lake: Path, step: str, limit_s: float = 300.0) -> bool:
    """SIGKILL the run the moment its `step` output lands in the lake (the next step is then under way); False when
    the run ended first."""
    prefix = AS_OF[:4] + AS_OF[5:7] + AS_OF[8:10]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        # A step's output, or the first item of a Map step's (predict: steps/predict/<horizon>.json).
        if any(lake.glob(f"runs/run_id={prefix}*/steps/{step}.json")) or \
                any(lake.glob(f"runs/run_id={prefix}*/steps/{step}/*.json")):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)
            return True
        time.sleep(0.005)
    return False


@pytest.mark.timeout(1200)  # a clean run, then three killed and restarted ones
def test_a_run_killed_after_ingest_features_and_predict_and_run_again_equals_an_uninterrupted_run(trained, tmp_path):
    src, models = trained
    clean = tmp_path / "clean"
    shutil.copytree(models, clean)  # the 05-01 run's lake: models, predictions, books
    assert _cst("run", "--source", str(src), "--lake", str(clean), "--as-of", AS_OF).wait(600) == 0
    expected = _state(clean)
    assert expected["predictions"] and expected["summary"]["status"] == "complete"
    assert expected["outcomes"]  # the 05-01 24h decisions matured at 05-02
    killed = []
    # Killed mid-run: as the next step starts writing (features after ingest, the predict Map after features,
    # risk and books after predict); on the twelve coins the issue killed at 3, 6 and 9 s.
    for step in ("ingest", "features", "predict"):
        lake = tmp_path / f"killed_after_{step}"
        shutil.copytree(models, lake)
        proc = _cst("run", "--source", str(src), "--lake", str(lake), "--as-of", AS_OF)
        if _kill_after(proc, lake, step):
            killed.append(step)
        else:
            assert proc.returncode == 0, (step, proc.returncode)
        assert _cst("run", "--source", str(src), "--lake", str(lake), "--as-of", AS_OF).wait(600) == 0, step
        got = _state(lake)
        for key in expected:  # one part at a time, so a failure names what differs
            assert got[key] == expected[key], (step, key)
    print("killed after", killed)
    assert len(killed) >= 2, killed  # the kills landed inside the runs


@pytest.mark.timeout(900)
def test_two_runs_of_the_same_as_of_at_once_end_as_one_run(trained, tmp_path):
    src, models = trained
    clean, both = tmp_path / "clean", tmp_path / "both"
    for lake in (clean, both):
        shutil.copytree(models, lake)
    assert _cst("run", "--source", str(src), "--lake", str(clean), "--as-of", AS_OF).wait(600) == 0
    first, second = (_cst("run", "--source", str(src), "--lake", str(both), "--as-of", AS_OF) for _ in range(2))
    codes = (first.wait(600), second.wait(600))
    assert 0 in codes, codes  # one may stop early, told the other holds the run; nothing is left half-done
    if codes != (0, 0):
        assert _cst("run", "--source", str(src), "--lake", str(both), "--as-of", AS_OF).wait(600) == 0
    assert _state(both) == _state(clean)
