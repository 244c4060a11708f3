"""Drift: feature PSI against the training distribution, calibration (ECE) and decay on recent outcomes."""

from __future__ import annotations

import numpy as np

from shared.metrics import ece
from shared.records import DriftVerdict, Outcome
from shared.settings import RunSettings


def psi(reference: dict, X: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """Population stability index per feature: sum (cur - ref) * ln(cur / ref) over the training deciles."""
    edges = reference["edges"]
    ref = np.asarray(reference["proportions"])
    out = np.zeros(len(edges))
    for j, e in enumerate(edges):
        counts = np.bincount(np.searchsorted(np.asarray(e), X[:, j], side="right"), minlength=ref.shape[1])
        cur = np.maximum(counts / max(1, counts.sum()), floor)
        r = np.maximum(ref[j], floor)
        out[j] = float(np.sum((cur - r) * np.log(cur / r)))
    return out


def recent_outcomes(outcomes: list[Outcome], count: int, min_times: int) -> list[Outcome]:
    """The last `count` outcomes (in decision order), widened to whole decision times and to at least `min_times`
    of them: at hundreds of coins one decision time's outcomes are one market move, not hundreds of independent
    draws (496 outcomes of one hour judged a fresh model's ECE at 0.34 and retrained it an hour after training)."""
    if not outcomes:
        return []
    times = sorted({o.decision_ts for o in outcomes})
    first = min(outcomes[-min(count, len(outcomes))].decision_ts, times[-min(min_times, len(times))])
    return [o for o in outcomes if o.decision_ts >= first]


def judge(names: list[str], reference: dict, X_recent: np.ndarray, outcomes: list[Outcome], cv_brier: float,
          cfg: RunSettings, *, age_ms: int | None = None, max_age_ms: int | None = None) -> DriftVerdict:
    """The drift report of one horizon; `retrain` says whether any drift crossed its threshold or the model's
    data is older than the production cadence (`age_ms` since its training data ended)."""
    report = DriftVerdict(rows_compared=int(X_recent.shape[0]), outcomes=len(outcomes))
    reasons = []
    if age_ms is not None and max_age_ms is not None:
        report.model_age_days = round(age_ms / 86_400_000, 2)
        if age_ms >= max_age_ms:
            reasons.append(f"cadence: training data ended {age_ms / 86_400_000:.1f} days ago "
                           f">= {max_age_ms / 86_400_000:g}")
    if X_recent.shape[0] < cfg.psi_min_rows:
        report.psi_note = "too few decision times after the training window: feature drift not judged yet"
    else:
        values = psi(reference, X_recent)
        drifting = [n for n, v in zip(names, values) if v > cfg.psi_threshold]
        report.psi_max = float(values.max())
        report.psi_drifting = drifting
        if len(drifting) > cfg.psi_feature_share * len(names):
            reasons.append(f"feature drift: {len(drifting)}/{len(names)} features PSI > {cfg.psi_threshold}")
    recent = recent_outcomes(outcomes, cfg.recent_outcomes, cfg.min_outcome_times)
    times = len({o.decision_ts for o in recent})
    if len(recent) >= cfg.min_outcomes and times < cfg.min_outcome_times:
        report.outcome_note = (f"{len(recent)} outcomes of {times} decision times: calibration and decay are judged "
                               f"from {cfg.min_outcome_times} decision times on")
    elif len(recent) >= cfg.min_outcomes:
        p = np.array([o.p_up for o in recent])
        y = np.array([1.0 if o.realized_return > 0 else 0.0 for o in recent])
        report.ece_recent = ece(p, y)
        report.brier_recent = float(np.mean((p - y) ** 2))
        if report.ece_recent > cfg.ece_threshold:
            reasons.append(f"calibration drift: ECE {report.ece_recent:.3f} > {cfg.ece_threshold}")
        if report.brier_recent > cv_brier + cfg.brier_decay:
            reasons.append(f"performance decay: Brier {report.brier_recent:.3f} > CV {cv_brier:.3f} + {cfg.brier_decay}")
    report.retrain = bool(reasons)
    report.reasons = reasons
    return report
