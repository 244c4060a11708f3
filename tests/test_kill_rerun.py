"""`cst run` killed with SIGKILL part-way (no handler runs, no file is closed cleanly) and run again gives the same
predictions, the same books and the same summary as a run that was never interrupted."""

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
    books = {p.relative_to(lake).as_posix(): json.loads(p.read_text()) for p in sorted((lake / "books").rglob("*.json"))}
    (summary,) = [json.loads(p.read_text()) for p in lake.glob("runs/run_id=*/summary.json")]
    counts = {k: summary[k] for k in ("status", "coins_total", "coins_predicted", "predictions", "new_predictions",
                                      "actionable", "excluded", "basket")}
    return {"predictions": preds, "books": books, "summary": counts}


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    src = daily_source(shared_data, tmp_path_factory.mktemp("src") / "data", COINS)
    lake = tmp_path_factory.mktemp("trained")
    assert _cst("run", "--source", str(src), "--lake", str(lake), "--as-of", "2024-05-01T00:00:00Z").wait(600) == 0
    return src, lake


@pytest.mark.timeout(1200)  # four runs of the cycle and three restarts (about 3 minutes on 2 idle cores)
def test_a_run_killed_a_quarter_half_and_three_quarters_in_and_run_again_equals_an_uninterrupted_run(trained, tmp_path):
    src, models = trained
    clean = tmp_path / "clean"
    shutil.copytree(models / "models", clean / "models")
    started = time.monotonic()
    assert _cst("run", "--source", str(src), "--lake", str(clean), "--as-of", AS_OF).wait(600) == 0
    took = time.monotonic() - started
    expected = _state(clean)
    assert expected["predictions"] and expected["summary"]["status"] == "complete"
    killed_before_the_end = 0
    # A quarter, half and three quarters into a run as long as the clean one (on the twelve coins: 3, 6 and 9 s).
    for seconds in (took / 4, took / 2, 3 * took / 4):
        lake = tmp_path / f"killed_{seconds:.1f}"
        shutil.copytree(models / "models", lake / "models")
        proc = _cst("run", "--source", str(src), "--lake", str(lake), "--as-of", AS_OF)
        time.sleep(seconds)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_before_the_end += 1
        else:
            assert proc.returncode == 0, (seconds, proc.returncode)  # it finished (cleanly) before the kill
        proc.wait(60)
        assert _cst("run", "--source", str(src), "--lake", str(lake), "--as-of", AS_OF).wait(600) == 0, seconds
        assert _state(lake) == expected, seconds
    assert killed_before_the_end >= 2, took  # the kills landed inside the runs
