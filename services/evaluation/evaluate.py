"""`cst evaluate`: train before a split, predict every later timestep with the served (ONNX) models, score.

No label window of a training row crosses the split (training sees only data published before it), and
the test rows are the decision times at or after the split whose forward return is observed in the
source. Models are not retrained during the test period; the report says so.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.evaluation import report
from services.evaluation.backtest import (
    buy_and_hold,
    equal_weight,
    performance,
    run_backtest,
)
from services.features.sequences import sequences
from services.predict.model import HorizonModel
from services.predict.signals import consensus
from services.risk.history import price_history_from_panel
from services.risk.orders import orders_from_signals
from services.runner import make_ref, run_step
from services.training.ensemble import Trained, label_rows
from services.training.train import History, load_history, train
from shared.contracts import iso_to_ms, ms_to_iso, utcnow
from shared.errors import CstError
from shared.metrics import brier, ece, log_loss, wilson_low
from shared.pipeline import StepContext
from shared.provenance import directory_digest, provenance
from shared.settings import SECRET_FIELDS, Settings
from shared.storage import LocalLake

log = logging.getLogger(__name__)


@dataclass
class HorizonTest:
    """One horizon's out-of-sample predictions, from the served models, with what actually happened."""

    horizon: str
    split_ms: int
    version: str
    base_rate_train: float
    ts: np.ndarray  # decision times (candle close)
    coin: np.ndarray
    p_up: np.ndarray
    low: np.ndarray
    high: np.ndarray
    confidence: np.ndarray
    direction: np.ndarray
    quantiles: np.ndarray  # (n, 3) forward log-return q10, q50, q90
    score: np.ndarray  # the meta-learner's logit that the calibrator reads
    fwd: np.ndarray  # realized forward log return
    y: np.ndarray  # label (NaN in the dead zone)
    excluded: dict[str, int]
    horizon_ms: int = 0
    calibration: dict = field(default_factory=dict)  # the model's calibration metadata
    search: dict = field(default_factory=dict)  # the model's per-member search summary (trials, time net)

    def labeled(self) -> np.ndarray:
        return np.isfinite(self.y)


def train_before(settings: Settings, lake: LocalLake, run_id: str, splits: dict[str, str], budget: str,
                 tick: Callable[[str], None]) -> dict[str, tuple[str, float]]:
    """Train each horizon on the run's stored series before its split; returns {horizon: (version, base rate)}."""
    by_split: dict[str, list[str]] = defaultdict(list)
    for h, until in splits.items():
        by_split[until].append(h)
    base: dict[str, float] = {}

    def keep(t: Trained) -> None:
        base[t.horizon] = float(np.mean(t.ds.y))

    out = {}
    for until, hs in by_split.items():
        results = train(settings, lake, run_id, until=until, horizons=hs, budget=budget, tick=tick, on_trained=keep)
        for h, meta in results.items():
            if "error" in meta:
                log.error("%s not evaluated: %s", h, meta["message"])
                continue
            out[h] = (meta["version"], base[h])
    return out


def predict_test(settings: Settings, market: History, lake: LocalLake, horizon: str, version: str, split_ms: int,
                 base_rate: float) -> HorizonTest:
    spec = settings.training.horizons[horizon]
    frame, panel = market.frames[spec.timeframe], market.panels[spec.timeframe]
    r = label_rows(frame, panel, spec, settings.training.dead_zone)
    after = frame.ts >= split_ms
    rows = np.flatnonzero(after & r.full & np.isfinite(r.fwd))
    excluded = r.excluded(after)
    model = HorizonModel.load(lake, horizon, version)
    if frame.names != model.names:
        raise CstError("feature_mismatch", f"{horizon}: the model's features differ from the source's")
    pred = model.predict(frame.X[rows], sequences(frame.X, r.idx[rows]))
    t = HorizonTest(horizon, split_ms, version, base_rate, frame.ts[rows], frame.coin[rows], pred.p_up, pred.low,
                    pred.high, pred.confidence, pred.direction, pred.quantiles, pred.meta_logit, r.fwd[rows], r.y[rows],
                    excluded, spec.length_ms)
    t.calibration = model.metadata.get("calibration", {})
    t.search = model.metadata.get("tuning", {})
    return t


def _rate(hits: np.ndarray) -> dict:
    n = int(hits.size)
    k = int(hits.sum())
    return {"n": n, "hit_rate": k / n if n else None, "wilson_low": wilson_low(k, n)}


def horizon_metrics(t: HorizonTest, threshold: float) -> dict:
    m = t.labeled()
    p, y = t.p_up[m], t.y[m]
    n = int(m.sum())
    ref = brier(np.full(n, t.base_rate_train), y) if n else None
    b = brier(p, y) if n else None
    hit = np.where(t.direction[m] == 1, y == 1, y == 0)
    conf = t.confidence[m] >= threshold
    return {
        "n": n, "coins": len(set(t.coin[m].tolist())),
        "first": ms_to_iso(int(t.ts[m].min())) if n else None, "last": ms_to_iso(int(t.ts[m].max())) if n else None,
        "base_rate": float(y.mean()) if n else None, "base_rate_train": t.base_rate_train,
        "brier": b, "brier_reference": ref, "brier_skill": 1 - b / ref if n and ref > 0 else None,
        "log_loss": log_loss(p, y) if n else None, "ece": ece(p, y, 10) if n else None,
        # References for reading the ECE: what predicting the training base rate everywhere scores, and how
        # many independent outcomes (non-overlapping horizon windows, coins moving together) the test holds.
        "ece_constant_base_rate": ece(np.full(n, t.base_rate_train), y, 10) if n else None,
        "independent_outcomes": round((float(t.ts[m].max() - t.ts[m].min()) + t.horizon_ms) / t.horizon_ms, 1)
        if n and t.horizon_ms else None,
        "hit_rate_all": float(hit.mean()) if n else None,
        "scores": score_shift(t),
        "excluded": int(sum(t.excluded.values())), "excluded_by_reason": t.excluded,
        "confident": {"threshold": threshold, **_rate(hit[conf])},
        "model_version": t.version,
        "search": t.search,
    }


def score_shift(t: HorizonTest) -> dict | None:
    """The served meta scores against the out-of-fold scores the calibrator was fitted on.

    The served stack uses members refitted on all the training data, the calibrator saw fold models' scores: a
    shift between the two is a train/serve skew that calibration cannot see from inside training.
    """
    cal = t.calibration
    if "score_quantiles" not in cal or not t.score.size:
        return None
    lo, hi = cal["score_range"]
    return {"calibration_q05_q50_q95": [round(v, 4) for v in cal["score_quantiles"]],
            "served_q05_q50_q95": [round(float(v), 4) for v in np.quantile(t.score, [0.05, 0.5, 0.95])],
            "served_outside_calibration_range": float(np.mean((t.score < lo) | (t.score > hi)))}


def consensus_signals(tests: dict[str, HorizonTest], threshold: float, min_horizons: int) -> list[dict]:
    """The main job's consensus rule replayed at every test decision time; each signal carries the realized
    forward return of every agreeing horizon."""
    by_ts: dict[int, list[dict]] = defaultdict(list)
    for h, t in tests.items():
        for i in range(t.ts.size):
            q10, q50, q90 = t.quantiles[i].tolist()
            by_ts[int(t.ts[i])].append({
                "coin": str(t.coin[i]), "horizon": h, "direction": int(t.direction[i]),
                "confidence": float(t.confidence[i]), "p_up": float(t.p_up[i]),
                "actionable": bool(t.confidence[i] >= threshold), "fwd": float(t.fwd[i]),
                "q10": q10, "q50": q50, "q90": q90, "decision_ts": int(t.ts[i]),
            })
    signals = []
    for ts in sorted(by_ts):
        preds = by_ts[ts]
        for s in consensus(preds, min_horizons):
            agreeing = [p for p in preds if p["coin"] == s["coin"] and p["horizon"] in s["horizons"]]
            s.update(ts=ts, fwd={p["horizon"]: p["fwd"] for p in agreeing})
            signals.append(s)
    return signals


def consensus_metrics(settings: Settings, signals: list[dict]) -> dict:
    """A signal is a hit when its direction came true over the shortest agreeing horizon (its first exit)."""
    hits = []
    for s in signals:
        shortest = min(s["horizons"], key=lambda h: settings.training.horizons[h].length_ms)
        sign = 1 if s["direction"] == "up" else -1
        hits.append(sign * s["fwd"][shortest] > 0)
    return {"min_horizons": settings.consensus_min_horizons, "threshold": settings.confidence_threshold,
            "rule": "hit = direction came true over the shortest agreeing horizon", **_rate(np.asarray(hits, bool))}


def splits_for(settings: Settings, horizons: list[str], train_until: str, train_until_1h: str | None) -> dict[str, str]:
    return {h: (train_until_1h or train_until) if settings.training.horizons[h].timeframe == "1h" else train_until
            for h in horizons}


def evaluate(settings: Settings, source: str | Path, out: Path, *, train_until: str,
             train_until_1h: str | None = None, horizons: list[str] | None = None, budget: str = "quick",
             tick: Callable[[str], None] | None = None, backtest_threshold: float | None = None) -> dict:
    """Writes OUT/metrics.json, OUT/backtest.json, OUT/report.html and its PNGs; the models stay in OUT/lake."""
    tick = tick or (lambda _m: None)
    horizons = horizons or list(settings.horizons)
    unknown = [h for h in horizons if h not in settings.training.horizons]
    if unknown:
        raise CstError("unknown_horizon", f"unknown horizons {unknown}; known: {list(settings.training.horizons)}")
    splits = splits_for(settings, horizons, train_until, train_until_1h)
    out.mkdir(parents=True, exist_ok=True)
    # The whole experiment in one file: `cst evaluate --from OUT/experiment.json` runs it again.
    experiment = {"command": "evaluate",
                  "args": {"source": str(Path(source).resolve()), "train_until": train_until,
                           "train_until_1h": train_until_1h, "horizons": horizons, "budget": budget,
                           "backtest_threshold": backtest_threshold},
                  **provenance(settings), "data_fingerprint": directory_digest(source)}
    (out / "experiment.json").write_text(json.dumps(experiment, indent=2))
    lake = LocalLake(out / "lake")
    # The files reach training as they reach every run: imported into the lake, then read from there.
    now = int(utcnow().timestamp() * 1000)
    ref = make_ref(settings, str(source), now)
    run_step(StepContext(settings, lake), "ingest", ref)
    trained = train_before(settings, lake, ref.run_id, splits, budget, tick)
    tick("predicting the test period")
    # The whole recording: test rows need the candles after the split.
    market = load_history(settings, lake, ref.run_id, {settings.training.horizons[h].timeframe for h in trained}, now)
    tests = {h: predict_test(settings, market, lake, h, v, iso_to_ms(splits[h]), base)
             for h, (v, base) in trained.items()}
    thr = settings.confidence_threshold
    signals = consensus_signals(tests, thr, settings.consensus_min_horizons)
    metrics = {
        "train_until": train_until, "train_until_1h": splits.get("1h"), "budget": budget,
        "retraining": "none: each horizon's model is trained once before its split and used for the whole test",
        "horizons": {h: horizon_metrics(t, thr) for h, t in tests.items()},
        "not_evaluated": sorted(set(horizons) - set(tests)),
        "consensus": consensus_metrics(settings, signals),
    }
    tick("backtest")
    bt = run_backtests(settings, tests, market, backtest_threshold or thr, out)
    strat = bt.get("table", {}).get("strategy (guards)", {})
    metrics["backtest"] = {
        "threshold": bt.get("threshold"), "trades": strat.get("trades"),
        "total_return": strat.get("total_return"), "sharpe": strat.get("sharpe"),
        "max_drawdown": strat.get("max_drawdown"),
        "benchmark_total_return": bt.get("table", {}).get("buy and hold BTC", {}).get("total_return"),
        "equal_weight_total_return": bt.get("table", {}).get("equal weight", {}).get("total_return"),
        "details": "backtest.json", **({"skipped": bt["skipped"]} if "skipped" in bt else {}),
    }
    stopped = {h: sorted(m for m, v in t.search.items() if v.get("stopped_by_time")) for h, t in tests.items()}
    metrics["experiment"] = {**{k: v for k, v in experiment.items() if k not in ("settings", "args")},
                             "search_stopped_by_time": {h: ms for h, ms in stopped.items() if ms}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    write_report(out, metrics, tests, bt, thr)
    return {"metrics": metrics, "tests": tests, "signals": signals, "market": market, "backtest": bt}


def write_report(out: Path, metrics: dict, tests: dict[str, HorizonTest], bt: dict, threshold: float) -> Path:
    lab = {h: t.labeled() for h, t in tests.items()}
    images = [report.reliability_png(out / "reliability.png", {h: (t.p_up[lab[h]], t.y[lab[h]]) for h, t in tests.items()}),
              report.confidence_hist_png(out / "confidence.png", {h: t.confidence for h, t in tests.items()}, threshold)]
    images += [out / name for name in bt.get("images", [])]
    per_h = [{"horizon": h, **{k: m[k] for k in ("n", "coins", "first", "last", "base_rate", "base_rate_train", "brier",
                                                 "brier_skill", "log_loss", "ece", "ece_constant_base_rate",
                                                 "independent_outcomes", "hit_rate_all")},
              "confident n": m["confident"]["n"], "confident hit": m["confident"]["hit_rate"],
              "wilson low": m["confident"]["wilson_low"],
              "served scores outside calibration": (m["scores"] or {}).get("served_outside_calibration_range"),
              "score median served / calibration": (f"{m['scores']['served_q05_q50_q95'][1]:+.3f} / "
                                                    f"{m['scores']['calibration_q05_q50_q95'][1]:+.3f}"
                                                    if m["scores"] else None)}
             for h, m in metrics["horizons"].items()]
    sections = [
        ("Setup", {"train until": metrics["train_until"], "train until (1h)": metrics["train_until_1h"],
                   "budget": metrics["budget"], "retraining": metrics["retraining"],
                   "confidence threshold": threshold}),
        ("Per horizon (test period, served ONNX models)", per_h),
        ("Consensus", metrics["consensus"]),
    ]
    if "table" in bt:
        heading = (f"Backtest {bt['from']} to {bt['to']}: {bt['policy']}; threshold {bt['threshold']}, "
                   f"{bt['signals']} signals")
        sections.append((heading, [{"curve": k, **v} for k, v in bt["table"].items()]))
        sections.append(("Guard decisions (rejections and scale-downs)", bt["decisions_with_guards"] or "none"))
    return report.html_report(out / "report.html", f"cst evaluation, trained until {metrics['train_until']}",
                              sections, images)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


def run_backtests(settings: Settings, tests: dict[str, HorizonTest], market: History, threshold: float,
                  out: Path) -> dict:
    """Consensus signals at `threshold`, traded with and without the guards; BTC and an equal-weight universe as
    benchmarks; equity and drawdown PNGs."""
    daily = {h: t for h, t in tests.items() if settings.training.horizons[h].timeframe == "1d"}
    if not daily or "1d" not in market.panels:
        return {"skipped": "no daily horizon evaluated"}
    history = price_history_from_panel(market.panels["1d"])
    signals = consensus_signals(daily, threshold, settings.consensus_min_horizons)
    orders = orders_from_signals(signals, settings.training.horizons)
    start = min(int(t.ts.min()) for t in daily.values() if t.ts.size)
    end = int(history.close_ts[-1])
    cfg = settings.risk
    runs = {}
    for name, guards in (("with_guards", True), ("without_guards", False)):
        res = run_backtest(history, orders, cfg.model_copy(update={"guards": guards}), start, end)
        runs[name] = {"result": res, "equity": res.equity / cfg.initial_equity}
    ts = history.close_ts[history.window(start, end)]
    curves = {"strategy (guards)": runs["with_guards"]["equity"], "strategy (no guards)": runs["without_guards"]["equity"],
              "buy and hold BTC": buy_and_hold(history, "BTC", start, end, cfg.fee_bps),
              "equal weight": equal_weight(history, start, end, 1, cfg.fee_bps)}
    table = {name: performance(c, ts, cfg.periods_per_year) for name, c in curves.items()}
    for name in ("with_guards", "without_guards"):
        res = runs[name]["result"]
        label = "strategy (guards)" if name == "with_guards" else "strategy (no guards)"
        table[label] = {**res.metrics, "skipped": res.skipped}
    images = [report.equity_png(out / "equity.png", ts, curves),
              report.drawdown_png(out / "drawdown.png", ts, curves)]
    guarded = runs["with_guards"]["result"]
    doc = {
        "threshold": threshold, "min_horizons": settings.consensus_min_horizons, "signals": len(signals),
        "orders": len(orders), "from": ms_to_iso(start), "to": ms_to_iso(end),
        "policy": f"consensus signals, long only (spot), sized by fractional Kelly and vol targeting, held for the "
                  f"shortest agreeing horizon; fees {cfg.fee_bps:g} bps per side plus the labelled sqrt-impact model per side",
        "table": table,
        "decisions_with_guards": _count_reasons(guarded.decisions),
        "images": [p.name for p in images],
    }
    (out / "backtest.json").write_text(json.dumps(doc, indent=2, default=_json_default))
    return doc


def _count_reasons(decisions: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for d in decisions:
        if not d["allow"] or d.get("scale", 1.0) < 1.0:
            # Grouped by the reason's wording: figures and coins vary per decision.
            reason = re.sub(r"-?[0-9][0-9.,%]*", "#", d["reason"].split(":")[0])
            counts[f"{d['guard']}: {re.sub(r' with [A-Z]+$', '', reason)}"] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def load_experiment(path: str | Path, source: str | None = None) -> tuple[Settings, dict]:
    """The settings and arguments of a stored evaluation, checked against the data it names (or `source`)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CstError("bad_experiment", f"cannot read experiment snapshot {path}: {exc}") from None
    args = dict(doc["args"])
    if source:
        args["source"] = source
    found = directory_digest(args["source"])
    if found != doc["data_fingerprint"]:
        raise CstError("data_changed", f"{args['source']} holds other data than the experiment was run on "
                                       f"(fingerprint {found}, snapshot {doc['data_fingerprint']})")
    # Init values win over the environment: the snapshot alone decides every knob (secrets are never in it).
    secret_free = {k: v for k, v in doc["settings"].items() if k != "secrets_manager_id"}
    for section, field_name in SECRET_FIELDS.values():
        secret_free.get(section, {}).pop(field_name, None)
    return Settings(_env_file=None, **secret_free), args
