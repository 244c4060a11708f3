"""Honest return ranges: conformal ranges scaled by the volatility forecast, adapted online (ACI).

The served range is centre +- m * sigma, with the model's median return as centre and the horizon's volatility
forecast as sigma: each matured prediction scores s = |r - centre| / sigma, so one calibration serves calm and wild
coins alike (a normalized conformal score), and m is the (1 - alpha_t) quantile of the recent scores. Adaptive
conformal inference (Gibbs & Candes 2021) moves alpha_t after every outcome: alpha_t+1 = alpha_t + gamma * (alpha -
miss_t), so a run of misses widens the range and a run of covers narrows it, and the long-run miss rate approaches
alpha whatever the market does. The state lives in the lake per horizon.

The kind "cqr" (conformalized quantile regression: s = max(q_lo - r, r - q_hi), range [q_lo - m, q_hi + m]) is the
range served before the volatility forecast; cst evaluate replays it as a reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


NORMALIZED, CQR = "normalized", "cqr"


def score(kind: str, a: float, b: float, realized: float) -> float:
    """The conformity score of one outcome: (a, b) = (centre, sigma) for "normalized", (q_lo, q_hi) for "cqr"."""
    if kind == NORMALIZED:
        return abs(realized - a) / b
    return max(a - realized, realized - b)


def interval(kind: str, a: float, b: float, m: float) -> tuple[float, float]:
    if kind == NORMALIZED:
        return a - m * b, a + m * b
    return a - m, b + m


@dataclass
class RangeState:
    alpha: float  # the current working miscoverage level alpha_t
    scores: list[float] = field(default_factory=list)  # recent conformity scores, oldest first
    outcomes: int = 0  # outcomes absorbed since the state began
    misses: int = 0
    last_run: str | None = None  # the run whose outcomes were absorbed last (absorbing is once per run)
    kind: str = NORMALIZED

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

    def served(self, a: float, b: float) -> tuple[float, float] | None:
        """The range for a prediction with (centre, sigma) ("normalized") or (q_lo, q_hi) ("cqr")."""
        m = self.margin()
        return None if m is None else interval(self.kind, a, b, m)

    def update(self, a: float, b: float, realized: float, target_alpha: float, gamma: float,
               window: int, served: tuple[float, float] | None = None) -> bool | None:
        """Absorb one matured outcome of a prediction with (centre, sigma) or (q_lo, q_hi); returns whether the
        range served for it (the one the prediction carried, else the one this state serves now) missed, None
        when there was none (before any score): its score joins the window, alpha_t stays."""
        served = served or self.served(a, b)
        miss = None if served is None else bool(realized < served[0] or realized > served[1])
        if miss is not None:
            self.alpha += gamma * (target_alpha - float(miss))
        self.scores.append(float(score(self.kind, a, b, realized)))
        del self.scores[:-window]
        self.outcomes += 1
        self.misses += int(bool(miss))
        return miss

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "scores": self.scores, "outcomes": self.outcomes, "misses": self.misses,
                "last_run": self.last_run, "kind": self.kind}

    @classmethod
    def from_json(cls, doc: dict) -> RangeState:
        return cls(float(doc["alpha"]), list(doc["scores"]), int(doc["outcomes"]), int(doc["misses"]),
                   doc.get("last_run"), doc.get("kind", CQR))


def state_key(horizon: str) -> str:
    return f"state/conformal/horizon={horizon}.json"


def load(lake, horizon: str, alpha: float) -> RangeState:
    """The horizon's state; a state of the earlier kind (cqr scores, in return units) cannot serve normalized
    ranges: the range starts afresh from the next outcomes."""
    from shared.errors import LakeKeyNotFound

    try:
        state = RangeState.from_json(lake.get_json(state_key(horizon)))
    except LakeKeyNotFound:
        return RangeState(alpha)
    return state if state.kind == NORMALIZED else RangeState(alpha, last_run=state.last_run)


def replay(ts: np.ndarray, a: np.ndarray, b: np.ndarray, realized: np.ndarray, horizon_ms: int, *,
           alpha: float, gamma: float, window: int, kind: str = NORMALIZED) -> np.ndarray:
    """The ranges the outcome step would have served, decision time by decision time: before each decision time
    every outcome matured by then is absorbed (in decision order, as the outcome step does), then the ranges of
    that time are served. (a, b) per row: (centre, sigma) or (q_lo, q_hi) by kind; a row whose a or b is not finite
    is served no range and absorbs nothing. Returns (n, 2); NaN where no outcome had matured yet (the live path
    serves none either)."""
    order = np.lexsort((np.arange(ts.size), ts))
    state = RangeState(alpha, kind=kind)
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(realized)
    out = np.full((ts.size, 2), np.nan)
    pending = 0  # position in `order` of the oldest served prediction not yet absorbed
    times, starts = np.unique(ts[order], return_index=True)
    for t, start, stop in zip(times, starts, np.append(starts[1:], ts.size)):
        while pending < start and ts[order[pending]] + horizon_ms <= t:
            i = order[pending]
            if ok[i]:
                served = None if np.isnan(out[i, 0]) else (float(out[i, 0]), float(out[i, 1]))
                state.update(float(a[i]), float(b[i]), float(realized[i]), alpha, gamma, window, served)
            pending += 1
        m = state.margin()
        if m is not None:
            rows = order[start:stop]
            rows = rows[np.isfinite(a[rows]) & np.isfinite(b[rows])]
            out[rows, 0], out[rows, 1] = interval(kind, a[rows], b[rows], m)
    return out
