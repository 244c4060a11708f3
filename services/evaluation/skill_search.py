"""The search for real skill: candidate targets and features scored walk-forward with retraining, with intervals.

Each candidate is scored the way `cst evaluate` scores the stack, at a fraction of its cost: a plain learner
retrained every `--retrain-every` on the rows whose labels end before each window (plus an embargo of one horizon),
predicting that window; Brier skill against the training up-rate (climatology) with a 90% block-bootstrap interval
over non-overlapping horizon windows. Two periods are scored separately: a development period, where candidates
may be compared and chosen, and the hold-out year after it, read once. A candidate survives only if its interval
lies above zero in both.

`python -m services.evaluation.skill_search --source ../shared/data --out OUT` writes OUT/skill_search.json and
OUT/skill_search.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.evaluation.reference import plain_gbt
from services.features.frame import FeatureFrame
from services.ingest.steps import import_files
from services.training.labels import direction_labels
from services.training.train import History, load_history
from shared.contracts import iso_to_ms
from shared.metrics import block_bootstrap, brier, horizon_windows
from shared.pipeline.context import StepContext
from shared.runs import new_ref
from shared.settings import Settings, timeframe_ms
from shared.storage import LocalLake


@dataclass
class Candidate:
    name: str
    what: str
    features: Callable[[FeatureFrame], np.ndarray]
    target: Callable[[np.ndarray, FeatureFrame], np.ndarray]  # forward return per row -> label (NaN = none)
    learner: str  # "gbt" or "logistic"


def _cols(frame: FeatureFrame, names: list[str]) -> np.ndarray:
    return frame.X[:, [frame.names.index(n) for n in names]]


def _sign(dead_zone: float) -> Callable[[np.ndarray, FeatureFrame], np.ndarray]:
    """The production label: up / down outside the dead zone."""
    return lambda fwd, _frame: direction_labels(fwd, dead_zone)


def _against_market(fwd: np.ndarray, frame: FeatureFrame) -> np.ndarray:
    """1 when the coin's forward return beats the median coin's over the same window (a cross-sectional target)."""
    y = np.full(fwd.shape, np.nan)
    times, which = np.unique(frame.ts, return_inverse=True)
    for k in range(times.size):
        rows = np.flatnonzero((which == k) & np.isfinite(fwd))
        if rows.size >= 3:
            med = np.median(fwd[rows])
            y[rows] = np.where(fwd[rows] > med, 1.0, np.where(fwd[rows] < med, 0.0, np.nan))
    return y


def _vol_scaled(frame: FeatureFrame) -> np.ndarray:
    """Returns over 1..30 days in units of the coin's 30-day volatility, with the rest of the features."""
    vol = np.maximum(_cols(frame, ["rvol_30"])[:, 0], 1e-6)
    scaled = _cols(frame, ["ret_1", "ret_3", "ret_7", "ret_14", "ret_30"]) / vol[:, None]
    return np.column_stack([frame.X, scaled])


def candidates(settings: Settings) -> list[Candidate]:
    dz = settings.training.dead_zone
    sign = _sign(dz)
    momentum = ["ret_7", "ret_14", "ret_30"]
    return [
        Candidate("all features, gbt", "the production features and label, one LightGBM (the evaluate reference)",
                  lambda f: f.X, sign, "gbt"),
        Candidate("all features, logistic", "the production features and label, L2 logistic regression",
                  lambda f: f.X, sign, "logistic"),
        Candidate("time-series momentum", "sign of the 1-4 week returns only (ret_7, ret_14, ret_30), logistic",
                  lambda f: np.sign(_cols(f, momentum)), sign, "logistic"),
        Candidate("volatility-scaled returns", "returns in units of 30-day volatility added to the features, gbt",
                  _vol_scaled, sign, "gbt"),
        Candidate("against the market, gbt", "label: beats the median coin over the horizon (cross-sectional)",
                  lambda f: f.X, _against_market, "gbt"),
        Candidate("against the market, cross-sectional features", "cross-sectional label from the coin's ranks and "
                  "z-scores against the other coins only, logistic",
                  lambda f: _cols(f, ["mom_rank", "mom_z", "vol_rank", "vol_z", "volume_rank", "volume_xz"]),
                  _against_market, "logistic"),
    ]


def _fit_predict(learner: str, X: np.ndarray, y: np.ndarray, X_new: np.ndarray, seed: int) -> np.ndarray:
    if learner == "gbt":
        model = plain_gbt(seed, threads=2)
    else:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    model.fit(X, y.astype(int))
    return model.predict_proba(X_new)[:, 1]


def score(c: Candidate, market: History, settings: Settings, horizon: str, start: str, end: str,
          every_ms: int) -> dict:
    spec = settings.training.horizons[horizon]
    frame = market.frames[spec.timeframe]
    r = market.labels(settings, horizon)
    X = c.features(frame)
    y = c.target(r.fwd, frame)
    ok = np.isfinite(y) & np.isfinite(X).all(axis=1) & frame.members()
    h = spec.length_ms
    a, b = iso_to_ms(start), iso_to_ms(end)
    ps, ys, bases, ts = [], [], [], []
    for w0 in range(a, b, every_ms):
        w1 = min(w0 + every_ms, b)
        train = ok & (frame.ts + 2 * h <= w0)  # label ended, plus an embargo of one horizon
        test = ok & (frame.ts >= w0) & (frame.ts < w1) & (frame.ts + h <= b)
        if not test.any() or train.sum() < 500:
            continue
        ps.append(_fit_predict(c.learner, X[train], y[train], X[test], settings.training.seed))
        ys.append(y[test])
        bases.append(np.full(int(test.sum()), float(y[train].mean())))
        ts.append(frame.ts[test])
    if not ps:
        return {"n": 0}
    p, yy, base, t = (np.concatenate(v) for v in (ps, ys, bases, ts))
    boot = block_bootstrap(p, base, yy, horizon_windows(t, h), seed=settings.training.seed)
    return {"n": int(p.size), "windows": boot["windows"], "brier_skill": 1 - brier(p, yy) / brier(base, yy),
            "brier_skill_interval": boot["brier_skill"]}


PERIODS = {"development": ("2021-07-01", "2023-07-01"), "holdout": ("2023-07-01", "2024-07-01")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--horizons", default="24h,7d,30d")
    ap.add_argument("--retrain-every", default="90d")
    args = ap.parse_args(argv)
    settings = Settings()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lake = LocalLake(out / "lake")
    ref = new_ref(settings, str(args.source))
    import_files(StepContext(settings, lake), ref)
    now = iso_to_ms(ref.as_of)
    market = load_history(settings, lake, ref.run_id, {"1d"}, now)
    every = timeframe_ms(args.retrain_every)
    results = []
    for h in args.horizons.split(","):
        for c in candidates(settings):
            row = {"horizon": h, "candidate": c.name, "what": c.what}
            for period, (a, b) in PERIODS.items():
                row[period] = score(c, market, settings, h, a, b, every)
            row["survives"] = all((row[p].get("brier_skill_interval") or [None])[0] is not None
                                  and row[p]["brier_skill_interval"][0] > 0 for p in PERIODS)
            results.append(row)
            print(json.dumps({k: row[k] for k in ("horizon", "candidate", "survives")} |
                             {p: _fmt(row[p]) for p in PERIODS}), flush=True)
    (out / "skill_search.json").write_text(json.dumps(results, indent=2))
    lines = ["| horizon | candidate | development skill [90%] | hold-out skill [90%] | survives |", "|---|---|---|---|---|"]
    lines += [f"| {r['horizon']} | {r['candidate']} | {_fmt(r['development'])} | {_fmt(r['holdout'])} | "
              f"{'yes' if r['survives'] else 'no'} |" for r in results]
    (out / "skill_search.md").write_text("\n".join(lines) + "\n")
    return 0


def _fmt(m: dict) -> str:
    if not m.get("n"):
        return "no rows"
    lo, hi = m["brier_skill_interval"]
    return f"{m['brier_skill']:+.4f} [{lo:+.4f}, {hi:+.4f}] ({m['windows']} windows)"


if __name__ == "__main__":
    raise SystemExit(main())
