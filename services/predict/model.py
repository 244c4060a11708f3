"""Serving a horizon's model: ONNX members -> meta-learner -> calibrator, with SHAP; numpy + onnxruntime only."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from shared.errors import CstError, LakeKeyNotFound
from shared.metrics import logit
from shared.records import ModelMetadata
from shared.registry import current_version, load_metadata, model_prefix  # noqa: F401 - the registry's keys, re-exported
from shared.storage import Lake

MEMBER_FILES = {"lr": "lr.onnx", "gbt": "gbt.onnx", "gru": "gru.onnx"}
OTHER_FILES = {"meta": "meta.onnx", "calibrator": "calibrator.onnx", "q10": "q10.onnx", "q50": "q50.onnx",
               "q90": "q90.onnx", "background": "background.npz"}
ALL_FILES = {**MEMBER_FILES, **OTHER_FILES}
# Exported since issue 16 (exact SHAP); a model trained before it has none and is explained by permutation.
EXPLAIN_FILE = "explain.npz"


def _session(blob: bytes, threads: int) -> ort.InferenceSession:
    """One session; its thread pool never spins.

    A horizon holds eight small graphs. Spinning idle pools of eight sessions on two cores starve the
    one that is running (measured 59 ms -> 14 ms for 1,000 rows), and one thread per session with the
    horizons run side by side beats two threads per session (benchmarks/bench_predict.py).
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])


@dataclass
class Predictions:
    p_up: np.ndarray
    low: np.ndarray  # lower end of the interval for P(up)
    high: np.ndarray
    direction: np.ndarray  # +1 up, -1 down
    confidence: np.ndarray  # the interval's lower bound for the predicted direction
    quantiles: np.ndarray  # (n, 3) forward log-return quantiles
    meta_logit: np.ndarray


class HorizonModel:
    """One horizon's stacked ensemble as exported by training; every artifact is required."""

    def __init__(self, horizon: str, version: str, blobs: dict[str, bytes], metadata: ModelMetadata, threads: int = 1):
        missing = [name for name, f in ALL_FILES.items() if f not in blobs]
        if missing:
            raise CstError("model_incomplete",
                           f"model {horizon}/{version} lacks {', '.join(ALL_FILES[m] for m in missing)}; "
                           "every member (the sequence network included) is required")
        self.horizon, self.version, self.metadata = horizon, version, metadata
        self.names: list[str] = metadata.features
        self.sessions = {name: _session(blobs[f], threads) for name, f in ALL_FILES.items() if f.endswith(".onnx")}
        bg = np.load(io.BytesIO(blobs["background.npz"]))
        self.bg_X, self.bg_S = bg["X"].astype(np.float32), bg["S"].astype(np.float32)
        self._explain_blob = blobs.get(EXPLAIN_FILE)
        self._explainer = None

    @classmethod
    def load(cls, lake: Lake, horizon: str, version: str | None = None, threads: int = 1) -> HorizonModel:
        version = version or current_version(lake, horizon)
        if version is None:
            raise CstError("no_model", f"no CURRENT model for horizon {horizon} in {lake.uri}; run cst train")
        prefix = model_prefix(horizon, version)
        meta = load_metadata(lake, horizon, version)
        if meta is None:
            raise CstError("model_incomplete", f"model {horizon}/{version} has no metadata yet (still being written)")
        blobs = {}
        for f in [*ALL_FILES.values(), EXPLAIN_FILE]:
            try:
                blobs[f] = lake.get(prefix + f)
            except LakeKeyNotFound:
                pass
        return cls(horizon, version, blobs, meta, threads)

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        s = self.sessions[name]
        return s.run(None, {s.get_inputs()[0].name: x})

    def member_logits(self, X: np.ndarray, S: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        S = np.ascontiguousarray(S, dtype=np.float32)
        lr = logit(self._run("lr", X)[1][:, 1])
        gbt = logit(self._run("gbt", X)[1][:, 1])
        return np.column_stack([lr, gbt, self.sequence_logit(S)])

    def meta_logit(self, X: np.ndarray, S: np.ndarray) -> np.ndarray:
        z = self.member_logits(X, S).astype(np.float32)
        return logit(self._run("meta", z)[1][:, 1])

    def predict(self, X: np.ndarray, S: np.ndarray) -> Predictions:
        if X.shape[1] != len(self.names):
            raise CstError("feature_mismatch", f"model {self.horizon}/{self.version} expects {len(self.names)} "
                                               f"features, got {X.shape[1]}")
        if X.shape[0] == 0:
            # onnxruntime aborts the process on an empty batch for some graphs (the GRU's): nothing to predict.
            e = np.zeros(0)
            return Predictions(e, e, e, np.zeros(0, dtype=np.int64), e, np.zeros((0, 3)), e)
        score = self.meta_logit(X, S)
        p, low, high = (a.astype(np.float64) for a in self._run("calibrator", score.astype(np.float32)))
        up = p >= 0.5
        direction = np.where(up, 1, -1)
        confidence = np.where(up, low, 1.0 - high)
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        q = np.column_stack([self._run(k, X32)[0].reshape(-1) for k in ("q10", "q50", "q90")]).astype(np.float64)
        # Quantile models are fitted separately; their estimates are rearranged into order (never moved).
        q = np.sort(q, axis=1)
        return Predictions(p, low, high, direction, confidence, q, score)

    def explain(self, X: np.ndarray, S: np.ndarray, *, permutations: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """SHAP of the meta-learner's logit against the stored background rows: (phi (n, F), base (n,)).

        With the exported explain arrays: exact for the logistic and tree members, permutation (these
        permutations, this seed) for the sequence network, combined through the meta-learner's weights. Without
        them (a model trained before they were exported): permutation SHAP of the whole stack. Either way
        sum(phi) + base == meta_logit(row), up to float32 rounding in the served graphs.
        """
        from services.predict.explain import StackExplainer, permutation_shap

        if self._explain_blob is None:
            return permutation_shap(self.meta_logit, X, S, self.bg_X, self.bg_S, permutations=permutations, seed=seed)
        if self._explainer is None:  # built on first use: predicting alone never pays for the tables
            self._explainer = StackExplainer(dict(np.load(io.BytesIO(self._explain_blob))), self.bg_X, self.bg_S)
        return self._explainer.explain(X, S, self.sequence_logit, permutations=permutations, seed=seed)

    def sequence_logit(self, S: np.ndarray) -> np.ndarray:
        return self._run("gru", np.ascontiguousarray(S, dtype=np.float32))[0].astype(np.float64).reshape(-1)


def top_features(phi: np.ndarray, names: list[str], k: int) -> list[list[dict]]:
    order = np.argsort(-np.abs(phi), axis=1)[:, :k]
    return [[{"feature": names[j], "contribution": float(phi[i, j])} for j in row] for i, row in enumerate(order)]
