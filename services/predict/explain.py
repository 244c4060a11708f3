"""Permutation SHAP in numpy: interventional Shapley values of any model f(X, S) against background rows.

A feature j is the column j of the row (tabular members) and of every step of the row's window (the
sequence member), replaced together. For each permutation the row's features are switched in one
by one, starting from each background row; the model-output steps telescope, so contributions sum
exactly to f(row) - mean f(background). Antithetic pairs (a permutation and its reverse) cut variance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


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
