"""SHAP in numpy: interventional Shapley values of the served stack against background rows.

Permutation SHAP works for any model f(X, S) (kept for models exported without explain arrays, and for the sequence
network, which has no exact method); the logistic and tree members have exact ones (below).

A feature j is the column j of the row (tabular members) and of every step of the row's window (the
sequence member), replaced together. For each permutation the row's features are switched in one
by one, starting from each background row; the model-output steps telescope, so contributions sum
exactly to f(row) - mean f(background). Antithetic pairs (a permutation and its reverse) cut variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from shared.errors import CstError


def permutation_shap(f: Callable[[np.ndarray, np.ndarray], np.ndarray], X: np.ndarray, S: np.ndarray,
                     bg_X: np.ndarray, bg_S: np.ndarray, *, permutations: int = 4,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n, F = X.shape
    B = bg_X.shape[0]
    rng = np.random.default_rng(seed)  # only the order features are switched in; seeded, so reproducible
    pairs = max(1, permutations // 2)
    perms = []
    for _ in range(pairs):
        p = rng.permutation(F)
        perms.extend([p, p[::-1]])
    phi = np.zeros((n, F))
    base = np.full(n, float(np.mean(f(bg_X, bg_S))))
    for i in range(n):
        # All coalitions of all permutations for this row in one batch: (P, F + 1, B) model inputs.
        tab = np.broadcast_to(bg_X, (len(perms), F + 1, B, F)).copy()
        seq = np.broadcast_to(bg_S, (len(perms), F + 1, *bg_S.shape)).copy()
        for k, perm in enumerate(perms):
            for step in range(1, F + 1):
                cols = perm[:step]
                tab[k, step:, :, cols[-1]] = X[i, cols[-1]]
                seq[k, step:, :, :, cols[-1]] = S[i, :, cols[-1]]
        out = f(tab.reshape(-1, F), seq.reshape(-1, *bg_S.shape[1:])).reshape(len(perms), F + 1, B).mean(axis=2)
        steps = np.diff(out, axis=1)  # (P, F): the change when perm[step] switched in
        for k, perm in enumerate(perms):
            phi[i, perm] += steps[k]
        phi[i] /= len(perms)
    return phi, base


# --- Exact parts ---------------------------------------------------------------------------------------------------
# The meta-learner is a logistic regression on the member logits, so its logit is w . z + b: interventional Shapley
# values are linear in the game, and the stack's SHAP is exactly w_lr phi_lr + w_gbt phi_gbt + w_gru phi_gru. The
# logistic member is linear in the features (exact, closed form), the trees have interventional TreeSHAP (exact,
# below); only the sequence network keeps the permutation estimate, with the same permutations as before.

# Leaves whose path tests at most this many distinct features get a table over every pattern at load (2^d x d
# values); deeper ones, rare with <= 31 leaves, are computed per request against the background.
TABLE_MAX_FEATURES = 10
_BYTE_BITS = np.array([i.bit_count() for i in range(256)], dtype=np.int64)
_FACT = np.array([math.factorial(i) for i in range(64)], dtype=np.float64)


def _popcount(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    return sum(_BYTE_BITS[(a >> (8 * i)) & 0xFF] for i in range(8))


def linear_shap(coef: np.ndarray, X: np.ndarray, bg_X: np.ndarray) -> np.ndarray:
    """Interventional SHAP of x -> coef . x + c: each feature's step from the background mean, exactly."""
    return (np.asarray(X, np.float64) - np.asarray(bg_X, np.float64).mean(axis=0)) * np.asarray(coef, np.float64)


def _leaf_shap(sx: np.ndarray, sr: np.ndarray, d: int, value: np.ndarray) -> np.ndarray:
    """Mean over background rows of the Shapley values of one leaf's game, per path feature.

    sx (G, S): which of the leaf's d path features the explained row satisfies (bit k: every test on feature k
    along the path sends the row the leaf's way); sr (G, B): the same for the background rows; value (G,).
    For one (row, background) pair the leaf is reached by the hybrid row iff every feature only the row
    satisfies (set A, a of them) comes from the row and every feature only the background row satisfies (set Q,
    q of them) does not; with neither satisfying it is never reached. That game's Shapley values are
    v (a-1)! q! / (a+q)! for each feature of A and -v a! (q-1)! / (a+q)! for each of Q; both-satisfied features
    get 0. Returns (G, S, d).
    """
    full = (1 << d) - 1
    x, r = sx[:, :, None], sr[:, None, :]  # (G, S, 1), (G, 1, B)
    valid = (x | r) == full
    only_x = x & ~r  # A
    only_r = np.broadcast_to(full & ~x, only_x.shape)  # Q: on valid pairs, what the row fails the background passes
    a, q = _popcount(only_x), _popcount(only_r)
    w_a = np.where(a > 0, _FACT[np.maximum(a - 1, 0)] * _FACT[q] / _FACT[a + q], 0.0) * valid
    w_q = np.where(q > 0, _FACT[a] * _FACT[np.maximum(q - 1, 0)] / _FACT[a + q], 0.0) * valid
    k = np.arange(d)
    bits_a = (only_x[..., None] >> k) & 1  # (G, S, B, d)
    bits_q = (only_r[..., None] >> k) & 1
    phi = (bits_a * w_a[..., None] - bits_q * w_q[..., None]).mean(axis=2)
    return phi * np.asarray(value, np.float64)[:, None, None]


class TreeShap:
    """Interventional TreeSHAP of a tree ensemble's raw score against fixed background rows, in numpy.

    The trees are the arrays exported at training time (one entry per node of every tree: split feature, -1 on
    leaves; float32 threshold, compared as the served ONNX graph compares; default-left and missing type
    (0 none, 1 zero, 2 NaN) as LightGBM defines them; children; leaf values). Matches shap's
    TreeExplainer(feature_perturbation="interventional") up to floating-point rounding.
    """

    def __init__(self, trees: dict[str, np.ndarray], bg_X: np.ndarray):
        feature, left, right = (np.asarray(trees[k]) for k in ("feature", "left", "right"))
        value = np.asarray(trees["value"], np.float64)
        internal = np.flatnonzero(feature >= 0)
        pos = np.full(feature.size, -1)
        pos[internal] = np.arange(internal.size)
        self.feature = feature[internal]
        self.threshold = np.asarray(trees["threshold"], np.float32)[internal]
        self.default_left = np.asarray(trees["default_left"], bool)[internal]
        self.missing = np.asarray(trees["missing"], np.int64)[internal]
        self.constant = 0.0  # single-leaf trees
        e_node, e_dir, pair_start, p_leaf, p_k, p_feature, leaf_pairs, leaf_value, leaf_d = [], [], [], [], [], [], [], [], []
        for root in np.asarray(trees["roots"]).tolist():
            if feature[root] < 0:
                self.constant += float(value[root])
                continue
            stack = [(root, [])]
            while stack:
                node, path = stack.pop()
                if feature[node] >= 0:
                    stack.append((int(left[node]), path + [(int(node), True)]))
                    stack.append((int(right[node]), path + [(int(node), False)]))
                    continue
                feats = list(dict.fromkeys(int(feature[n]) for n, _ in path))
                leaf_pairs.append(len(p_leaf))
                for k, f in enumerate(feats):
                    pair_start.append(len(e_node))
                    for n, went_left in path:
                        if feature[n] == f:
                            e_node.append(pos[n])
                            e_dir.append(went_left)
                    p_leaf.append(len(leaf_value))
                    p_k.append(k)
                    p_feature.append(f)
                leaf_value.append(float(value[node]))
                leaf_d.append(len(feats))
        self.e_node, self.e_dir = np.asarray(e_node, np.int64), np.asarray(e_dir, bool)
        self.pair_start, self.leaf_pairs = np.asarray(pair_start, np.int64), np.asarray(leaf_pairs, np.int64)
        self.p_leaf, self.p_k = np.asarray(p_leaf, np.int64), np.asarray(p_k, np.int64)
        self.leaf_value, self.leaf_d = np.asarray(leaf_value), np.asarray(leaf_d, np.int64)
        if self.leaf_d.size and self.leaf_d.max() > 62:
            raise CstError("explain_unsupported", "a tree path tests more than 62 features; bit patterns overflow")
        self.n_features = int(np.asarray(bg_X).shape[1])
        self.onehot = np.zeros((self.p_leaf.size, self.n_features))
        self.onehot[np.arange(self.p_leaf.size), np.asarray(p_feature, np.int64)] = 1.0
        self.bg_codes = self._codes(bg_X)  # (B, leaves)
        self.base = float(self.raw(bg_X, self.bg_codes).mean())
        # Tables: for each shallow leaf, its path features' SHAP for every pattern a row can have.
        self.table_off = np.zeros(self.leaf_d.size, np.int64)
        self.deep = np.flatnonzero(self.leaf_d > TABLE_MAX_FEATURES)
        parts, off = [], 0
        for d in np.unique(self.leaf_d[self.leaf_d <= TABLE_MAX_FEATURES]).tolist():
            leaves = np.flatnonzero(self.leaf_d == d)
            size = (1 << d) * d
            self.table_off[leaves] = off + np.arange(leaves.size) * size
            off += leaves.size * size
            patterns = np.arange(1 << d, dtype=np.int64)
            step = max(1, 2_000_000 // ((1 << d) * self.bg_codes.shape[0] * d))  # bounds the (G, S, B, d) block
            for s in range(0, leaves.size, step):
                g = leaves[s:s + step]
                sx = np.broadcast_to(patterns, (g.size, patterns.size))
                parts.append(_leaf_shap(sx, self.bg_codes[:, g].T, d, self.leaf_value[g]).reshape(-1))
        self.table = np.concatenate(parts) if parts else np.zeros(0)

    def _codes(self, X: np.ndarray) -> np.ndarray:
        """(n, leaves): bit k set where the row satisfies every test on the leaf's k-th path feature."""
        x = np.asarray(X, np.float32)[:, self.feature]  # (n, internal nodes)
        nan = np.isnan(x)
        x = np.where(nan & (self.missing != 2), np.float32(0.0), x)  # LightGBM: NaN is 0 unless NaN is tracked
        default = ((self.missing == 1) & (np.abs(x) <= 1e-35)) | ((self.missing == 2) & nan)
        go_left = np.where(default, self.default_left, x <= self.threshold)
        ok = np.logical_and.reduceat(go_left[:, self.e_node] == self.e_dir, self.pair_start, axis=1)
        return np.add.reduceat(ok.astype(np.int64) << self.p_k, self.leaf_pairs, axis=1)

    def raw(self, X: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        """The ensemble's raw score (the member's logit), as the served graph computes it."""
        codes = self._codes(X) if codes is None else codes
        return self.constant + (codes == (1 << self.leaf_d) - 1) @ self.leaf_value

    def shap(self, X: np.ndarray, chunk: int = 256) -> np.ndarray:
        """(n, F) interventional SHAP values; each row sums to raw(row) - base."""
        out = np.zeros((X.shape[0], self.n_features))
        shallow = self.leaf_d[self.p_leaf] <= TABLE_MAX_FEATURES
        for s in range(0, X.shape[0], chunk):
            codes = self._codes(X[s:s + chunk])
            idx = self.table_off[self.p_leaf] + codes[:, self.p_leaf] * self.leaf_d[self.p_leaf] + self.p_k
            vals = np.where(shallow, self.table[np.where(shallow, idx, 0)], 0.0)
            for leaf in self.deep.tolist():
                cols = np.flatnonzero(self.p_leaf == leaf)
                vals[:, cols] = _leaf_shap(codes[None, :, leaf], self.bg_codes[None, :, leaf], int(self.leaf_d[leaf]),
                                           self.leaf_value[[leaf]])[0]
            out[s:s + chunk] = vals @ self.onehot
        return out


class StackExplainer:
    """SHAP of the meta-learner's logit from the arrays exported with the model (explain.npz)."""

    def __init__(self, arrays: dict[str, np.ndarray], bg_X: np.ndarray, bg_S: np.ndarray):
        self.meta_coef = np.asarray(arrays["meta_coef"], np.float64).reshape(-1)  # (lr, gbt, gru)
        self.meta_intercept = float(np.asarray(arrays["meta_intercept"]).reshape(-1)[0])
        self.lr_coef = np.asarray(arrays["lr_coef"], np.float64).reshape(-1)
        self.lr_intercept = float(np.asarray(arrays["lr_intercept"]).reshape(-1)[0])
        self.trees = TreeShap({k[4:]: v for k, v in arrays.items() if k.startswith("gbt_")}, bg_X)
        self.bg_X, self.bg_S = bg_X, bg_S

    def lr_logit(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, np.float64) @ self.lr_coef + self.lr_intercept

    def explain(self, X: np.ndarray, S: np.ndarray, sequence_logit: Callable[[np.ndarray], np.ndarray], *,
                permutations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        w_lr, w_gbt, w_gru = self.meta_coef
        phi_gru, base_gru = permutation_shap(lambda _X, S_: sequence_logit(S_), X, S, self.bg_X, self.bg_S,
                                             permutations=permutations, seed=seed)
        phi = (w_lr * linear_shap(self.lr_coef, X, self.bg_X) + w_gbt * self.trees.shap(X) + w_gru * phi_gru)
        base = (self.meta_intercept + w_lr * float(self.lr_logit(self.bg_X).mean()) + w_gbt * self.trees.base
                + w_gru * base_gru)
        return phi, base
