"""Base learners (scikit-learn style): regularized logistic regression, gradient-boosted trees, a GRU.

Each member learns from a Dataset, returns logits (log-odds of up), and exports itself to ONNX.
Training-only: imports scikit-learn, LightGBM and torch; serving never imports this module.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

MEMBERS = ("lr", "gbt", "gru")
OPSET = 15  # onnxmltools' LightGBM converter supports up to 15; every member uses the same


@dataclass
class Dataset:
    X: np.ndarray  # (n, F) float32, the row's features
    S: np.ndarray  # (n, L, F) float32, the last L rows of the same coin (oldest first)
    y: np.ndarray  # (n,) 0/1 (NaN where unlabeled)
    ts: np.ndarray
    coin: np.ndarray
    # How far a row's label reaches past its decision time (the horizon): rows closer than this to rows held out
    # for validation would share label time with them.
    label_ms: int = 0

    def take(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.X[idx], self.S[idx], self.y[idx], self.ts[idx], self.coin[idx], self.label_ms)

    def __len__(self) -> int:
        return int(self.X.shape[0])


class LogisticMember:
    name = "lr"

    def __init__(self, C: float = 0.1, seed: int = 0):
        self.C = C
        self.seed = seed

    @staticmethod
    def space(trial: Any) -> dict:
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}

    def fit(self, ds: Dataset, epochs: int = 0) -> LogisticMember:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000))
        self.model.fit(ds.X, ds.y.astype(int))
        return self

    def logit(self, ds: Dataset) -> np.ndarray:
        return self.model.decision_function(ds.X)

    def linear(self) -> tuple[np.ndarray, float]:
        """(coef, intercept) with the scaler folded in: logit = X @ coef + intercept (for exact SHAP at serving)."""
        scaler, clf = self.model.steps[0][1], self.model.steps[-1][1]
        coef = clf.coef_.reshape(-1) / scaler.scale_
        return coef, float(clf.intercept_[0] - coef @ scaler.mean_)

    def to_onnx(self, n_features: int) -> bytes:
        from skl2onnx import to_onnx

        clf = self.model.steps[-1][1]
        onx = to_onnx(self.model, np.zeros((1, n_features), np.float32), target_opset={"": OPSET, "ai.onnx.ml": 3},
                      options={id(clf): {"zipmap": False}})
        return onx.SerializeToString()


class GbtMember:
    """LightGBM: it converts to ONNX cleanly (scikit-learn's HistGradientBoosting does not with onnx>=1.16)."""

    name = "gbt"
    # Tree counts are searched in steps of this many trees.
    ESTIMATOR_STEP = 50

    def __init__(self, n_estimators: int = 150, num_leaves: int = 15, learning_rate: float = 0.05,
                 min_child_samples: int = 100, colsample_bytree: float = 0.7, reg_lambda: float = 1.0, seed: int = 0,
                 threads: int = 2):
        self.params = dict(n_estimators=n_estimators, num_leaves=num_leaves, learning_rate=learning_rate,
                           min_child_samples=min_child_samples, colsample_bytree=colsample_bytree, reg_lambda=reg_lambda)
        self.seed, self.threads = seed, threads

    @staticmethod
    def space(trial: Any, max_estimators: int = 400) -> dict:
        return {
            "n_estimators": trial.suggest_int("n_estimators", GbtMember.ESTIMATOR_STEP, max_estimators,
                                              step=GbtMember.ESTIMATOR_STEP),
            "num_leaves": trial.suggest_int("num_leaves", 4, 31),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 20, 400, log=True),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }

    def fit(self, ds: Dataset, epochs: int = 0) -> GbtMember:
        import lightgbm as lgb

        # deterministic + row-wise histograms: the same data and seed give the same trees whatever the load.
        self.model = lgb.LGBMClassifier(**self.params, subsample=0.8, subsample_freq=1, random_state=self.seed,
                                        n_jobs=self.threads, deterministic=True, force_row_wise=True, verbose=-1)
        self.model.fit(ds.X, ds.y.astype(int))
        return self

    def logit(self, ds: Dataset) -> np.ndarray:
        return self.model.predict(ds.X, raw_score=True)

    def to_onnx(self, n_features: int) -> bytes:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        # A fixed graph name: the converter otherwise names the graph with a random UUID, and the same model
        # would export to different bytes.
        onx = convert_lightgbm(self.model, initial_types=[("x", FloatTensorType([None, n_features]))],
                               zipmap=False, target_opset=OPSET, name="gbt")
        return onx.SerializeToString()

    def tree_arrays(self) -> dict[str, np.ndarray]:
        """Every node of every tree as flat arrays (TreeSHAP at serving needs no LightGBM): split feature (-1 on a
        leaf), threshold as float32 (as the ONNX graph compares), default-left, missing type (0 none, 1 zero, 2 NaN),
        children, leaf value, and each tree's root."""
        cols: dict[str, list] = {k: [] for k in ("feature", "threshold", "default_left", "missing", "left", "right",
                                                 "value")}
        roots = []
        missing = {"None": 0, "Zero": 1, "NaN": 2}

        def add(node: dict) -> int:
            i = len(cols["feature"])
            for col in cols.values():
                col.append(0)
            cols["feature"][i], cols["left"][i], cols["right"][i] = -1, -1, -1
            if "leaf_value" in node:
                cols["value"][i] = node["leaf_value"]
                return i
            if node["decision_type"] != "<=":
                raise ValueError(f"split {node['decision_type']!r} is not exported (only numerical '<=' splits)")
            cols["feature"][i], cols["threshold"][i] = node["split_feature"], node["threshold"]
            cols["default_left"][i], cols["missing"][i] = node["default_left"], missing[node["missing_type"]]
            cols["left"][i] = add(node["left_child"])
            cols["right"][i] = add(node["right_child"])
            return i

        for tree in self.model.booster_.dump_model()["tree_info"]:
            roots.append(add(tree["tree_structure"]))
        dtypes = {"feature": np.int32, "threshold": np.float32, "default_left": bool, "missing": np.int8,
                  "left": np.int32, "right": np.int32, "value": np.float64}
        return {**{k: np.asarray(v, dtypes[k]) for k, v in cols.items()}, "roots": np.asarray(roots, np.int32)}


def _gru_module(n_features: int, hidden: int, dropout: float, mean: np.ndarray, std: np.ndarray):
    import torch
    from torch import nn

    class SequenceNet(nn.Module):
        """Standardize -> GRU over the window -> linear head on the last state -> logit."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
            self.gru = nn.GRU(n_features, hidden, batch_first=True)
            self.drop = nn.Dropout(dropout)
            self.head = nn.Linear(hidden, 1)

        def forward(self, x):
            z = (x - self.mean) / self.std
            out, _ = self.gru(z)
            return self.head(self.drop(out[:, -1, :])).squeeze(-1)

    return SequenceNet()


class SequenceMember:
    """A GRU over the last L feature rows of the coin, pooled across coins (no coin identity)."""

    name = "gru"

    def __init__(self, hidden: int = 32, dropout: float = 0.1, lr: float = 2e-3, weight_decay: float = 1e-4,
                 seed: int = 0, threads: int = 2):
        self.hidden, self.dropout, self.lr, self.weight_decay = hidden, dropout, lr, weight_decay
        self.seed, self.threads = seed, threads

    @staticmethod
    def space(trial: Any) -> dict:
        return {
            "hidden": trial.suggest_categorical("hidden", [16, 32, 64]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.4),
            "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        }

    # Training stops at the checkpoint that scores best on the latest decision times of the rows it is given
    # (this share of them), checked this many times an epoch. Pooled across hundreds of coins, the rows of one
    # decision time share the market's move: the network learns those dates' directions within an epoch and its
    # out-of-sample Brier ends far above a constant's (measured on ~300 Binance perpetuals: 0.36 after 6 epochs
    # against 0.249), so the checkpoint is chosen on time it has not seen.
    VALIDATION_SHARE = 0.2
    CHECKS_PER_EPOCH = 4

    def fit(self, ds: Dataset, epochs: int = 6) -> SequenceMember:
        import torch

        # Seeded, a fixed thread count and deterministic kernels: the same data gives the same network.
        torch.manual_seed(self.seed)
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(True)
        train_rows, val_rows = _time_tail(ds.ts, self.VALIDATION_SHARE, ds.label_ms)
        # The windows are indexed in place (a copy of the training rows' windows would double the largest array).
        sample = train_rows[:: max(1, train_rows.size // 50_000)]
        flat = ds.S[sample].reshape(-1, ds.S.shape[-1])
        mean = flat.mean(axis=0)
        std = flat.std(axis=0)
        std = np.where(std > 0, std, 1.0)  # a constant feature divides by 1: it carries no signal either way
        self.net = _gru_module(ds.S.shape[-1], self.hidden, self.dropout, mean, std)
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        X = torch.as_tensor(ds.S)
        y = torch.as_tensor(ds.y.astype(np.float32))
        rows = torch.as_tensor(train_rows)
        val = torch.as_tensor(val_rows)
        gen = torch.Generator().manual_seed(self.seed)
        n = len(train_rows)
        batches = -(-n // 256)
        every = max(1, batches // self.CHECKS_PER_EPOCH)

        def val_loss() -> float:
            self.net.eval()
            with torch.no_grad():
                out = torch.cat([self.net(X[val[i: i + 4096]]) for i in range(0, len(val), 4096)])
                score = float(loss_fn(out, y[val]))
            self.net.train()
            return score

        best = (val_loss() if len(val_rows) else float("inf"), {k: v.clone() for k, v in self.net.state_dict().items()})
        self.checkpoint = 0.0
        self.net.train()
        for epoch in range(max(1, epochs)):
            perm = rows[torch.randperm(n, generator=gen)]
            for k, i in enumerate(range(0, n, 256)):
                b = perm[i: i + 256]
                opt.zero_grad()
                loss = loss_fn(self.net(X[b]), y[b])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                opt.step()
                if len(val_rows) and ((k + 1) % every == 0 or k + 1 == batches):
                    score = val_loss()
                    if score < best[0]:
                        best = (score, {key: v.clone() for key, v in self.net.state_dict().items()})
                        self.checkpoint = epoch + (k + 1) / batches
        if len(val_rows):
            self.net.load_state_dict(best[1])
        self.net.eval()
        return self

    def logit(self, ds: Dataset) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = [self.net(torch.as_tensor(ds.S[i: i + 4096])).numpy() for i in range(0, len(ds), 4096)]
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def to_onnx(self, n_features: int) -> bytes:
        import torch

        L = 2
        import warnings

        buf = io.BytesIO()
        example = torch.zeros((2, L, n_features), dtype=torch.float32)
        with warnings.catch_warnings():
            # The exporter warns about GRU batch sizes and its own deprecation; batch and length are
            # dynamic axes here and the parity test runs other batch sizes.
            warnings.simplefilter("ignore")
            self._export(buf, example)
        return buf.getvalue()

    def _export(self, buf, example) -> None:
        import torch

        torch.onnx.export(self.net, (example,), buf, input_names=["x"], output_names=["logit"],
                          dynamic_axes={"x": {0: "batch", 1: "steps"}, "logit": {0: "batch"}},
                          opset_version=max(OPSET, 14), dynamo=False)


def _time_tail(ts: np.ndarray, share: float, label_ms: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose label ends before the last `share` of distinct decision times start, and the rows of those
    times (none held out when there are too few times, or too few rows would be left to train on)."""
    times = np.unique(ts)
    none = (np.arange(ts.size), np.zeros(0, dtype=np.int64))
    if times.size < 10 or share <= 0:
        return none
    start = times[int(times.size * (1 - share))]
    train, val = np.flatnonzero(ts + label_ms < start), np.flatnonzero(ts >= start)
    return (train, val) if train.size >= val.size else none


def make_member(name: str, params: dict, seed: int, threads: int = 2):
    if name == "lr":
        return LogisticMember(seed=seed, **params)
    if name == "gbt":
        return GbtMember(seed=seed, threads=threads, **params)
    if name == "gru":
        return SequenceMember(seed=seed, threads=threads, **params)
    raise ValueError(f"unknown member {name!r}; members: {MEMBERS}")


class QuantileModels:
    """Forward log-return quantiles (10/50/90%) by LightGBM quantile regression, for sizing."""

    def __init__(self, quantiles: tuple[float, ...], n_estimators: int, num_leaves: int, learning_rate: float,
                 min_child_samples: int, seed: int = 0, threads: int = 2):
        self.quantiles = quantiles
        self.params = {"n_estimators": n_estimators, "num_leaves": num_leaves, "learning_rate": learning_rate,
                       "min_child_samples": min_child_samples}
        self.seed, self.threads = seed, threads

    def fit(self, X: np.ndarray, r: np.ndarray) -> QuantileModels:
        import lightgbm as lgb

        self.models = [
            lgb.LGBMRegressor(objective="quantile", alpha=q, **self.params, random_state=self.seed, n_jobs=self.threads,
                              deterministic=True, force_row_wise=True,
                              verbose=-1).fit(X, r)
            for q in self.quantiles
        ]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.sort(np.column_stack([m.predict(X) for m in self.models]), axis=1)

    def to_onnx(self, n_features: int) -> list[bytes]:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        return [convert_lightgbm(m, initial_types=[("x", FloatTensorType([None, n_features]))],
                                 target_opset=OPSET, name=f"quantile_{q}").SerializeToString()
                for q, m in zip(self.quantiles, self.models, strict=True)]
