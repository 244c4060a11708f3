"""Model registry in the lake: versioned ONNX + metadata + model card; CURRENT moves only through the gate."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime

import numpy as np

from services.predict.model import HorizonModel, current_version, model_prefix
from services.training.calibration import brier
from services.training.ensemble import Trained, native_p_up
from services.training.members import Dataset
from shared.contracts import iso_to_ms, ms_to_iso
from shared.provenance import provenance
from shared.records import GateDecision, ModelMetadata
from shared.registry import load_metadata, put_metadata, set_current
from shared.settings import HorizonSpec, Settings
from shared.storage import Lake

log = logging.getLogger(__name__)

def fingerprint(ds: Dataset) -> str:
    h = hashlib.sha256()
    for a in (ds.X, ds.y, ds.ts):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("|".join(ds.coin.tolist()).encode())
    return h.hexdigest()[:16]


def drift_reference(X: np.ndarray, bins: int = 10) -> dict:
    """Per feature: inner decile edges of the training rows and the share of rows in each bin (for PSI)."""
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    edges = np.quantile(X, qs, axis=0).T  # (F, bins - 1)
    props = []
    for j in range(X.shape[1]):
        counts = np.bincount(np.searchsorted(edges[j], X[:, j], side="right"), minlength=bins)
        props.append((counts / counts.sum()).tolist())
    return {"edges": edges.tolist(), "proportions": props, "rows": int(X.shape[0])}


def metadata(t: Trained, version: str, ds: Dataset, declared: dict, gate: GateDecision,
             settings: Settings) -> ModelMetadata:
    return ModelMetadata.model_validate({
        "horizon": t.horizon,
        "version": version,
        "timeframe": t.spec.timeframe,
        "bars": t.spec.bars,
        "sequence_length": t.spec.sequence_length,
        "features": t.names,
        "feature_hash": hashlib.sha256("|".join(t.names).encode()).hexdigest()[:16],
        "declared_layers": declared.get("layers", []),
        "excluded_layers": declared.get("excluded_layers", {}),
        "training_window": {"first": ms_to_iso(t.window["first"]), "last": ms_to_iso(t.window["last"]),
                            "rows": t.window["rows"], "coins": t.window["coins"], "folds": t.window["folds"],
                            "members_fitted_until": ms_to_iso(t.window["members_fitted_until"]),
                            "calibration_from": ms_to_iso(t.window["calibration_from"]),
                            "calibration_rows": t.window["calibration_rows"]},
        # The one place serving reads whether this horizon showed skill on rows it never fitted on.
        "skill": t.metrics["skill"],
        "rows_excluded": t.excluded,
        "data_fingerprint": fingerprint(ds),
        "metrics": t.metrics,
        "calibration": {"method": t.calibrator.method, **t.calibrator.selection, "interval": "venn_abers"},
        "members": {m: t.params[m] for m in t.params},
        "tuning": t.tuning,
        **provenance(settings),
        "gate": gate,
        # The latest quarter of the training rows: drift asks whether the market moved away from what the
        # model saw last, not whether a few weeks differ from a multi-year average (they always do).
        "drift_reference": drift_reference(ds.X[-max(1, len(ds) // 4):]),
        "created": datetime.now(UTC).isoformat(),
        "beats": _beats(t),
        "beats_note": t.beats_note,
        "vol": _vol(t),
        "vol_note": t.vol_note,
    })


def _vol(t: Trained) -> dict | None:
    v = t.vol
    if v is None:
        return None
    return {"log_residual_variance": v.s2, "levels": v.levels, "served": v.served, "metrics": v.metrics, "rows": v.rows,
            "rows_excluded": v.excluded, "range_seed": v.range_seed.model_dump() if v.range_seed is not None else None,
            "members": {"har": {"windows": [t.names[i] for i in v.har.cols]},
                        **({"long": {"windows": [t.names[i] for i in v.long.cols]}} if v.long is not None else {}),
                        "gbt": v.gbt.params}}


def _beats(t: Trained) -> dict | None:
    b = t.beats
    if b is None:
        return None
    return {"target": "beats", "skill": b.metrics["skill"], "metrics": b.metrics,
            "calibration": {"method": b.calibrator.method, **b.calibrator.selection, "interval": "venn_abers"},
            "members": b.params, "tuning": b.tuning, "rows": len(b.ds), "rows_excluded": b.excluded,
            "calibration_from": ms_to_iso(int(b.ds.ts[b.cal_rows].min())), "calibration_rows": int(b.cal_rows.size)}


def model_card(record: ModelMetadata) -> str:
    meta = record.model_dump(mode="json")
    m = meta["metrics"]
    cal = meta["calibration"]
    conf = m["confident"]
    lines = [
        f"# Model card: horizon {meta['horizon']}, version {meta['version']}",
        "",
        f"Predicts P(forward log return over {meta['bars']} x {meta['timeframe']} > 0) per coin, with an interval "
        "and forward-return quantiles (10/50/90%).",
        "",
        "## Data",
        f"- Training window (decision times): {meta['training_window']['first']} .. {meta['training_window']['last']}, "
        f"{meta['training_window']['rows']:,} rows of {len(meta['training_window']['coins'])} coins: "
        f"{', '.join(meta['training_window']['coins'])}",
        f"- Rows left out: {json.dumps(meta['rows_excluded'])}",
        f"- Features: {len(meta['features'])} (hash {meta['feature_hash']}); layers {', '.join(meta['declared_layers'])}",
        *[f"- Layer left out, {k}: {v}" for k, v in meta["excluded_layers"].items()],
        f"- Data fingerprint {meta['data_fingerprint']}; code {meta['code_revision']}; settings hash "
        f"{meta['settings_hash']} (the full snapshot is in metadata.json)",
        "",
        "## Model",
        f"- Members are fitted on decision times up to {meta['training_window'].get('members_fitted_until', '?')}; "
        f"the {meta['training_window'].get('calibration_rows', '?')} later rows from "
        f"{meta['training_window'].get('calibration_from', '?')} calibrate the served stack (never fitted on them).",
        "- Members (all required at serving): regularized logistic regression, LightGBM trees, a GRU over the last "
        f"{meta['sequence_length']} rows; stacked by a logistic meta-learner trained on out-of-fold member logits "
        f"from purged walk-forward CV ({meta['training_window']['folds']} folds, embargo = horizon).",
        *[f"- {k}: {json.dumps(v)}" for k, v in meta["members"].items()],
        f"- Optuna search per member (this window's own study; earlier windows' best parameters re-scored first): "
        f"{json.dumps(meta['tuning'])}",
        *[f"- **{m}: {t['fallback']}**" for m, t in meta["tuning"].items() if t.get("fallback")],
        *[f"- **{m}: {t['stopped_by_time']}**" for m, t in meta["tuning"].items() if t.get("stopped_by_time")],
        "",
        "## Calibration and uncertainty",
        f"- Point calibrator: **{cal['method']}**, chosen on validation Brier {json.dumps(cal.get('validation_brier'))}.",
        "- Interval: inductive Venn-Abers [p0, p1]. Its bounds are valid under exchangeability for any "
        "underlying model, per prediction; an ensemble spread measures model disagreement, not calibration, and a "
        "conformal set on labels gives no probability interval. The confidence filter uses the lower bound of the "
        "predicted direction.",
        f"- Evidence: {cal.get('validation_rows', 0) + cal.get('fit_rows', 0)} calibration rows count as "
        f"{cal.get('effective_outcomes')} independent outcomes (non-overlapping horizon windows); each row weighs "
        f"{cal.get('row_weight', 1.0):.4f} in Venn-Abers, so the interval is as wide as that evidence allows.",
        *([f"- Level: calibration rows averaged {cal['level']['calibration_rows_rate']:.3f}; moved to the training "
           f"history's up-rate {cal['level']['training_base_rate']:.3f} (logit shift {cal['level']['logit_shift']:+.3f}), "
           "since the calibration rows span one or two market regimes."] if "level" in cal else []),
        "",
        "## Skill",
        *skill_lines(m.get("skill", {}), m["base_rate_train"]),
        "",
        "## Held-out figures (calibration rows, each time block scored by a calibrator fitted without it)",
        f"- Brier {m['cv_brier']:.4f}, Brier skill {m['brier_skill']:+.4f} vs training base rate {m['base_rate_train']:.3f}, "
        f"ECE {m['ece']:.4f}, n = {m['validation_rows']}",
        f"- Member CV Brier: {json.dumps({k: round(v, 4) for k, v in m['member_cv_brier'].items()})}",
        f"- Confidence >= {conf['threshold']}: n = {conf['n']}, hit rate = {conf['hit_rate']}",
        "",
        *beats_lines(record),
        *vol_lines(record),
        "## Gate",
        f"- {json.dumps(meta['gate'])}",
        "",
        f"Libraries: {json.dumps(meta['libraries'])}",
    ]
    return "\n".join(lines) + "\n"


def beats_lines(record: ModelMetadata) -> list[str]:
    """The model card's section on the cross-sectional target."""
    head = ["## Cross-section: P(the coin beats the median coin of its decision's universe)"]
    b = record.beats
    if b is None:
        return [*head, f"- Not in this version: {record.beats_note or 'not trained'}", ""]
    m = b.metrics
    conf = m["confident"]
    ic = m.get("rank_ic") or {}
    ic_line = ([f"- Held-out rank IC of the score (Spearman per decision time, mean over {ic['windows']} "
                f"non-overlapping windows): {ic['mean']:+.4f} [{ic['interval'][0]:+.4f}, {ic['interval'][1]:+.4f}]"]
               if ic.get("mean") is not None and ic["interval"][0] is not None else
               [f"- Held-out rank IC: {ic.get('note', 'not measured')}"])
    return [
        *head,
        f"- A second stack of the same members, searched in its own Optuna journals, on {b.rows:,} rows (left out: "
        f"{json.dumps(b.rows_excluded)}); calibrated on the {b.calibration_rows} rows from {b.calibration_from} with "
        f"**{b.calibration.get('method')}** and a Venn-Abers interval.",
        *skill_lines(b.skill or {}, m["base_rate_train"]),
        f"- Held out: Brier {m['cv_brier']:.4f}, Brier skill {m['brier_skill']:+.4f} vs {m['base_rate_train']:.3f}, "
        f"ECE {m['ece']:.4f}, n = {m['validation_rows']}; confidence >= {conf['threshold']}: n = {conf['n']}, "
        f"hit rate = {conf['hit_rate']}",
        *ic_line,
        "",
    ]


def vol_lines(record: ModelMetadata) -> list[str]:
    """The model card's section on the volatility forecast."""
    head = ["## Volatility: realized variance over the horizon"]
    v = record.vol
    if v is None:
        return [*head, f"- Not in this version: {record.vol_note or 'not trained'}", ""]
    m = v.metrics
    w = m.get("meta_weights", {})
    held = m.get("held_out", {})
    long = v.members.get("long")
    return [
        *head,
        f"- Target: log of the summed Parkinson variances of the horizon's candles; {v.rows:,} member rows (left "
        f"out: {json.dumps(v.rows_excluded)}). HAR member ({', '.join(v.members.get('har', {}).get('windows', []))})"
        + (f", HAR with the long-run level ({', '.join(long.get('windows', []))})" if long else "")
        + f" and a pooled LightGBM regressor {json.dumps(v.members.get('gbt', {}))}, combined on out-of-fold "
        f"forecasts (weights >= 0 summing to one; the shift from the final members' fit rows): "
        f"{w.get('har', 0):.3f} x HAR"
        + (f" + {w.get('long', 0):.3f} x HAR-long" if long else "")
        + f" + {w.get('gbt', 0):.3f} x GBT {w.get('intercept', 0):+.3f}"
        + (f" (the fold models' shift, {w['out_of_fold_intercept']:+.3f}, is not served)"
           if "out_of_fold_intercept" in w else "") + "; "
        "served variance exp(forecast + level), level (log mean exp of the out-of-fold residuals): "
        + (", ".join(f"{k} {x:+.3f}" for k, x in v.levels.items()) if v.levels
           else f"{v.log_residual_variance / 2:+.3f} (s2 / 2)") + ".",
        f"- Held out ({m.get('held_out_rows', 0):,} calibration rows the members never saw): "
        + "; ".join(f"{k}: QLIKE {r['qlike']:.4f}, R2 of log variance {r['r2_log']:.3f}" for k, r in held.items()),
        "- Served: " + ("the stack." if v.served == "stack" else
                        f"**{'HAR' if v.served == 'HAR' else 'HAR with the long-run level'} alone**: it forecast the "
                        "held-out rows better than the stack."),
        "",
    ]


def skill_lines(skill: dict, base_rate: float) -> list[str]:
    if not skill:
        return ["- not assessed (a model trained before skill was measured)"]
    if skill.get("why"):
        return [f"- **{skill['verdict']}**: {skill['why']}; the base rate {base_rate:.3f} is served.",
                "- Without demonstrated skill every prediction is the base rate, says so, and is never certified."]
    head = (f"- **{skill['verdict']}**: held-out Brier gain over the base rate {skill['brier_gain_per_window']:+.5f} "
            f"per horizon window (standard error {skill['gain_standard_error']:.5f}, {skill['windows']} windows, "
            f"{skill['rows']} rows; demonstrated needs gain > {skill['z']} standard errors and >= "
            f"{skill['min_windows']} windows).")
    served = (f"- Served shrinkage toward the base rate {base_rate:.3f} in logit space: strength "
              f"{skill['strength']:.2f} (best held-out {skill['best_strength']:.2f}; 1 = calibrated stack, "
              "0 = base rate).")
    never = ["- Without demonstrated skill every prediction is the base rate, says so, and is never certified."]
    return [head, served] + ([] if skill["demonstrated"] else never)


def gate(t: Trained, ds: Dataset, val_idx: np.ndarray, lake: Lake, tolerance: float, *,
         min_unseen_rows: int) -> GateDecision:
    """Compare with the CURRENT model on at least `min_unseen_rows` validation rows it never trained on
    (training.gate_min_unseen_rows); with fewer, compare CV figures."""
    prev = current_version(lake, t.horizon)
    new_b = t.metrics["cv_brier"]
    if prev is None:
        return GateDecision(promote=True, reason="no previous model")
    try:
        old = HorizonModel.load(lake, t.horizon, prev)
    except Exception as exc:  # noqa: BLE001 - an unreadable previous model cannot block a readable new one
        return GateDecision(promote=True, reason=f"previous model {prev} unreadable: {exc}", previous=prev)
    old_spec = HorizonSpec(timeframe=old.metadata.timeframe, bars=old.metadata.bars,
                           sequence_length=old.metadata.sequence_length)
    unseen = val_idx[ds.ts[val_idx] > iso_to_ms(old.metadata.training_window.last) + old_spec.length_ms]
    if old.names == t.names and unseen.size >= min_unseen_rows:
        sub = ds.take(unseen)
        old_b = brier(old.predict(sub.X, sub.S).p_up, sub.y)
        this_b = brier(native_p_up(t, sub), sub.y)
        ok = this_b <= old_b + tolerance
        return GateDecision(promote=ok, previous=prev, rows=int(unseen.size), brier_new=this_b, brier_previous=old_b,
                            reason="same unseen validation rows" + ("" if ok else ": new model is worse"))
    old_b = float(old.metadata.metrics["cv_brier"])
    ok = new_b <= old_b + tolerance
    return GateDecision(promote=ok, previous=prev, brier_new=new_b, brier_previous=old_b,
                        reason="CV figures (feature sets differ or too few unseen rows)" + ("" if ok else ": new model is worse"))


def _stopped_by_time(tuning: dict) -> list[str]:
    return sorted(m for m, s in tuning.items() if s.get("stopped_by_time"))


def _with_comparability(decision: GateDecision, t: Trained, lake: Lake) -> GateDecision:
    """Name a comparison between a search the time net stopped and one it did not: never a silent one."""
    prev = decision.previous
    old = load_metadata(lake, t.horizon, prev) if prev else None
    new_s, old_s = _stopped_by_time(t.tuning), _stopped_by_time(old.tuning if old else {})
    if new_s or old_s:
        return decision.model_copy(update={
            "search_stopped_by_time": {"new": new_s, "previous": old_s},
            "reason": decision.reason + (f"; not like for like: the search of {', '.join(new_s) or 'none'} (new) and "
                                         f"{', '.join(old_s) or 'none'} (previous) stopped by time")})
    return decision


def publish(t: Trained, declared: dict, lake: Lake, settings: Settings) -> ModelMetadata:
    version = "v" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    cfg = settings.training
    decision = _with_comparability(gate(t, t.ds, t.val_idx, lake, cfg.gate_brier_tolerance,
                                        min_unseen_rows=cfg.gate_min_unseen_rows), t, lake)
    meta = metadata(t, version, t.ds, declared, decision, settings)
    prefix = model_prefix(t.horizon, version)
    for name, blob in t.blobs.items():
        lake.put(prefix + name, blob)
    put_metadata(lake, meta)
    lake.put(prefix + "MODEL_CARD.md", model_card(meta).encode())
    if decision.promote:
        # The version's files are all in place before the pointer moves (one atomic put).
        set_current(lake, t.horizon, version)
    else:
        log.warning("horizon %s: version %s kept out of CURRENT (%s); %s stays", t.horizon, version,
                    decision.reason, decision.previous)
    return meta
