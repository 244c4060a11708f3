"""Serving a horizon's model: ONNX members -> meta-learner -> calibrator, with SHAP; numpy + onnxruntime only."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from shared.errors import CstError, LakeKeyNotFound
from shared.metrics import logit
from shared.records import ModelMetadata, vol_forecast_key
from shared.registry import current_version, load_metadata, model_prefix  # noqa: F401 - the registry's keys, re-exported
from shared.storage import Lake

MEMBER_FILES = {"lr": "lr.onnx", "gbt": "gbt.onnx", "gru": "gru.onnx"}
OTHER_FILES = {"meta": "meta.onnx", "calibrator": "calibrator.onnx", "q10": "q10.onnx", "q50": "q50.onnx",
               "q90": "q90.onnx", "background": "background.npz"}
ALL_FILES = {**MEMBER_FILES, **OTHER_FILES}
# Exported since issue 16 (exact SHAP); a model trained before it has none and is explained by permutation.
EXPLAIN_FILE = "explain.npz"
# The cross-sectional stack of a version (P(beats the universe's median)): its own members, meta-learner,
# calibrator and SHAP arrays; required when the version's metadata says it has one.
BEATS = "beats/"
BEATS_FILES = {f"{BEATS}{k}": f"{BEATS}{f}" for k, f in {**MEMBER_FILES, "meta": "meta.onnx",
                                                         "calibrator": "calibrator.onnx"}.items()}
# The volatility forecast (log realized variance over the horizon): HAR, HAR with the long-run level (in versions
# whose metadata lists that member) and LightGBM members, a linear meta-learner; required when the version's
# metadata says it has one.
VOL = "vol/"


def vol_members(metadata: ModelMetadata) -> tuple[str, ...]:
    """The volatility members in the meta-learner's order."""
    return ("har", "long", "gbt") if "long" in metadata.vol.members else ("har", "gbt")


def vol_files(metadata: ModelMetadata) -> dict[str, str]:
    return {f"{VOL}{k}": f"{VOL}{k}.onnx" for k in (*vol_members(metadata), "meta")} if metadata.vol else {}


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
    # P(the coin beats the median coin of its universe), its Venn-Abers interval and the stack's logit (the score
    # that ranks the coins); None when the version has no cross-sectional stack.
    beats: np.ndarray | None = None
    beats_low: np.ndarray | None = None
    beats_high: np.ndarray | None = None
    beats_logit: np.ndarray | None = None
    # The volatility forecast: the standard deviation of the forward log return over the horizon (the square root
    # of the forecast realized variance); None when the version has none.
    vol: np.ndarray | None = None

    @property
    def beats_confidence(self) -> np.ndarray | None:
        """The interval's lower bound for the predicted side (beats or lags), as confidence is for direction."""
        if self.beats is None:
            return None
        return np.where(self.beats >= 0.5, self.beats_low, 1.0 - self.beats_high)


class HorizonModel:
    """One horizon's stacked ensemble as exported by training; every artifact is required."""

    def __init__(self, horizon: str, version: str, blobs: dict[str, bytes], metadata: ModelMetadata, threads: int = 1):
        files = {**ALL_FILES, **(BEATS_FILES if metadata.beats is not None else {}),
                 **vol_files(metadata)}
        missing = [name for name, f in files.items() if f not in blobs]
        if missing:
            raise CstError("model_incomplete",
                           f"model {horizon}/{version} lacks {', '.join(files[m] for m in missing)}; "
                           "every member (the sequence network included) is required")
        self.horizon, self.version, self.metadata = horizon, version, metadata
        self.names: list[str] = metadata.features
        self.has_beats = metadata.beats is not None
        self.has_vol = metadata.vol is not None
        self.sessions = {name: _session(blobs[f], threads) for name, f in files.items() if f.endswith(".onnx")}
        bg = np.load(io.BytesIO(blobs["background.npz"]))
        self.bg_X, self.bg_S = bg["X"].astype(np.float32), bg["S"].astype(np.float32)
        self._explain_blobs = {stack: blobs.get(stack + EXPLAIN_FILE) for stack in ("", BEATS)}
        self._explainers: dict[str, object] = {}

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
        extra = [*BEATS_FILES.values(), BEATS + EXPLAIN_FILE] if meta.beats is not None else []
        extra += list(vol_files(meta).values())
        for f in [*ALL_FILES.values(), EXPLAIN_FILE, *extra]:
            try:
                blobs[f] = lake.get(prefix + f)
            except LakeKeyNotFound:
                pass
        return cls(horizon, version, blobs, meta, threads)

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        s = self.sessions[name]
        return s.run(None, {s.get_inputs()[0].name: x})

    def member_logits(self, X: np.ndarray, S: np.ndarray, stack: str = "") -> np.ndarray:
        """The members' logits of the direction stack, or of the cross-sectional one (stack="beats/")."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        S = np.ascontiguousarray(S, dtype=np.float32)
        lr = logit(self._run(stack + "lr", X)[1][:, 1])
        gbt = logit(self._run(stack + "gbt", X)[1][:, 1])
        return np.column_stack([lr, gbt, self.sequence_logit(S, stack)])

    def meta_logit(self, X: np.ndarray, S: np.ndarray, stack: str = "") -> np.ndarray:
        z = self.member_logits(X, S, stack).astype(np.float32)
        return logit(self._run(stack + "meta", z)[1][:, 1])

    def beats_logit(self, X: np.ndarray, S: np.ndarray) -> np.ndarray:
        return self.meta_logit(X, S, BEATS)

    def vol_log_variance(self, X: np.ndarray) -> np.ndarray:
        """The stacked log realized-variance forecast (before the mean correction)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        z = np.column_stack([self._run(VOL + m, X)[0].reshape(-1)
                             for m in vol_members(self.metadata)]).astype(np.float32)
        return self._run(VOL + "meta", z)[0].reshape(-1).astype(np.float64)

    def vol_sigma(self, X: np.ndarray) -> np.ndarray:
        """The served volatility forecast: the stack's, or the linear member's that forecast the held-out rows
        better (HAR, or HAR with the long-run level)."""
        served = self.metadata.vol.served
        return self.stack_sigma(X) if served == "stack" else self.member_sigma(X, vol_forecast_key(served))

    def vol_level(self, forecast: str) -> float:
        """The log mean correction of one forecast ("stack", "har", "long"): its variance is exp(log forecast +
        level). Versions before `levels` corrected by half the out-of-fold residual variance (log-normal)."""
        v = self.metadata.vol
        if v.levels is not None:
            return float(v.levels[forecast])
        s2 = v.log_residual_variance if forecast == "stack" else v.metrics.get(f"{forecast}_log_residual_variance", 0.0)
        return float(s2) / 2

    def stack_sigma(self, X: np.ndarray) -> np.ndarray:
        """The stacked forecast, mean-corrected."""
        return np.sqrt(np.exp(self.vol_log_variance(X) + self.vol_level("stack")))

    def har_sigma(self, X: np.ndarray) -> np.ndarray:
        """The HAR member alone (mean-corrected by its own out-of-fold residuals): a reference."""
        return self.member_sigma(X, "har")

    def member_sigma(self, X: np.ndarray, member: str) -> np.ndarray:
        """One linear member alone ("har" or "long"), mean-corrected by its own out-of-fold residuals."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        return np.sqrt(np.exp(self._run(VOL + member, X)[0].reshape(-1).astype(np.float64) + self.vol_level(member)))

    def predict(self, X: np.ndarray, S: np.ndarray) -> Predictions:
        if X.shape[1] != len(self.names):
            raise CstError("feature_mismatch", f"model {self.horizon}/{self.version} expects {len(self.names)} "
                                               f"features, got {X.shape[1]}")
        if X.shape[0] == 0:
            # onnxruntime aborts the process on an empty batch for some graphs (the GRU's): nothing to predict.
            e = np.zeros(0)
            b = e if self.has_beats else None
            return Predictions(e, e, e, np.zeros(0, dtype=np.int64), e, np.zeros((0, 3)), e, b, b, b, b,
                               e if self.has_vol else None)
        score = self.meta_logit(X, S)
        p, low, high = (a.astype(np.float64) for a in self._run("calibrator", score.astype(np.float32)))
        up = p >= 0.5
        direction = np.where(up, 1, -1)
        confidence = np.where(up, low, 1.0 - high)
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        q = np.column_stack([self._run(k, X32)[0].reshape(-1) for k in ("q10", "q50", "q90")]).astype(np.float64)
        # Quantile models are fitted separately; their estimates are rearranged into order (never moved).
        q = np.sort(q, axis=1)
        out = Predictions(p, low, high, direction, confidence, q, score)
        if self.has_beats:
            out.beats_logit = self.beats_logit(X, S)
            out.beats, out.beats_low, out.beats_high = (
                a.astype(np.float64) for a in self._run(BEATS + "calibrator", out.beats_logit.astype(np.float32)))
        if self.has_vol:
            out.vol = self.vol_sigma(X)
        return out

    def explain(self, X: np.ndarray, S: np.ndarray, *, permutations: int = 4, seed: int = 0,
                stack: str = "") -> tuple[np.ndarray, np.ndarray]:
        """SHAP of the meta-learner's logit against the stored background rows: (phi (n, F), base (n,)); of the
        direction stack, or of the cross-sectional one (stack="beats/").

        With the exported explain arrays: exact for the logistic and tree members, permutation (these
        permutations, this seed) for the sequence network, combined through the meta-learner's weights. Without
        them (a model trained before they were exported): permutation SHAP of the whole stack. Either way
        sum(phi) + base == meta_logit(row), up to float32 rounding in the served graphs.
        """
        from services.predict.explain import StackExplainer, permutation_shap

        blob = self._explain_blobs.get(stack)
        if blob is None:
            return permutation_shap(lambda x, s: self.meta_logit(x, s, stack), X, S, self.bg_X, self.bg_S,
                                    permutations=permutations, seed=seed)
        if stack not in self._explainers:  # built on first use: predicting alone never pays for the tables
            self._explainers[stack] = StackExplainer(dict(np.load(io.BytesIO(blob))), self.bg_X, self.bg_S)
        return self._explainers[stack].explain(X, S, lambda s: self.sequence_logit(s, stack),
                                               permutations=permutations, seed=seed)

    def sequence_logit(self, S: np.ndarray, stack: str = "") -> np.ndarray:
        return self._run(stack + "gru", np.ascontiguousarray(S, dtype=np.float32))[0].astype(np.float64).reshape(-1)


def top_features(phi: np.ndarray, names: list[str], k: int) -> list[list[dict]]:
    order = np.argsort(-np.abs(phi), axis=1)[:, :k]
    return [[{"feature": names[j], "contribution": float(phi[i, j])} for j in row] for i, row in enumerate(order)]
