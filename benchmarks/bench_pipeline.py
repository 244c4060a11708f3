"""The pipeline in the lake: per-step seconds and the stored hand-offs' share at 12 and 500 coins; a 30-day replay's files and outcome step per run.

Hand-off cost = time inside the functions that exist because steps hand over through the lake (writing and
reading staged and clean series, feature and panel partitions, the prediction log and its states, step outputs
and reading the quality report), outermost calls only; landing raw records and writing the quality report were
part of the in-memory cycle too and are not counted. Models are trained once with a one-trial budget on the real
files and copied into each lake (their skill is irrelevant to speed). 500 coins and the replay's 100 coins are
the real series tiled under new names (benchmarks/tiles.py): a SPEED TEST ONLY.
"""

from __future__ import annotations

import functools
import json
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.tiles import DATA, tiled_source

HANDOFF = {
    "services.ingest.steps": ["put_series"],
    "services.features.steps": ["get_series", "put_series", "write_frame", "write_panel", "quality_report"],
    "services.predict.steps": ["read_frame", "read_panel", "_quality", "_metadata", "served_predictions"],
    "services.predict.logbook": ["write_predictions", "logged_decision", "read_predictions", "maturing", "watermark",
                                 "set_watermark", "write_outcomes", "read_outcomes", "recent_outcomes", "absorb",
                                 "write_performance"],
}


class HandoffClock:
    """Wraps the hand-off functions where they are looked up; counts only the outermost call's time."""

    def __init__(self):
        self.seconds = 0.0
        self.by_function: dict[str, float] = {}
        self._depth = 0
        self._saved: list[tuple[object, str, object]] = []

    def _wrap(self, fn):
        @functools.wraps(fn)
        def timed(*a, **k):
            self._depth += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    dt = time.perf_counter() - t
                    self.seconds += dt
                    self.by_function[fn.__name__] = round(self.by_function.get(fn.__name__, 0.0) + dt, 3)
        return timed

    def __enter__(self):
        import importlib

        from services.orchestrator import runner
        from shared.pipeline.context import StepContext

        for mod_name, names in HANDOFF.items():
            mod = importlib.import_module(mod_name)
            for n in names:
                self._saved.append((mod, n, getattr(mod, n)))
                setattr(mod, n, self._wrap(getattr(mod, n)))
        # Step outputs: stored by the runner after each step, read by later steps.
        for obj, name in ((StepContext, "output"), (runner, "store_output")):
            self._saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, self._wrap(getattr(obj, name)))
        return self

    def __exit__(self, *exc):
        for obj, name, fn in reversed(self._saved):
            setattr(obj, name, fn)


def _settings():
    from shared.settings import Budget, Settings

    cfg = Settings(_env_file=None)
    cfg.training.budgets["bench"] = Budget(folds=2, trials={"lr": 1, "gbt": 1, "gru": 1}, timeout_s=120, epochs=1,
                                           gbt_max_estimators=150)
    cfg.training.calibration_grid = 128
    # Drift retraining would time training, not the pipeline: judged, never acted on here.
    cfg.run.psi_feature_share = 1.0
    cfg.run.min_outcomes = 10**9
    return cfg


def _train_models(cfg, lake_dir: Path) -> None:
    from services.orchestrator import runner
    from services.training.train import train
    from shared import runs
    from shared.pipeline.context import StepContext
    from shared.storage import LocalLake

    lake = LocalLake(lake_dir)
    for until in ("2024-05-01T00:00:00Z", "2025-01-05T00:00:00Z"):
        from shared.contracts import iso_to_ms

        ref = runs.new_ref(cfg, str(DATA), iso_to_ms(until))
        runner.run_step(StepContext(cfg, lake), "ingest", ref)
        hs = ["1h"] if until.startswith("2025") else ["24h", "7d", "30d"]
        train(cfg, lake, ref.run_id, until=until, horizons=hs, budget="bench")


def _run(cfg, lake_dir: Path, source: Path, as_of: str) -> dict:
    from services.orchestrator import runner
    from shared import runs
    from shared.contracts import iso_to_ms
    from shared.pipeline.context import StepContext
    from shared.storage import LocalLake

    lake = LocalLake(lake_dir)
    ref = runs.new_ref(cfg, str(source), iso_to_ms(as_of))
    before = {p: p.stat().st_mtime_ns for p in lake_dir.rglob("*") if p.is_file()}
    with HandoffClock() as clock:
        t = time.perf_counter()
        runs.save_ref(lake, ref)
        result = runner.run_pipeline(StepContext(cfg, lake), ref)
        wall = time.perf_counter() - t
    after = {p: p.stat().st_mtime_ns for p in lake_dir.rglob("*") if p.is_file()}
    written = [p for p, m in after.items() if before.get(p) != m]
    summary = lake.get_json(f"runs/run_id={ref.run_id}/summary.json")
    return {"status": result.status, "wall_s": round(wall, 2), "handoff_s": round(clock.seconds, 2),
            "handoff_share": round(clock.seconds / wall, 3),
            "handoff_by_function_s": dict(sorted(clock.by_function.items(), key=lambda kv: -kv[1])[:6]),
            "files_written": len(written),
            "bytes_written": sum(p.stat().st_size for p in written),
            "steps_s": summary["timings"], "predictions": summary["predictions"],
            "outcomes_recorded": summary["outcomes_recorded"], "retrained": summary["retrained"]}


def cycle_case(cfg, models: Path, coins: int, as_ofs: tuple[str, ...]) -> dict:
    """The first run into a new lake, then the next day's run into the same lake (the steady state)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = DATA if coins == 12 else tiled_source(Path(tmp) / "src", coins)
        lake = Path(tmp) / "lake"
        shutil.copytree(models / "models", lake / "models")
        for label, as_of in zip(("first_run", "next_day"), as_ofs, strict=True):
            out[label] = _run(cfg, lake, src, as_of)
            out[label]["as_of"] = as_of
            print(json.dumps({coins: out[label]}))
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def replay_case(cfg, models: Path, coins: int, days: int) -> dict:
    """One daily run per day into one lake: files written and the outcome step's time, first vs last run."""
    start = datetime(2024, 5, 1, tzinfo=UTC)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = tiled_source(Path(tmp) / "src", coins)
        lake = Path(tmp) / "lake"
        shutil.copytree(models / "models", lake / "models")
        for d in range(days):
            as_of = (start + timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%SZ")
            r = _run(cfg, lake, src, as_of)
            rows.append({"run": d + 1, "as_of": as_of[:10], "wall_s": r["wall_s"], "files_written": r["files_written"],
                         "outcomes_s": r["steps_s"].get("outcomes"), "performance_s": r["steps_s"].get("performance"),
                         "outcomes_recorded": r["outcomes_recorded"]})
            print(json.dumps(rows[-1]))
    first, last = rows[0], rows[-1]
    second = rows[1]
    return {"coins": coins, "runs": days, "run_1": first, "run_2": second, f"run_{days}": last,
            "files_written_per_run_min_max": [min(r["files_written"] for r in rows), max(r["files_written"] for r in rows)],
            "outcomes_s_run_2_vs_last": [second["outcomes_s"], last["outcomes_s"]]}


def main(replay_coins: int = 100, replay_days: int = 30, scale_coins: int = 500, replay: int = 1) -> dict:
    if not DATA.is_dir():
        return {"skipped": f"{DATA} absent"}
    cfg = _settings()
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as models:
        _train_models(cfg, Path(models))
        for coins in (12, scale_coins):
            out[f"cycle_{coins}_coins_daily"] = cycle_case(cfg, Path(models), coins,
                                                           ("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"))
        if replay:
            out[f"replay_{replay_coins}_coins_{replay_days}_days"] = replay_case(cfg, Path(models), replay_coins,
                                                                                 replay_days)
    return out


if __name__ == "__main__":
    import sys

    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps(main(*args), indent=2))
