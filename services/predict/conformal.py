"""Honest return ranges: the model's q10-q90 conformalized by recent realized outcomes, adapted online (ACI).

Conformalized quantile regression scores each matured prediction by how far its outcome fell outside the model's
range, s = max(q_lo - r, r - q_hi). The served range widens (or narrows) both ends by the (1 - alpha_t) quantile of
the recent scores. Adaptive conformal inference (Gibbs & Candes 2021) moves alpha_t after every outcome:
alpha_t+1 = alpha_t + gamma * (alpha - miss_t), so a run of misses widens the range and a run of covers narrows it,
and the long-run miss rate approaches alpha whatever the market does. The state lives in the lake per horizon.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RangeState:
    alpha: float  # the current working miscoverage level alpha_t
    scores: list[float] = field(default_factory=list)  # recent conformity scores, oldest first
    outcomes: int = 0  # outcomes absorbed since the state began
    misses: int = 0
    last_run: str | None = None  # the run whose outcomes were absorbed last (absorbing is once per run)

    def margin(self) -> float | None:
        """How far both ends move: the (1 - alpha_t) quantile of the recent scores; None without any score yet.

        alpha_t <= 0 asks for more than every score seen: the largest one is served (the widest evidence there is);
        alpha_t >= 1 asks for less than any: the smallest one is served."""
        if not self.scores:
            return None
        s = np.sort(np.asarray(self.scores))
        n = s.size
        level = (1.0 - self.alpha) * (1.0 + 1.0 / n)  # the finite-sample correction of split conformal
        k = int(np.clip(np.ceil(level * n) - 1, 0, n - 1))
        return float(s[k])

    def served(self, q_lo: float, q_hi: float) -> tuple[float, float] | None:
        m = self.margin()
        return None if m is None else (q_lo - m, q_hi + m)

    def update(self, q_lo: float, q_hi: float, realized: float, target_alpha: float, gamma: float,
               window: int, served: tuple[float, float] | None = None) -> bool:
        """Absorb one matured outcome; returns whether the range served for it (the one the prediction carried,
        else the one this state serves now, else the model's own) missed."""
        served = served or self.served(q_lo, q_hi)
        lo, hi = served if served is not None else (q_lo, q_hi)
        miss = bool(realized < lo or realized > hi)
        self.alpha += gamma * (target_alpha - float(miss))
        self.scores.append(float(max(q_lo - realized, realized - q_hi)))
        del self.scores[:-window]
        self.outcomes += 1
        self.misses += int(miss)
        return miss

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "scores": self.scores, "outcomes": self.outcomes, "misses": self.misses,
                "last_run": self.last_run}

    @classmethod
    def from_json(cls, doc: dict) -> RangeState:
        return cls(float(doc["alpha"]), list(doc["scores"]), int(doc["outcomes"]), int(doc["misses"]),
                   doc.get("last_run"))


def state_key(horizon: str) -> str:
    return f"state/conformal/horizon={horizon}.json"


def load(lake, horizon: str, alpha: float) -> RangeState:
    from shared.errors import LakeKeyNotFound

    try:
        return RangeState.from_json(lake.get_json(state_key(horizon)))
    except LakeKeyNotFound:
        return RangeState(alpha)


def replay(ts: np.ndarray, q_lo: np.ndarray, q_hi: np.ndarray, realized: np.ndarray, horizon_ms: int, *,
           alpha: float, gamma: float, window: int) -> np.ndarray:
    """The ranges the outcome step would have served, decision time by decision time: before each decision time
    every outcome matured by then is absorbed (in decision order, as the outcome step does), then the ranges of
    that time are served. Returns (n, 2); NaN where no outcome had matured yet (the live path serves none either)."""
    order = np.lexsort((np.arange(ts.size), ts))
    state = RangeState(alpha)
    out = np.full((ts.size, 2), np.nan)
    pending = 0  # position in `order` of the oldest served prediction not yet absorbed
    times, starts = np.unique(ts[order], return_index=True)
    for t, a, b in zip(times, starts, np.append(starts[1:], ts.size)):
        while pending < a and ts[order[pending]] + horizon_ms <= t:
            i = order[pending]
            served = None if np.isnan(out[i, 0]) else (float(out[i, 0]), float(out[i, 1]))
            state.update(float(q_lo[i]), float(q_hi[i]), float(realized[i]), alpha, gamma, window, served)
            pending += 1
        m = state.margin()
        if m is not None:
            rows = order[a:b]
            out[rows, 0], out[rows, 1] = q_lo[rows] - m, q_hi[rows] + m
    return out
