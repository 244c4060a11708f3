"""Honest return ranges: conformal ranges scaled by the volatility forecast, by volatility bin, adapted online (ACI).

The served range is centre +- m * sigma ** beta, with the horizon's volatility forecast as sigma: each matured
prediction scores s = |r - centre| / sigma ** beta, so one calibration serves calm and wild coins alike (a
normalized conformal score). beta is how far the range follows the forecast: 1 (in proportion) until the window
holds CENTRE_MIN_WINDOWS independent windows, then the one of EXPONENTS whose range had the lowest interval score
over the window's outcomes; a forecast that spreads coins or months further apart than their outcomes turn out (its
log variance explains the outcomes' with a slope below one) is followed less than in proportion.
The centre is the model's median return where it has demonstrated that it earns it: where, over the window's
outcomes, it sat closer to them (in sigmas) than no move at all, by the project's skill standard (the gain per
independent horizon window above zero by CENTRE_Z standard errors over at least CENTRE_MIN_WINDOWS windows, as
training's skill_z and skill_min_windows); otherwise the range is centred on no move, as every reference range is.
A median that only adds its own noise (a direction barely forecast) would widen every range for nothing, and one
that won a few windows by chance would move every range on luck. A forecast
that spreads the coins too far apart (calm coins too calm,
wild ones too wild) would still cover 80% overall and not within each kind of coin, so the scores are kept apart by
volatility bin (Mondrian conformal: terciles of the recent forecasts) and m is the (1 - alpha_t) quantile of the
recent scores of the prediction's own bin.

Adaptive conformal inference (Gibbs & Candes 2021) moves each bin's alpha_t with its misses: alpha_t+1 = alpha_t +
gamma * (alpha - miss share). One step per decision time, not per outcome: the coins of one decision time miss
together when the market jumps, and a step per coin would answer one market move with as many steps as there are
coins (hundreds in a wide universe). Outcomes of overlapping horizons (a 30-day outcome every day) repeat the same
news for as many decision times as the horizon has bars, so the step is gamma / bars. For the same reason the
window is counted in independent outcomes: the recent scores are those of the last `window` horizons (window x bars
decision times); a 30-day range learns its quantile from every thirty-day outcome of its window, not from two. A decision time keeps
at most MAX_SCORES_PER_TIME scores, evenly spread over its coins' forecasts (a wide universe's coins of one decision
time mostly repeat one market move), so the state stays small. The state lives in the lake per horizon.

A range with no outcomes yet starts from the model's held-out scores (`RangeSeed`: |r| / sigma on the volatility
model's calibration rows, which no member saw, and before them on its walk-forward folds' test rows, which no fold
model saw, as CV+ does: a 30-day window reaches back past the calibration block) and adapts from there; the seed's
scores count as centred on no move, so the model's median earns the centre from live outcomes only. Without a seed
there is no range until the first outcome.

The kind "cqr" (conformalized quantile regression: s = max(q_lo - r, r - q_hi), range [q_lo - m, q_hi + m], one
bin) is the range served before the volatility forecast; cst evaluate replays it as a reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.records import RangeSeed


NORMALIZED, CQR = "normalized", "cqr"
FORM = 3  # the state's layout: scores (model's centre and no move) with their sigma and time, one alpha per bin
MIN_BIN_SCORES = 20  # a bin with fewer recent scores is served the quantile of all of them
MAX_SCORES_PER_TIME = 32  # scores kept per decision time (evenly over its forecasts' order)
CENTRE_Z, CENTRE_MIN_WINDOWS = 1.645, 10  # the median's demonstrated gain: training's skill_z, skill_min_windows
EXPONENTS = np.round(np.linspace(1.0, 0.0, 11), 2)  # how far the range follows the forecast, sigma ** beta


def scores_of(kind: str, a: np.ndarray, b: np.ndarray, realized: np.ndarray) -> np.ndarray:
    """Conformity scores: (a, b) = (centre, sigma) for "normalized", (q_lo, q_hi) for "cqr"."""
    if kind == NORMALIZED:
        return np.abs(realized - a) / b
    return np.maximum(a - realized, realized - b)


def interval(kind: str, a, b, m):
    if kind == NORMALIZED:
        return a - m * b, a + m * b
    return a - m, b + m


def spread_sample(spread: np.ndarray) -> np.ndarray:
    """Indices of at most MAX_SCORES_PER_TIME of one decision time's rows, evenly over the order of `spread`."""
    keep = np.argsort(spread, kind="stable")
    if keep.size > MAX_SCORES_PER_TIME:
        keep = keep[np.unique(np.linspace(0, keep.size - 1, MAX_SCORES_PER_TIME).round().astype(int))]
    return keep


def range_seed(ts: np.ndarray, sigma: np.ndarray, realized: np.ndarray, times: int) -> RangeSeed | None:
    """The held-out scores of the last `times` decision times (at most MAX_SCORES_PER_TIME each); None without any."""
    ok = np.isfinite(sigma) & (sigma > 0) & np.isfinite(realized)
    ts, sigma, realized = ts[ok], sigma[ok], realized[ok]
    out_ts, out_sig, out_score = [], [], []
    for t in np.unique(ts)[-times:]:
        rows = np.flatnonzero(ts == t)
        rows = rows[spread_sample(sigma[rows])]
        out_ts += [int(t)] * rows.size
        out_sig += [float(f"{x:.6g}") for x in sigma[rows]]
        out_score += [float(f"{x:.6g}") for x in np.abs(realized[rows]) / sigma[rows]]
    return RangeSeed(ts=out_ts, sigma=out_sig, score=out_score) if out_ts else None


def _quantile(scores: np.ndarray, alpha: float) -> float:
    """The (1 - alpha) quantile with split conformal's finite-sample correction. alpha <= 0 asks for more than every
    score seen: the largest one is served (the widest evidence there is); alpha >= 1: the smallest one."""
    s = np.sort(scores)
    n = s.size
    k = int(np.clip(np.ceil((1.0 - alpha) * (1.0 + 1.0 / n) * n) - 1, 0, n - 1))
    return float(s[k])


@dataclass
class RangeState:
    alphas: list[float]  # per volatility bin, the current working miscoverage level alpha_t
    scores: list[float] = field(default_factory=list)  # recent conformity scores, oldest first
    sigmas: list[float] = field(default_factory=list)  # the volatility forecast (its bin) of each score
    times: list[int] = field(default_factory=list)  # the decision time of each score
    outcomes: int = 0  # outcomes absorbed since the state began
    misses: int = 0
    last_run: str | None = None  # the run whose outcomes were absorbed last (absorbing is once per run)
    kind: str = NORMALIZED
    zero_scores: list[float] = field(default_factory=list)  # "normalized": the same outcomes' |r| / sigma
    bars: int = 1  # decision times per horizon (outcomes of this many consecutive decision times overlap)
    target: float = 0.2  # the nominal miscoverage alpha the range serves (1 - alpha is its level)

    @classmethod
    def new(cls, alpha: float, kind: str = NORMALIZED, bins: int = 3, last_run: str | None = None) -> RangeState:
        return cls([alpha] * (bins if kind == NORMALIZED else 1), kind=kind, last_run=last_run, target=alpha)

    @classmethod
    def seeded(cls, alpha: float, bins: int, seed: RangeSeed | None, last_run: str | None = None) -> RangeState:
        """A new normalized state holding the held-out scores of `seed` (centred on no move); empty without one."""
        state = cls.new(alpha, bins=bins, last_run=last_run)
        if seed is not None:
            state.scores, state.zero_scores = list(seed.score), list(seed.score)
            state.sigmas, state.times = list(seed.sigma), list(seed.ts)
        return state

    @property
    def bins(self) -> int:
        return len(self.alphas)

    def edges(self) -> np.ndarray:
        """The sigma bounds between bins: quantiles of the recent scores' forecasts (none with one bin)."""
        if self.bins == 1 or not self.sigmas:
            return np.zeros(0)
        return np.quantile(np.asarray(self.sigmas), np.arange(1, self.bins) / self.bins)

    def bin_of(self, b, edges: np.ndarray | None = None):
        edges = self.edges() if edges is None else edges
        return np.searchsorted(edges, b, side="right") if edges.size else np.zeros(np.shape(b), dtype=np.int64)

    def centre_evidence(self) -> dict:
        """The median's gain over no move in the window, |r| / sigma - |r - centre| / sigma, averaged per decision
        time and then per independent horizon window (`bars` consecutive decision times): its mean, standard
        error and number of windows."""
        if len(self.zero_scores) != len(self.scores) or not self.scores:
            return {"windows": 0, "mean": None, "se": None}
        gain = np.asarray(self.zero_scores) - np.asarray(self.scores)
        _, at = np.unique(np.asarray(self.times), return_inverse=True)
        per_time = np.bincount(at, weights=gain) / np.bincount(at)
        block = np.arange(per_time.size) // max(self.bars, 1)
        per_window = np.bincount(block, weights=per_time) / np.bincount(block)
        n = per_window.size
        se = float(per_window.std(ddof=1) / np.sqrt(n)) if n > 1 else None
        return {"windows": int(n), "mean": float(per_window.mean()), "se": se}

    def centred(self) -> bool:
        """Whether the range is centred on the model's median: always for "cqr"; for "normalized" while the
        window's outcomes demonstrate that they sat closer to it than to no move (`centre_evidence`: at least
        CENTRE_MIN_WINDOWS windows, mean gain above zero by CENTRE_Z standard errors)."""
        if self.kind != NORMALIZED:
            return True
        e = self.centre_evidence()
        return bool(e["windows"] >= CENTRE_MIN_WINDOWS and e["se"] is not None
                    and e["mean"] - CENTRE_Z * e["se"] > 0)

    def exponent(self, centred: bool | None = None) -> float:
        """beta, how far the range follows the volatility forecast: the half-width is m * sigma ** beta. 1 (in
        proportion) for "cqr", and until the window holds CENTRE_MIN_WINDOWS independent horizon windows; then the
        beta of EXPONENTS whose range (split conformal on the window, at the nominal level) had the lowest mean
        interval score over the window's outcomes (ties: the larger beta). A forecast that spreads the coins and the
        months further apart than their outcomes turn out (calm ones too calm, wild ones too wild) is followed
        less than in proportion, from the outcomes the range has seen."""
        if self.kind != NORMALIZED or not self.scores or self.centre_evidence()["windows"] < CENTRE_MIN_WINDOWS:
            return 1.0
        centred = self.centred() if centred is None else centred
        sigma = np.asarray(self.sigmas)
        miss = np.asarray(self.scores if centred else self.zero_scores) * sigma  # |r - centre|
        best, best_score = 1.0, np.inf
        for beta in EXPONENTS:
            width = sigma ** beta
            m = _quantile(miss / width, self.target)
            score = float(np.mean(2.0 * m * width + (2.0 / self.target) * np.maximum(miss - m * width, 0.0)))
            if score < best_score - 1e-12 * abs(best_score if np.isfinite(best_score) else 0.0):
                best, best_score = float(beta), score
        return best

    def margins(self, centred: bool | None = None, beta: float | None = None) -> list[float] | None:
        """Per bin, how far both ends move (in units of sigma ** beta for "normalized"); None without any score
        yet. `centred`: whether the range is centred on the model's median; `beta`: the exponent (each decided here
        when not given)."""
        if not self.scores:
            return None
        centred = self.centred() if centred is None else centred
        beta = self.exponent(centred) if beta is None else beta
        scores = np.asarray(self.scores if centred else self.zero_scores)
        if beta != 1.0:
            scores = scores * np.asarray(self.sigmas) ** (1.0 - beta)
        where = self.bin_of(np.asarray(self.sigmas))
        out = []
        for k, alpha in enumerate(self.alphas):
            mine = scores[where == k]
            out.append(_quantile(mine if mine.size >= MIN_BIN_SCORES else scores, alpha))
        return out

    def margin(self, b: float | None = None) -> float | None:
        m = self.margins()
        if m is None:
            return None
        return m[0] if b is None or self.bins == 1 else m[int(self.bin_of(b))]

    def serve(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(n, 2) ranges for predictions with (centre, sigma) or (q_lo, q_hi); NaN before any score."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        centred = self.centred()
        beta = self.exponent(centred)
        m = self.margins(centred, beta)
        out = np.full((a.size, 2), np.nan)
        if m is None or not a.size:
            return out
        mm = np.asarray(m)[self.bin_of(b)] if self.bins > 1 else np.full(a.size, m[0])
        out[:, 0], out[:, 1] = interval(self.kind, a if centred else np.zeros_like(a),
                                        b ** beta if self.kind == NORMALIZED else b, mm)
        return out

    def served(self, a: float, b: float) -> tuple[float, float] | None:
        """The range for one prediction with (centre, sigma) ("normalized") or (q_lo, q_hi) ("cqr")."""
        r = self.serve(np.array([a]), np.array([b]))[0]
        return None if np.isnan(r[0]) else (float(r[0]), float(r[1]))

    def absorb(self, ts: int, a: np.ndarray, b: np.ndarray, realized: np.ndarray, served: np.ndarray | None,
               target_alpha: float, gamma: float, window: int, overlap: int = 1) -> np.ndarray:
        """Absorb the matured outcomes of one decision time. `served` holds the ranges the predictions carried (NaN
        where none was; None: the ranges this state serves now). Returns per outcome 1.0 for a miss, 0.0 for a
        cover, NaN where no range was served (before any score): those scores join the window, no alpha moves."""
        a, b, realized = (np.asarray(x, float) for x in (a, b, realized))
        served = self.serve(a, b) if served is None else np.asarray(served, float).reshape(-1, 2)
        miss = np.where(np.isnan(served[:, 0]), np.nan,
                        ((realized < served[:, 0]) | (realized > served[:, 1])).astype(float))
        where = self.bin_of(b if self.kind == NORMALIZED else b - a,
                            self.edges() if self.sigmas else self._edges_of(b))
        for k in range(self.bins):
            judged = miss[(where == k) & ~np.isnan(miss)]
            if judged.size:
                self.alphas[k] += gamma / max(overlap, 1) * (target_alpha - float(judged.mean()))
        spread = b if self.kind == NORMALIZED else b - a
        keep = spread_sample(spread)
        self.scores += scores_of(self.kind, a[keep], b[keep], realized[keep]).tolist()
        if self.kind == NORMALIZED:
            self.zero_scores += scores_of(self.kind, np.zeros(keep.size), b[keep], realized[keep]).tolist()
        self.sigmas += spread[keep].tolist()
        self.times += [int(ts)] * keep.size
        kept = np.unique(self.times)[-window * max(overlap, 1):]
        if kept.size and self.times[0] < kept[0]:
            first = int(np.searchsorted(np.asarray(self.times), kept[0], side="left"))
            del self.scores[:first], self.sigmas[:first], self.times[:first], self.zero_scores[:first]
        self.outcomes += a.size
        self.misses += int(np.nansum(miss))
        self.bars = max(overlap, 1)
        return miss

    def _edges_of(self, b: np.ndarray) -> np.ndarray:
        return np.quantile(b, np.arange(1, self.bins) / self.bins) if self.bins > 1 and b.size else np.zeros(0)

    def to_json(self) -> dict:
        return {"form": FORM, "kind": self.kind, "alphas": self.alphas, "scores": self.scores, "sigmas": self.sigmas,
                "times": self.times, "outcomes": self.outcomes, "misses": self.misses, "last_run": self.last_run,
                "zero_scores": self.zero_scores, "bars": self.bars, "target": self.target}

    @classmethod
    def from_json(cls, doc: dict, target: float | None = None) -> RangeState:
        """The state of `doc`; `target`: the nominal alpha of a document that does not say it."""
        alphas = [float(x) for x in doc["alphas"]]
        return cls(alphas, [float(x) for x in doc["scores"]],
                   [float(x) for x in doc["sigmas"]], [int(x) for x in doc["times"]], int(doc["outcomes"]),
                   int(doc["misses"]), doc.get("last_run"), doc["kind"], [float(x) for x in doc["zero_scores"]],
                   int(doc.get("bars", 1)), float(doc.get("target", target if target is not None else alphas[0])))


def state_key(horizon: str) -> str:
    return f"state/conformal/horizon={horizon}.json"


def load(lake, horizon: str, alpha: float, bins: int = 3, seed: RangeSeed | None = None) -> RangeState:
    """The horizon's state; with none yet, or one of an earlier layout (cqr scores in return units, or one alpha for
    all coins), which cannot serve these ranges, the range starts afresh from `seed` (the serving model's held-out
    scores) or, without one, from the next outcomes."""
    from shared.errors import LakeKeyNotFound

    try:
        doc = lake.get_json(state_key(horizon))
    except LakeKeyNotFound:
        return RangeState.seeded(alpha, bins, seed)
    if doc.get("form") != FORM or doc.get("kind") != NORMALIZED or len(doc["alphas"]) != bins:
        return RangeState.seeded(alpha, bins, seed, last_run=doc.get("last_run"))
    return RangeState.from_json(doc, alpha)


def replay(ts: np.ndarray, a: np.ndarray, b: np.ndarray, realized: np.ndarray, horizon_ms: int, *,
           alpha: float, gamma: float, window: int, overlap: int = 1, bins: int = 3,
           kind: str = NORMALIZED, seed: RangeSeed | None = None) -> np.ndarray:
    """The ranges the outcome step would have served, decision time by decision time: before each decision time
    every outcome matured by then is absorbed (one decision time at a time, in order, as the outcome step does), then
    the ranges of that time are served. (a, b) per row: (centre, sigma) or (q_lo, q_hi) by kind; a row whose a or b
    is not finite is served no range and absorbs nothing. Returns (n, 2); NaN where no outcome had matured yet (the
    live path serves none either)."""
    order = np.lexsort((np.arange(ts.size), ts))
    state = RangeState.seeded(alpha, bins, seed) if kind == NORMALIZED else RangeState.new(alpha, kind=kind, bins=bins)
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(realized)
    out = np.full((ts.size, 2), np.nan)
    times, starts = np.unique(ts[order], return_index=True)
    stops = np.append(starts[1:], ts.size)
    pending = 0  # index in `times` of the oldest decision time not yet absorbed
    for j, t in enumerate(times):
        while pending < j and times[pending] + horizon_ms <= t:
            rows = order[starts[pending]:stops[pending]]
            rows = rows[ok[rows]]
            if rows.size:
                state.absorb(int(times[pending]), a[rows], b[rows], realized[rows], out[rows], alpha, gamma,
                             window, overlap)
            pending += 1
        rows = order[starts[j]:stops[j]]
        rows = rows[np.isfinite(a[rows]) & np.isfinite(b[rows])]
        out[rows] = state.serve(a[rows], b[rows])
    return out
