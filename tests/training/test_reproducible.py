"""Reproducible training: the same data and settings give byte-identical models, however busy the machine is."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from services.predict.model import (
    ALL_FILES,
    HorizonModel,
    current_version,
    model_prefix,
)
from shared.settings import Budget
from shared.storage import LocalLake

pytest.importorskip("torch")
pytest.importorskip("lightgbm")

from tests.training.test_training import (  # noqa: E402
    UNTIL,
    import_files,
    small_source,
    tiny_settings,
)


def train_once(cfg, shared_data, root):
    from services.training.train import train

    lake = LocalLake(root / "lake")
    run_id = import_files(cfg, lake, small_source(shared_data, root / "data"))
    meta = train(cfg, lake, run_id, until=UNTIL, horizons=["24h"], budget="repro")["24h"]
    return lake, meta


def test_training_twice_gives_identical_onnx_and_predictions_even_on_a_busy_machine(shared_data, tmp_path):
    cfg = tiny_settings()
    # Several trials per member, so the search itself (TPE's proposals, the pruner) has to repeat exactly too.
    cfg.training.budgets["repro"] = Budget(folds=2, trials={"lr": 3, "gbt": 2, "gru": 1}, timeout_s=600, epochs=1,
                                           gbt_max_estimators=50)
    lake_a, meta_a = train_once(cfg, shared_data, tmp_path / "a")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # the other core's worth of load
    try:
        lake_b, meta_b = train_once(cfg, shared_data, tmp_path / "b")
    finally:
        burner.kill()
    assert meta_a.data_fingerprint == meta_b.data_fingerprint
    assert meta_a.members == meta_b.members and meta_a.tuning == meta_b.tuning
    va, vb = current_version(lake_a, "24h"), current_version(lake_b, "24h")
    for name in ALL_FILES.values():
        a = lake_a.get(model_prefix("24h", va) + name)
        b = lake_b.get(model_prefix("24h", vb) + name)
        assert a == b, f"{name} differs between the two trainings"
    ma, mb = HorizonModel.load(lake_a, "24h"), HorizonModel.load(lake_b, "24h")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, len(ma.names))).astype(np.float32)
    S = rng.normal(size=(64, meta_a.sequence_length, len(ma.names))).astype(np.float32)
    pa, pb = ma.predict(X, S), mb.predict(X, S)
    assert np.array_equal(pa.p_up, pb.p_up) and np.array_equal(pa.quantiles, pb.quantiles)
