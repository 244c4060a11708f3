"""CPU-bound per-row work (SHAP explanations) across a process pool, for batches large enough to pay for it.

Workers are spawned (no forked ONNX thread pools) and each loads the model once from the lake. The
permutations are drawn from the seed before any row is touched, so a chunked result is identical to
the in-process one. Below `pool_min_rows` the work stays in the horizon's thread (horizons already run
side by side, see `runner.run_pipeline`), since spawning workers that load the model costs about a second
(measured in benchmarks/bench_predict.py).
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import numpy as np

_model = None


def _init(lake_uri: str, horizon: str, version: str) -> None:
    global _model
    from services.predict.model import HorizonModel
    from shared.storage import open_lake

    _model = HorizonModel.load(open_lake(lake_uri), horizon, version)


def _explain(args: tuple[np.ndarray, np.ndarray, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    X, S, permutations, seed, stack = args
    return _model.explain(X, S, permutations=permutations, seed=seed, stack=stack)


def explain_rows(model, lake_uri: str, X: np.ndarray, S: np.ndarray, *, permutations: int, seed: int,
                 workers: int, min_rows: int, stack: str = "") -> tuple[np.ndarray, np.ndarray]:
    n = X.shape[0]
    if workers < 2 or n < min_rows:
        return model.explain(X, S, permutations=permutations, seed=seed, stack=stack)
    chunks = [c for c in np.array_split(np.arange(n), workers) if c.size]
    with ProcessPoolExecutor(len(chunks), mp_context=mp.get_context("spawn"), initializer=_init,
                             initargs=(lake_uri, model.horizon, model.version)) as pool:
        parts = list(pool.map(_explain, [(X[c], S[c], permutations, seed, stack) for c in chunks]))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
