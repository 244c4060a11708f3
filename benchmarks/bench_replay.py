"""Self-learning under load: 30 daily runs at 100 coins with drift retraining on; every run completes, the outcome step stays flat.

Drift is judged with the production thresholds; a drifting horizon is retrained in the run with the `replay`
budget (the quick budget's trial counts for the fast members, one trial for the sequence network, one epoch),
so the search, its warm starts and the registry gate all run. The 100 coins are the real series tiled under
new names (benchmarks/tiles.py): a SPEED AND ROBUSTNESS TEST ONLY, its models and drift mean nothing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.bench_pipeline import _run, _settings, _train_models
from benchmarks.tiles import DATA, tiled_source


def main(coins: int = 100, days: int = 30) -> dict:
    if not DATA.is_dir():
        return {"skipped": f"{DATA} absent"}
    from shared.settings import Budget, RunSettings

    cfg = _settings()
    cfg.run = RunSettings(retrain_budget="replay")  # production drift thresholds
    cfg.training.budgets["replay"] = Budget(folds=2, trials={"lr": 4, "gbt": 3, "gru": 1}, timeout_s=600, epochs=1,
                                            gbt_max_estimators=100)
    rows = []
    start = datetime(2024, 5, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        _train_models(cfg, Path(tmp) / "models")
        src = tiled_source(Path(tmp) / "src", coins)
        lake = Path(tmp) / "lake"
        shutil.copytree(Path(tmp) / "models" / "models", lake / "models")
        for d in range(days):
            as_of = (start + timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%SZ")
            r = _run(cfg, lake, src, as_of)
            rows.append({"run": d + 1, "as_of": as_of[:10], "status": r["status"], "wall_s": r["wall_s"],
                         "retrained": {h: ("promoted" if v.get("promoted") else
                                           "kept CURRENT" if v.get("version") else f"failed: {v.get('error')}")
                                       for h, v in r["retrained"].items()},
                         "outcomes_s": r["steps_s"].get("outcomes"), "files_written": r["files_written"]})
            print(json.dumps(rows[-1]))
    second, last = rows[1], rows[-1]
    return {"coins": coins, "runs": days,
            "complete_runs": sum(r["status"] == "complete" for r in rows),
            "runs_with_retraining": sum(bool(r["retrained"]) for r in rows),
            "retrains": sum(len(r["retrained"]) for r in rows),
            "outcomes_s_run_2": second["outcomes_s"], f"outcomes_s_run_{days}": last["outcomes_s"],
            "table": [{k: r[k] for k in ("run", "status", "wall_s", "outcomes_s", "retrained")} for r in rows]}


if __name__ == "__main__":
    import sys

    print(json.dumps(main(*[int(a) for a in sys.argv[1:]]), indent=2))
