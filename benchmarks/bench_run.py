"""End-to-end `cst run` wall time on ../shared/data: the first as-of trains (quick budget), the next reuses models.

Each run is a fresh `cst` process on an empty lake, as a user would start it; timings per step come from the
run's own summary.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
AS_OFS = ("2024-05-01T00:00:00Z", "2024-06-15T00:00:00Z", "2025-01-05T00:00:00Z")


def main() -> dict:
    if not DATA.is_dir():
        return {"skipped": f"{DATA} absent"}
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as lake:
        for as_of in AS_OFS:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "services.cli", "run", "--source", str(DATA), "--lake", lake,
                            "--as-of", as_of], check=True, cwd=ROOT, capture_output=True)
            wall = time.perf_counter() - t
            (summary,) = Path(lake).glob(f"runs/run_id={as_of[:4]}{as_of[5:7]}{as_of[8:10]}T*/summary.json")
            doc = json.loads(summary.read_text())
            out[as_of] = {"wall_s": round(wall, 1), "predictions": doc["predictions"], "actionable": doc["actionable"],
                          "outcomes_recorded": doc["outcomes_recorded"],
                          "steps_s": {k: round(v, 1) for k, v in doc["timings"].items()}}
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
