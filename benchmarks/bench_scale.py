"""Scale: per step seconds and peak memory at 12, 100, 500 and 1,000 coins (daily and hourly as-of); a simulated month's per-run cost.

SPEED TEST ONLY: every size above 12 is the real recorded series tiled under new coin names (benchmarks/tiles.py);
the models are trained once on the real twelve (one-trial budget, their skill is irrelevant) and copied into every
lake, so each size predicts with the same models. Per step: each step runs in its own `cst step` process from
what the lake holds, as each runs in its own Lambda in the cloud; seconds are the step's own output contract
(`seconds`), peak MB is that process's peak RSS (os.wait4, interpreter and imports included: what a Lambda's
memory setting must hold); a size's wall is the sum of its step processes' lives, each with about 0.5 s of
interpreter start and imports. The month (100 coins by default: 720 runs take about 15 minutes): consecutive hourly runs into one lake
with the in-process runner (`cst run`'s path), per-run wall and per-step seconds at chosen run numbers.
Drift retraining and the calendar retrain are switched off: they would time training, not the pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from benchmarks.bench_pipeline import _settings as _pipeline_settings
from benchmarks.tiles import DATA, tiled_source

ROOT = Path(__file__).resolve().parents[1]
SIZES = (12, 100, 500, 1000)
DAILY_AS_OF = "2024-05-01T00:00:00Z"
# Inside the recorded hourly files (2024-11-14 .. 2025-01-10); the month starts here too.
HOURLY_AS_OF = "2024-12-01T12:00:00Z"
MONTH_START = datetime(2024, 12, 1, 0, tzinfo=UTC)
NEVER = "36500d"
# Every measured number, for a closer look than the report's table.
RAW = Path(tempfile.gettempdir()) / "bench_scale.json"
# The same knobs for `cst step` processes, through the settings' environment names.
STEP_ENV = {"CST_RUN__PSI_FEATURE_SHARE": "1.0", "CST_RUN__MIN_OUTCOMES": str(10**9),
            "CST_RUN__RETRAIN_EVERY": json.dumps({"1h": NEVER, "1d": NEVER})}


def _settings():
    cfg = _pipeline_settings()
    cfg.run.retrain_every = {"1h": NEVER, "1d": NEVER}
    return cfg


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def train_models(cfg, lake_dir: Path) -> float:
    """Daily horizons trained on data before the daily as-of, 1h before the month: none sees its test period."""
    from services.orchestrator import runner
    from services.training.train import train
    from shared import runs
    from shared.contracts import iso_to_ms
    from shared.pipeline.context import StepContext
    from shared.storage import LocalLake

    lake = LocalLake(lake_dir)
    t = time.perf_counter()
    for until, horizons in ((DAILY_AS_OF, ["24h", "7d", "30d"]), (_iso(MONTH_START), ["1h"])):
        ref = runs.new_ref(cfg, str(DATA), iso_to_ms(until))
        runner.run_step(StepContext(cfg, lake), "ingest", ref)
        train(cfg, lake, ref.run_id, until=until, horizons=horizons, budget="bench")
    return round(time.perf_counter() - t, 1)


# A forked child's ru_maxrss starts at its parent's RSS (Linux carries the pre-exec high-water mark), so the
# child itself reports its VmHWM, which the exec'd image's own memory map starts from zero.
_PEAK = ("import os, re, sys\n"
         "sys.argv = ['cst'] + sys.argv[1:]\n"
         "from services.cli import main\n"
         "code = main()\n"
         "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
         "open(os.environ['CST_BENCH_PEAK'], 'w').write(hwm)\n"
         "sys.stdout.flush()\n"
         "os._exit(code)  # as services.cli.entry leaves: native thread pools are not torn down\n")


def cst_process(args: list[str], env: dict) -> dict:
    """One `cst` process: wall, CPU and its own peak RSS."""
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as err:
        peak = Path(tmp) / "peak"
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _PEAK, *args], cwd=ROOT, env={**env, "CST_BENCH_PEAK": str(peak)},
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"cst {' '.join(args)} failed: {err.read().decode()[-2000:]}")
        return {"wall_s": wall, "peak_mb": int(peak.read_text()) / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def _step_process(lake: Path, name: str, run_id: str, item: str | None, env: dict) -> dict:
    return cst_process(["step", name, "--run-id", run_id, "--lake", str(lake), *(["--item", item] if item else [])], env)


def stepwise_run(cfg, lake_dir: Path, source: Path, as_of: str) -> dict:
    """The pipeline's steps in order, each in its own process; a Map step runs one process per item."""
    from services.orchestrator import runner
    from shared import runs
    from shared.contracts import iso_to_ms
    from shared.pipeline.context import StepContext
    from shared.pipeline.definition import PIPELINE
    from shared.runs import step_output_key
    from shared.storage import LocalLake

    lake = LocalLake(lake_dir)
    ctx = StepContext(cfg, lake)
    ref = runs.new_ref(cfg, str(source), iso_to_ms(as_of))
    runs.save_ref(lake, ref)
    env = {**os.environ, **STEP_ENV}
    steps: dict[str, dict] = {}
    t = time.perf_counter()
    for step in PIPELINE:
        if not runner.should_run(ctx, step, ref):
            continue
        for item in runner.items_of(step, ref):
            proc = _step_process(lake_dir, step.name, ref.run_id, item, env)
            own = lake.get_json(step_output_key(ref.run_id, step.name, item))
            steps[f"{step.name}[{item}]" if item else step.name] = {
                "step_s": own["seconds"], "process_s": round(proc["wall_s"], 2), "cpu_s": round(proc["cpu_s"], 2),
                "peak_mb": round(proc["peak_mb"])}
    wall = time.perf_counter() - t
    summary = lake.get_json(f"runs/run_id={ref.run_id}/summary.json")
    return {"as_of": as_of, "status": summary.get("status"), "predictions": summary.get("predictions"),
            "wall_s": round(wall, 1), "steps_s_sum": round(sum(s["step_s"] for s in steps.values()), 1),
            "peak_mb_max": max(s["peak_mb"] for s in steps.values()), "steps": steps}


def whole_run(lake_dir: Path, source: Path, as_of: str) -> dict:
    """`cst run` in one process (the local path: Map items side by side in threads): wall and peak RSS."""
    proc = cst_process(["run", "--source", str(source), "--lake", str(lake_dir), "--as-of", as_of],
                       {**os.environ, **STEP_ENV})
    return {"wall_s": round(proc["wall_s"], 1), "peak_mb": round(proc["peak_mb"])}


def scale_case(cfg, models: Path, coins: int, whole: bool) -> dict:
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = DATA if coins == 12 else tiled_source(Path(tmp) / "src", coins)
        for label, as_of in (("daily", DAILY_AS_OF), ("hourly", HOURLY_AS_OF)):
            lake = Path(tmp) / f"lake_{label}"
            shutil.copytree(models / "models", lake / "models")
            out[label] = stepwise_run(cfg, lake, src, as_of)
            if whole and label == "daily":
                one = Path(tmp) / f"lake_{label}_whole"
                shutil.copytree(models / "models", one / "models")
                out[label]["cst_run"] = whole_run(one, src, as_of)
            print(json.dumps({coins: {label: out[label]}}), flush=True)
    return out


def month_case(cfg, models: Path, coins: int, runs: int, marks: tuple[int, ...], start: datetime = MONTH_START) -> dict:
    """`runs` consecutive hourly runs from `start` into one lake, in process; the cost of the runs in `marks`."""
    from services.orchestrator import runner
    from shared import runs
    from shared.contracts import iso_to_ms
    from shared.pipeline.context import StepContext
    from shared.storage import LocalLake

    rows: dict[int, dict] = {}
    walls: list[float] = []
    steps: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        src = DATA if coins == 12 else tiled_source(Path(tmp) / "src", coins)
        lake_dir = Path(tmp) / "lake"
        shutil.copytree(models / "models", lake_dir / "models")
        lake = LocalLake(lake_dir)
        for k in range(1, runs + 1):
            as_of = _iso(start + timedelta(hours=k - 1))
            ref = runs.new_ref(cfg, str(src), iso_to_ms(as_of))
            t = time.perf_counter()
            runs.save_ref(lake, ref)
            result = runner.run_pipeline(StepContext(cfg, lake), ref)
            walls.append(time.perf_counter() - t)
            if result.status != "complete":
                raise RuntimeError(f"run {k} at {as_of}: {result.status}")
            doc = lake.get_json(f"runs/run_id={ref.run_id}/summary.json")
            steps.append({s: round(v, 3) for s, v in doc["timings"].items()})
            if k in marks:
                files = [p for p in lake_dir.rglob("*") if p.is_file()]
                rows[k] = {"as_of": as_of, "wall_s": round(walls[-1], 2), "steps_s": steps[-1],
                           "outcomes_recorded": doc["outcomes_recorded"], "lake_files": len(files),
                           "lake_mb": round(sum(p.stat().st_size for p in files) / 2**20, 1)}
                print(json.dumps({"run": k, **rows[k]}), flush=True)
    tenth = max(1, runs // 72)
    first, last = sum(walls[:tenth]) / tenth, sum(walls[-tenth:]) / tenth
    # Run 1 alone imports every file cold; from run 2 on a run reads only what is new: the steady cost.
    warm = sum(walls[1:tenth + 1]) / len(walls[1:tenth + 1]) if runs > 1 else first
    # Medians of the first 50 warm runs and the last 50: a busy machine's spikes move a mean of ten, not these.
    fifty = max(1, min(50, (runs - 1) // 2))
    med = [float(np.median(walls[1:fifty + 1])), float(np.median(walls[-fifty:]))]
    return {"coins": coins, "runs": runs, "start": _iso(start), "marks": rows, "walls": [round(w, 3) for w in walls], "steps": steps,
            "mean_wall_first_last": [round(first, 3), round(last, 3)], "mean_wall_from_run_2": round(warm, 3),
            "window": tenth, "last_over_first": round(last / first, 3), "last_over_run_2_on": round(last / warm, 3),
            "median_wall_warm_last": [round(m, 3) for m in med], "median_window": fifty,
            "median_last_over_warm": round(med[1] / med[0], 3), "total_s": round(sum(walls), 1)}


PLOT = ROOT / "build" / "bench_scale_month.png"


def plot_month(month: dict, path: Path = PLOT) -> Path:
    """Every run's wall over the month against the steady cost (runs 2-11) and the +-20% band around it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    walls = month["walls"]
    warm = month["mean_wall_from_run_2"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = range(1, len(walls) + 1)
    ax.plot(x, walls, lw=0.8, color="#1f77b4", label="wall per run")
    # The steps that cost most, each on its own line: where any growth would come from.
    names = sorted({n for s in month.get("steps", []) for n in s},
                   key=lambda n: -sum(s.get(n, 0.0) for s in month["steps"]))[:4]
    for name, color in zip(names, ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2"), strict=False):
        ax.plot(x, [s.get(name, 0.0) for s in month["steps"]], lw=0.6, color=color, label=f"step {name}")
    ax.axhspan(0.8 * warm, 1.2 * warm, color="#2ca02c", alpha=0.15, label="runs 2-11 mean +-20%")
    ax.axhline(warm, color="#2ca02c", lw=1)
    ax.set_ylim(0, max(2 * warm, 1.05 * sorted(walls)[int(0.99 * (len(walls) - 1))]))
    ax.set_xlabel("run (consecutive hourly as-of)")
    ax.set_ylabel("seconds")
    ax.set_title(f"SPEED TEST ONLY: {month['coins']} tiled coins, {month['runs']} hourly runs into one lake "
                 f"(run 1 imports cold: {walls[0]:.1f} s)", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tables(scale: dict, month: dict | None) -> dict[str, str]:
    """Figures as rows the report's two-column table can hold: one row per size and as-of, one per month mark."""
    out: dict[str, str] = {}
    for coins, cases in scale.items():
        for label, r in cases.items():
            steps = "; ".join(f"{n} {s['step_s']:.2f} s / {s['peak_mb']} MB" for n, s in r["steps"].items())
            whole = f"; cst run in one process: {r['cst_run']['wall_s']} s / {r['cst_run']['peak_mb']} MB" \
                if "cst_run" in r else ""
            out[f"{coins} coins {label} ({r['as_of']})"] = (
                f"wall {r['wall_s']} s (steps {r['steps_s_sum']} s), peak {r['peak_mb_max']} MB{whole}; per step: {steps}")
    if month:
        out["month"] = (f"{month['coins']} coins, {month['runs']} consecutive hourly runs from {month['start']}, "
                        f"total {month['total_s']} s; mean wall of the first vs last {month['window']} runs: "
                        f"{month['mean_wall_first_last'][0]} / {month['mean_wall_first_last'][1]} s "
                        f"(x{month['last_over_first']}); runs 2-{month['window'] + 1} (after the cold import) "
                        f"{month['mean_wall_from_run_2']} s (last x{month['last_over_run_2_on']}); median wall of "
                        f"runs 2-{month['median_window'] + 1} vs the last {month['median_window']}: "
                        f"{month['median_wall_warm_last'][0]} / {month['median_wall_warm_last'][1]} s "
                        f"(x{month['median_last_over_warm']})")
        out["month plot"] = f"`{PLOT.relative_to(ROOT)}` (every run's wall)"
        for k, r in month["marks"].items():
            steps = ", ".join(f"{n} {v}" for n, v in r["steps_s"].items())
            out[f"month run {k}"] = (f"{r['as_of']}: wall {r['wall_s']} s, outcomes recorded "
                                     f"{r['outcomes_recorded']}, lake files {r['lake_files']} "
                                     f"({r['lake_mb']} MB); steps s: {steps}")
    return out


def main(sizes: tuple[int, ...] = SIZES, month_coins: int = 100, month_runs: int = 720, whole: bool = True,
         raw: Path | None = RAW) -> dict:
    if not DATA.is_dir():
        return {"skipped": f"{DATA} absent"}
    cfg = _settings()
    scale: dict[int, dict] = {}
    month = None
    with tempfile.TemporaryDirectory() as models:
        train_s = train_models(cfg, Path(models))
        print(json.dumps({"train_s": train_s}), flush=True)
        for coins in sizes:
            # The one-process `cst run` (the issue's own measure) only at the largest size: it doubles the time.
            scale[coins] = scale_case(cfg, Path(models), coins, whole and coins == max(sizes))
        if month_runs:
            marks = tuple(sorted({1, 2, 24, 168, month_runs // 2, month_runs - 1, month_runs}))
            month = month_case(cfg, Path(models), month_coins, month_runs, marks)
            plot_month(month)
    if raw is not None:
        raw.write_text(json.dumps({"scale": scale, "month": month}, indent=1))
    return figures(scale, month)


def figures(scale: dict, month: dict | None) -> dict[str, str]:
    return {"what": "SPEED TEST ONLY: real series tiled under new names; models trained once on the real 12",
            "per step": "seconds from the step's output contract / peak RSS of its own `cst step` process",
            **_tables(scale, month)}


if __name__ == "__main__":
    # python -m benchmarks.bench_scale SIZES MONTH_COINS MONTH_RUNS WHOLE, e.g. 12,100 12 48 0
    a = sys.argv[1:]
    figures = main(tuple(int(c) for c in a[0].split(",")) if a else SIZES, *(int(x) for x in a[1:3]),
                   *(bool(int(x)) for x in a[3:4]))
    print(json.dumps(figures, indent=2))
