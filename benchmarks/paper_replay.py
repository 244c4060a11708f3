"""The paper books' forward record, replayed: daily and intraday runs of `cst run` over N days of recorded files,
both books stepped by the pipeline, every alert posted to a webhook receiver on 127.0.0.1 and counted per event,
the last as-of run again and its books and summary steps retried (no second alert, no book changed), then
`cst reconcile`. Not part of `make bench` (an hour on the wide data); EVALUATION.md gives the command and figures.

    CST_SOURCES__VENUE=binance-perp .venv/bin/python -m benchmarks.paper_replay --models LAKE_WITH_MODELS \\
        --source ../shared/data --start 2025-05-02 --days 60 --intraday 12 --no-retrain --out /tmp/paper60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


class Receiver:
    """A webhook on 127.0.0.1 that keeps the JSON body of every alert posted to it."""

    def __init__(self) -> None:
        got = self.got = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server interface
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_a):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def snapshot(root: Path, *prefixes: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for pre in prefixes for p in sorted((root / pre).rglob("*"))
            if p.is_file()}


def by_event(lake: Path, got: list[dict]) -> dict[str, int]:
    """Each alert the receiver got, counted under the event of the alert recorded with that title and text."""
    recorded = {}
    for p in (lake / "alerts").rglob("*.json"):
        a = json.loads(p.read_text())
        recorded[(a["title"], f"{a['body']}\n{a['link']}")] = a["event"]  # what a channel is sent (alerts.deliver)
    return dict(sorted(Counter(recorded.get((g.get("title"), g.get("message")), "not recorded") for g in got).items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="a lake whose models/ the replay starts from (copied)")
    ap.add_argument("--source", required=True)
    ap.add_argument("--start", required=True, help="the first daily close, YYYY-MM-DD")
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--intraday", default="12", help="comma-separated hours of the intraday runs each day ('' none)")
    ap.add_argument("--no-retrain", action="store_true",
                    help="serve with the models as they are (drift and cadence judged and reported, nothing retrains)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    lake = out / "lake"
    if lake.exists():
        shutil.rmtree(lake)
    (out / "runs.jsonl").unlink(missing_ok=True)
    shutil.copytree(Path(args.models) / "models", lake / "models")
    receiver = Receiver()
    # Every alert goes to the receiver; no hourly cap, so that every event is counted.
    os.environ["CST_ALERTS__URLS"] = json.dumps([f"json://127.0.0.1:{receiver.port}/hook"])
    os.environ["CST_ALERTS__PER_CHANNEL_PER_HOUR"] = "100000"
    os.environ["CST_API__PUBLIC_URL"] = os.environ.get("CST_API__PUBLIC_URL", "http://127.0.0.1:8000")
    from services import cli

    hours = [int(h) for h in args.intraday.split(",") if h.strip()]
    start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
    runs = []
    t_all = time.perf_counter()
    for d in range(args.days):
        for hour in [0, *hours]:
            as_of = (start + timedelta(days=d, hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")
            t = time.perf_counter()
            code = cli.main(["run", "--lake", str(lake), "--source", args.source, "--as-of", as_of,
                             *(["--no-retrain"] if args.no_retrain else [])])
            runs.append({"as_of": as_of, "exit": code, "seconds": round(time.perf_counter() - t, 1),
                         "alerts_so_far": len(receiver.got)})
            with (out / "runs.jsonl").open("a") as f:
                f.write(json.dumps(runs[-1]) + "\n")
    first_pass = len(receiver.got)
    before = snapshot(lake, "books", "alerts")
    last = runs[-1 - len(hours)]["as_of"]  # the last daily close
    # A re-run of the same as-of, and its books and summary steps retried on the stored run.
    rerun = cli.main(["run", "--lake", str(lake), "--source", args.source, "--as-of", last,
                      *(["--no-retrain"] if args.no_retrain else [])])
    ref = sorted(json.loads(p.read_text()) for p in lake.glob("runs/run_id=*/summary.json")
                 if json.loads(p.read_text())["as_of"] == last)[-1]
    retried = [cli.main(["step", step, "--lake", str(lake), "--run-id", ref["run_id"]]) for step in ("books", "summary")]
    after = snapshot(lake, "books", "alerts")
    code = cli.main(["reconcile", "--lake", str(lake)])
    rec = json.loads((lake / "books" / "reconciliation.json").read_text())
    states = {b: json.loads((lake / "books" / f"book={b}" / "state.json").read_text()) for b in ("signals", "research")}
    result = {
        "runs": len(runs), "failed_runs": [r["as_of"] for r in runs if r["exit"] != 0],
        "wall_minutes": round((time.perf_counter() - t_all) / 60, 1),
        "alerts_received_by_event": by_event(lake, receiver.got),
        "alerts_received": first_pass,
        "rerun_and_retry": {"rerun_exit": rerun, "retried_steps_exit": retried,
                            "alerts_after_rerun_and_retry": len(receiver.got) - first_pass,
                            "books_and_alerts_unchanged": before == after},
        "reconcile_exit": code, "reconciliation": {k: rec[k] for k in ("verdict", "unexplained", "books")},
        "books": {b: {"closes": len(s["marks"]), "equity": s["marks"][-1]["equity"], "fees": s["fees"],
                      "impact": s["impact"], "funding": s["funding"], "runs": len(s["runs"])}
                  for b, s in states.items()},
    }
    (out / "paper_replay.json").write_text(json.dumps({"result": result, "runs": runs}, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
