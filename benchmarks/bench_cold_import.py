"""Cold import of every serving handler in an environment that holds only the serving image's dependencies.

The environment is built the way the serving image is (`pip install .`, the core dependencies, no extras) in a
throw-away virtualenv; each handler is imported in a fresh interpreter (the Lambda cold start's import phase:
`services.orchestrator.handlers` and the step's service module, which its entry imports), five times, and the median is kept. The run also records which
heavy modules the import pulled in: scikit-learn, torch, shap and pandas must be absent. Goal: <= 0.8 s.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(tempfile.gettempdir()) / "cst-serving-venv"
RUNS = 5
FORBIDDEN = ("sklearn", "torch", "shap", "pandas", "lightgbm", "optuna", "matplotlib")
PROBE = """
import importlib, json, sys, time
t = time.perf_counter()
import ast, inspect
import services.orchestrator.handlers as h
from services.orchestrator.entries import ENTRIES
from shared.pipeline.asl import START
name = sys.argv[1]
if name != START:
    src = ast.parse(inspect.getsource(ENTRIES[name]))
    importlib.import_module(next(n.module for n in ast.walk(src) if isinstance(n, ast.ImportFrom)))
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "loaded": sorted(m for m in %r if m in sys.modules)}))
""" % (FORBIDDEN,)


def serving_env() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], check=True)
    return python


def main() -> dict:
    started = time.perf_counter()
    python = serving_env()
    setup_s = time.perf_counter() - started
    from shared.pipeline.asl import START
    from shared.pipeline.definition import PIPELINE

    names = [START] + [s.name for s in PIPELINE if s.runtime != "sagemaker"]
    figures: dict[str, object] = {"environment": f"{VENV} (pip install . : core dependencies only)",
                                  "environment set-up seconds": round(setup_s, 1)}
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                               check=True)
    packages = {p["name"].lower() for p in json.loads(installed.stdout)}
    figures["training libraries installed"] = sorted(packages & {"scikit-learn", "torch", "shap", "pandas"}) or "none"
    worst = 0.0
    env = {"POWERTOOLS_TRACE_DISABLED": "true", "PATH": "/usr/bin:/bin"}
    for name in names:
        times, loaded = [], set()
        for _ in range(RUNS):
            out = subprocess.run([str(python), "-c", PROBE, name], capture_output=True, text=True, check=True,
                                 cwd=tempfile.gettempdir(), env=env)
            doc = json.loads(out.stdout.strip().splitlines()[-1])
            times.append(doc["seconds"])
            loaded |= set(doc["loaded"])
        median = statistics.median(times)
        worst = max(worst, median)
        figures[f"{name}: median cold import s (of {RUNS})"] = f"{median:.3f}" + (
            f"; loaded {sorted(loaded)}" if loaded else "")
        print(f"{name}: {median:.3f} s", flush=True)
    figures["slowest handler s"] = f"{worst:.3f} (goal <= 0.8)"
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
