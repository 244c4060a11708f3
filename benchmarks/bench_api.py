"""API under load: `cst serve` on loopback over a month of hourly runs for 100 coins; req/s, p50/p99, errors (SPEED TEST ONLY).

The lake has the structure a month of hourly runs leaves (720 runs; per run 100 one-hour predictions, a summary and
a quality report; the daily horizons predicted once a day by the midnight run; a current model per horizon with its
metadata and card), but its rows are PLACEHOLDERS labelled as such (model version, skill and features say
"placeholder"): a real 100-coin run per hour would take hours to build, and the figures measure speed only. The lake
lives in a temporary folder the product never serves. `wrk` (installed with apt-get when missing and we are root,
said in the output) loads each endpoint with a viewer's bearer token over `connections` keep-alive connections;
without wrk a small asyncio keep-alive client does. The server runs with one worker, then two (one per core): each
worker's first answers parse what it keeps (first_request_ms), the load measures it past them. Connections land on
the workers by a race to accept them, so all of them may land on one: cores_busy_per_worker says where they went.
The goal: >= 500 req/s with p99 < 50 ms and zero errors on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = "placeholder (speed test only)"
PASSWORD = "speed test only, never served"
GOAL = {"req_per_s": 500, "p99_ms": 50, "errors": 0}
DAILY = ("24h", "7d", "30d")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# wrk reports what it measured in its done() hook: one JSON line, latencies in microseconds.
WRK_SCRIPT = """
wrk.headers["Authorization"] = "Bearer %s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, '
    .. '"max_us": %%d, "connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def coins(n: int) -> list[str]:
    from shared.settings import Settings

    real = Settings(_env_file=None).universe.coins
    return (real + [f"T{i:04d}" for i in range(max(0, n - len(real)))])[:n]


def _row(coin: str, horizon: str, run_id: str, as_of: str, decision_ts: int, i: int):
    from shared.records import Prediction

    p = 0.45 + (i % 10) / 100  # varied so the columns are not constant; the values mean nothing
    return Prediction(run_id=run_id, coin=coin, horizon=horizon, as_of=as_of, decision_ts=decision_ts,
                      p_up=p, p_low=p - 0.05, p_high=p + 0.05, direction=1 if p >= 0.5 else -1,
                      confidence=max(p, 1 - p), q10=-0.01, q50=0.0, q90=0.01, model_version=PLACEHOLDER,
                      actionable=False, shap_base=0.5, top_features=json.dumps([[PLACEHOLDER, 0.0]] * 5),
                      range_low=-0.012, range_high=0.012, skill=PLACEHOLDER)


def build_lake(root: Path, n_coins: int = 100, hours: int = 720, now: datetime | None = None) -> dict:
    """A lake with the structure of `hours` hourly runs ending at the current hour, through the product's writers."""
    from services.predict import logbook
    from shared.contracts import ms_to_iso
    from shared.registry import current_key, model_prefix
    from shared.runs import quality_key, run_id_for, summary_key
    from shared.storage import LocalLake

    lake = LocalLake(root)
    names = coins(n_coins)
    end = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    end_ms = int(end.timestamp() * 1000)
    files = rows = 0
    for h in ("1h", *DAILY):
        prefix = model_prefix(h, "v-placeholder")
        lake.put_json(prefix + "metadata.json", {"created": ms_to_iso(end_ms), "placeholder": PLACEHOLDER,
                                                 "training_window": {"first": None, "last": None},
                                                 "skill": {"verdict": PLACEHOLDER, "demonstrated": False}, "metrics": {},
                                                 "gate": {"promote": True}})
        lake.put(prefix + "MODEL_CARD.md", f"# Model card\n\n{PLACEHOLDER}\n".encode())
        lake.put(current_key(h), b"v-placeholder")
    for k in range(hours):
        as_of_ms = end_ms - (hours - 1 - k) * HOUR_MS
        as_of, run_id = ms_to_iso(as_of_ms), run_id_for("bench-api-speed-test", as_of_ms)
        horizons = ["1h"] + (list(DAILY) if as_of_ms % DAY_MS == 0 else [])
        for h in horizons:
            logbook.write_predictions(lake, run_id, h, as_of_ms,
                                      [_row(c, h, run_id, as_of, as_of_ms, i) for i, c in enumerate(names)])
            files, rows = files + 1, rows + len(names)
        lake.put_json(quality_key(run_id), {"as_of": as_of, "placeholder": PLACEHOLDER, "files_ignored": {},
                                            "series": {f"ohlcv/1h/{c}": {"status": "ok", "rows": 720}
                                                       for c in names}})
        signals = [{"coin": c, "direction": "up", "horizons": ["24h", "7d"], "min_confidence": 0.8,
                    "p_up": {"24h": 0.81, "7d": 0.82}, "q": {}, "decision_ts": {"24h": as_of_ms}, "tradable": False} for c in names[:5]]
        lake.put_json(summary_key(run_id), {
            "run_id": run_id, "as_of": as_of, "source": "bench-api-speed-test", "status": "complete", "failures": [],
            "coins_total": len(names), "coins_predicted": len(names), "excluded": {}, "partially_excluded": {},
            "predictions": len(names) * len(horizons), "new_predictions": len(names) * len(horizons),
            "served_from_earlier_runs": {}, "actionable": 0, "uncertified_horizons": {"30d": PLACEHOLDER},
            "signals": signals, "tradable_signals": 0, "outcomes_recorded": 0, "drift": {}, "trained": {},
            "retrained": {}, "horizons_without_model": {}, "quality_key": quality_key(run_id), "fetch_failures": 0,
            "timings": {}, "placeholder": PLACEHOLDER})
    return {"runs": hours, "coins": n_coins, "prediction_files": files, "prediction_rows": rows, "end": end}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(lake: Path, port: int, workers: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "services.cli", "serve", "--lake", str(lake), "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CST_")}  # default settings, like a fresh shell
    # Its log goes to a file beside the lake, not a pipe nobody reads while the load runs (a full pipe would stall
    # the server).
    log = lake.parent / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cst serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("cst serve did not answer /health within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ensure_wrk() -> tuple[str | None, str]:
    """wrk's path and how it was found; installs Debian's package when missing and we are root."""
    if path := shutil.which("wrk"):
        return path, "wrk (found)"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk missing: installing it with `apt-get install -y wrk` (Debian package)")
        done = subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
        if done.returncode == 0 and (path := shutil.which("wrk")):
            return path, "wrk (installed by this benchmark with apt-get)"
    print("wrk unavailable: loading with the asyncio keep-alive client instead")
    return None, "asyncio keep-alive client (wrk unavailable)"


def load_wrk(wrk: str, url: str, token: str, connections: int, seconds: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % token)
    try:
        out = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name, url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    m = json.loads(next(line[4:] for line in out.splitlines() if line.startswith("WRK ")))
    errors = m["connect"] + m["read"] + m["write"] + m["timeout"]
    return {"req_per_s": round(m["requests"] / (m["duration_us"] / 1e6)), "p50_ms": round(m["p50_us"] / 1000, 1),
            "p90_ms": round(m["p90_us"] / 1000, 1), "p99_ms": round(m["p99_us"] / 1000, 1),
            "max_ms": round(m["max_us"] / 1000, 1), "requests": m["requests"], "errors": errors + m["status"],
            "non_2xx": m["status"]}


async def _client(port: int, path: str, token: str, until: float, lat: list[float], bad: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
    try:
        while time.perf_counter() < until:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                          if k.lower() == b"content-length")
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t)
            if status >= 400:
                bad.append(status)
    finally:
        writer.close()


def load_asyncio(port: int, path: str, token: str, connections: int, seconds: int) -> dict:
    lat: list[float] = []
    bad: list[int] = []

    async def run() -> float:
        t = time.perf_counter()
        await asyncio.gather(*(_client(port, path, token, t + seconds, lat, bad) for _ in range(connections)))
        return time.perf_counter() - t

    wall = asyncio.run(run())
    lat.sort()

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1)

    return {"req_per_s": round(len(lat) / wall), "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 1), "requests": len(lat), "errors": len(bad), "non_2xx": len(bad)}


def _get(port: int, path: str, token: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def endpoints(end: datetime) -> dict[str, str]:
    since = (end - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"signals": "/api/signals", "coin_page": "/api/coins/BTC",
            "predictions_7d": f"/api/predictions?coin=ETH&horizon=1h&since={since}&until={until}&limit=100"}


def warm(port: int, path: str, token: str, workers: int) -> None:
    """Every worker's first requests parse what it keeps (first_request_ms says what that costs); the load measures
    serving processes past that. Fresh connections land on the workers at random: 20 per worker reach them all."""
    for _ in range(20 * workers):
        _get(port, path, token)


def _cpu_s(pid: int) -> float:
    """CPU seconds a process has used (Linux /proc: utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> int:
    kb = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
              if line.startswith("VmRSS:"))
    return round(int(kb) / 1024)


def _server_processes(pid: int, workers: int) -> list[int]:
    """The processes that answer: the server itself, or with several workers its children (uvicorn's supervisor
    only watches them)."""
    if workers == 1:
        return [pid]
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile
    return children


def serve_and_load(lake: Path, workers: int, paths: dict[str, str], wrk: str | None, connections: int,
                   seconds: int) -> dict:
    from services.api.issuer import DevIssuer

    port = free_port()
    token = DevIssuer.for_lake(str(lake), f"http://127.0.0.1:{port}/auth").login("bench-viewer", PASSWORD)
    proc = start_server(lake, port, workers)
    out: dict[str, object] = {}
    try:
        first, first_ms = {}, {}
        for name, path in paths.items():
            t = time.perf_counter()
            first[name] = _get(port, path, token)
            first_ms[name] = round((time.perf_counter() - t) * 1000, 1)
        # The answers are what the lake holds, not errors dressed as data.
        assert first["signals"]["run_id"] and first["predictions_7d"]["total"] >= 7 * 24, first
        assert set(first["coin_page"]["horizons"]) == {"1h", *DAILY}, first["coin_page"]
        out["first_request_ms"] = first_ms
        pids = _server_processes(proc.pid, workers) if Path("/proc").is_dir() else []
        for name, path in paths.items():
            warm(port, path, token, workers)
            before = [_cpu_s(p) for p in pids]
            if wrk:
                r = load_wrk(wrk, f"http://127.0.0.1:{port}{path}", token, connections, seconds)
            else:
                r = load_asyncio(port, path, token, connections, seconds)
            if pids:
                # Where the time went: the server's CPU per answer, and how busy each worker was (connections land
                # on workers by a race to accept them: all of them may land on one).
                used = [_cpu_s(p) - b for p, b in zip(pids, before, strict=True)]
                r["server_cpu_ms_per_request"] = round(sum(used) / max(r["requests"], 1) * 1000, 2)
                # (multiprocessing's resource tracker is a child too: it answers nothing and uses ~0)
                r["cores_busy_per_worker"] = sorted((round(u / seconds, 2) for u in used), reverse=True)[:workers]
            r["goal_met"] = (r["req_per_s"] >= GOAL["req_per_s"] and r["p99_ms"] < GOAL["p99_ms"]
                             and r["errors"] == GOAL["errors"])
            out[name] = r
            print(f"workers={workers} {name}: {json.dumps(r)}")
        if pids:  # what each worker holds once it has answered all three: the kept lake reads included
            out["rss_mb_per_worker"] = sorted((_rss_mb(p) for p in pids), reverse=True)[:workers]
    finally:
        stop_server(proc)
    return out


def main(connections: int = 10, seconds: int = 10) -> dict:
    from services.api.issuer import DevIssuer
    from shared.storage import LocalLake

    wrk, tool = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="cst-bench-api-") as tmp:
        lake = Path(tmp) / "lake"
        t = time.perf_counter()
        size = build_lake(lake)
        build_s = round(time.perf_counter() - t, 1)
        print(f"lake (SPEED TEST ONLY, placeholder rows): {size['runs']} runs, {size['prediction_files']} prediction "
              f"files, {size['prediction_rows']} rows, built in {build_s} s")
        DevIssuer.for_lake(str(lake), "http://127.0.0.1/auth").add_user("bench-viewer", PASSWORD, "viewer")
        # A serving process keeps what it parsed only once the lake's stamps settle after the last write (2 s): the
        # newest run landed that long ago, as between two hourly runs.
        time.sleep(LocalLake.SETTLE_NS / 1e9)
        paths = endpoints(size["end"])
        out: dict[str, object] = {
            "what": "SPEED TEST ONLY: placeholder rows in a temporary lake, never forecasts",
            "lake": {k: size[k] for k in ("runs", "coins", "prediction_files", "prediction_rows")},
            "lake_build_s": build_s, "goal": GOAL,
            "load": {"tool": tool, "connections": connections, "seconds_per_endpoint": seconds},
            "endpoints": {name: path.split("?")[0] + ("?coin&horizon&since(-7d)&until(now)&limit=100" if "?" in path
                                                      else "") for name, path in paths.items()},
        }
        met = {}
        for workers in (1, 2):
            figures = serve_and_load(lake, workers, paths, wrk, connections, seconds)
            out.update({f"workers_{workers} {name}": r for name, r in figures.items()})
            met[f"workers_{workers}"] = all(r["goal_met"] for name, r in figures.items() if name in paths)
        out["goal_met"] = met
    return out


if __name__ == "__main__":
    print(json.dumps(main(*[int(a) for a in sys.argv[1:]]), indent=2, default=str))
