"""SHAP at serving: 1,000 coins x 3 daily horizons (24h, 7d, 30d), predict + explain as the predict step runs them.

Exact SHAP (linear + TreeSHAP from the exported arrays, permutation for the sequence network only) against the
permutation SHAP of the whole stack it replaces. Models are trained with a one-trial budget on the real daily
files; the 1,000 rows per horizon are real feature rows tiled (a SPEED TEST ONLY).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(n_coins: int = 1000) -> dict:
    if not DATA.is_dir():
        return {"skipped": f"{DATA} absent"}
    import services.training.train as train_mod
    from services.orchestrator import runner
    from services.predict.explain import permutation_shap
    from services.predict.model import HorizonModel
    from services.predict.pool import explain_rows
    from shared import runs
    from shared.contracts import utcnow
    from shared.pipeline.context import StepContext
    from shared.settings import Budget, Settings
    from shared.storage import LocalLake

    cfg = Settings(_env_file=None)
    cfg.training.budgets["bench"] = Budget(folds=2, trials={"lr": 1, "gbt": 1, "gru": 1}, timeout_s=120, epochs=1,
                                           gbt_max_estimators=150)
    cfg.training.calibration_grid = 128
    horizons = ["24h", "7d", "30d"]
    perms, seed = cfg.training.shap_permutations, cfg.training.seed
    kept = {}
    with tempfile.TemporaryDirectory() as tmp:
        lake = LocalLake(tmp)
        ref = runs.new_ref(cfg, str(DATA), int(utcnow().timestamp() * 1000))
        runner.run_step(StepContext(cfg, lake), "ingest", ref)
        train_mod.train(cfg, lake, ref.run_id, horizons=horizons, budget="bench",
                        on_trained=lambda t: kept.__setitem__(t.horizon, t))
        batches = {h: t.ds.take(np.resize(np.arange(len(t.ds)), n_coins)) for h, t in kept.items()}

        def step() -> None:
            # As services/predict/steps.py: load, predict, explain through the 2-worker pool, per horizon.
            for h in horizons:
                m = HorizonModel.load(lake, h)
                b = batches[h]
                m.predict(b.X, b.S)
                explain_rows(m, lake.uri, b.X, b.S, permutations=perms, seed=seed,
                             workers=cfg.run.process_workers, min_rows=cfg.run.pool_min_rows)

        t = time.perf_counter()
        step()
        t_new = time.perf_counter() - t
        m = HorizonModel.load(lake, "24h")
        b = batches["24h"].take(np.arange(128))
        m.explain(b.X[:1], b.S[:1], permutations=perms)  # tables built once per loaded model
        t = time.perf_counter()
        m.explain(b.X, b.S, permutations=perms, seed=seed)
        t_new_128 = time.perf_counter() - t
        t = time.perf_counter()
        permutation_shap(m.meta_logit, b.X, b.S, m.bg_X, m.bg_S, permutations=perms, seed=seed)
        t_old_128 = time.perf_counter() - t
        t = time.perf_counter()
        m._explainer.trees.shap(batches["24h"].X)
        t_tree_1000 = time.perf_counter() - t
    return {"predictions": n_coins * len(horizons), "predict_with_shap_s": round(t_new, 2), "goal_s": 15,
            "shap_128_rows_exact_s": round(t_new_128, 2), "shap_128_rows_permutation_s": round(t_old_128, 2),
            "permutation_extrapolated_3000_rows_1_core_s": round(t_old_128 * 3000 / 128, 1),
            "treeshap_1000_rows_s": round(t_tree_1000, 3),
            "note": "the sequence network's permutation SHAP is most of what remains"}


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
