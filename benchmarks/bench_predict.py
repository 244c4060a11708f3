"""Serving speed: 1,000 coins x 4 horizons in one batch, ONNX vs the native models; predict cold import.

Models are trained here with a one-trial budget on the real daily files (their skill is irrelevant to
speed); the 1,000 rows are real feature rows and windows tiled (a SPEED TEST ONLY).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


def _best(fn, repeats: int = 7) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def cold_import_seconds(module: str, repeats: int = 5) -> float:
    def once(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        return time.perf_counter() - t

    bare = min(once("pass") for _ in range(repeats))
    full = min(once(f"import {module}") for _ in range(repeats))
    return full - bare


def inference(n_coins: int = 1000) -> dict:
    import services.training.train as train_mod
    from services.orchestrator import runner
    from services.predict.model import HorizonModel
    from services.training.ensemble import native_p_up
    from shared import runs
    from shared.contracts import utcnow
    from shared.pipeline.context import StepContext
    from shared.settings import Budget, Settings
    from shared.storage import LocalLake

    cfg = Settings(_env_file=None)
    cfg.training.budgets["bench"] = Budget(folds=2, trials={"lr": 1, "gbt": 1, "gru": 1}, timeout_s=120, epochs=1,
                                           gbt_max_estimators=150)
    cfg.training.calibration_grid = 128
    kept = {}
    horizons = ["24h", "7d", "30d", "1h"]
    with tempfile.TemporaryDirectory() as tmp:
        lake = LocalLake(tmp)
        ref = runs.new_ref(cfg, str(DATA), int(utcnow().timestamp() * 1000))
        runner.run_step(StepContext(cfg, lake), "ingest", ref)  # the files reach training through the lake
        train_mod.train(cfg, lake, ref.run_id, horizons=horizons, budget="bench",
                        on_trained=lambda t: kept.__setitem__(t.horizon, t))
        models = {h: HorizonModel.load(lake, h) for h in horizons}
        batches = {}
        for h, t in kept.items():
            reps = -(-n_coins // len(t.ds))
            idx = np.tile(np.arange(len(t.ds)), reps)[:n_coins]
            batches[h] = t.ds.take(idx)

        def onnx_h(h):
            models[h].predict(batches[h].X, batches[h].S)

        def native_h(h):
            native_p_up(kept[h], batches[h])
            kept[h].quantiles.predict(batches[h].X)

        # ONNX as `cst run` does it: horizons side by side, one ONNX thread each. Native gets its better
        # arrangement of the two: sequential (LightGBM and torch use both cores themselves) or side by side.
        pool = ThreadPoolExecutor(2)
        t_onnx = _best(lambda: list(pool.map(onnx_h, horizons)))
        t_onnx_seq = _best(lambda: [onnx_h(h) for h in horizons])
        t_native_seq = _best(lambda: [native_h(h) for h in horizons])
        t_native_par = _best(lambda: list(pool.map(native_h, horizons)))
        t_native = min(t_native_seq, t_native_par)
        pool.shutdown()
        one = batches["24h"].take(np.arange(1))
        t_onnx_1 = _best(lambda: models["24h"].predict(one.X, one.S), 20)
        # SHAP for 128 rows of one horizon: in process vs the 2-worker process pool (start-up included).
        from services.predict.pool import explain_rows

        b = batches["24h"].take(np.arange(128))
        t_shap_serial = _best(lambda: models["24h"].explain(b.X, b.S, permutations=2), 1)
        t_shap_pool = _best(lambda: explain_rows(models["24h"], lake.uri, b.X, b.S, permutations=2, seed=0,
                                                 workers=2, min_rows=1), 1)
        t_native_1 = _best(lambda: (native_p_up(kept["24h"], one), kept["24h"].quantiles.predict(one.X)), 20)
        # Latency per batch size, one horizon (24h): ONNX vs native, milliseconds.
        per_batch = {}
        for n in (1, 10, 100, 1000):
            part = batches["24h"].take(np.arange(n))
            o = _best(lambda p=part: models["24h"].predict(p.X, p.S), 20 if n < 1000 else 7)
            nt = _best(lambda p=part: (native_p_up(kept["24h"], p), kept["24h"].quantiles.predict(p.X)),
                       20 if n < 1000 else 7)
            per_batch[n] = {"onnx_ms": round(o * 1e3, 2), "native_ms": round(nt * 1e3, 2), "speedup": round(nt / o, 1)}
    return {"batch_rows_per_horizon": n_coins, "horizons": len(horizons),
            "onnx_seconds": round(t_onnx, 4), "onnx_sequential_seconds": round(t_onnx_seq, 4),
            "native_seconds": round(t_native, 4), "native_sequential_seconds": round(t_native_seq, 4),
            "native_side_by_side_seconds": round(t_native_par, 4),
            "speedup_batch": round(t_native / t_onnx, 2),
            "onnx_batch1_ms": round(t_onnx_1 * 1e3, 2), "native_batch1_ms": round(t_native_1 * 1e3, 2),
            "goal_speedup": 5, "latency_24h_by_batch": per_batch, "shap_128_rows_in_process_s": round(t_shap_serial, 2),
            "shap_128_rows_pool2_s": round(t_shap_pool, 2)}


def main() -> dict:
    if not DATA.is_dir():
        return {"skipped": f"{DATA} absent"}
    figures = inference()
    figures["cold_import_predict_model_s"] = round(cold_import_seconds("services.predict.model"), 3)
    figures["cold_import_goal_s"] = 0.8
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
