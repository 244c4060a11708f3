"""One run per cycle: the terminal, the schedule (through the start handler), and the dashboard's "Start a run" name
the same cycle with the same run id, whatever minute of the hour each was started at."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared import runs
from shared.storage import LocalLake

STARTED = datetime(2024, 5, 1, 12, 37, 41, tzinfo=UTC)  # the moment the terminal and the dashboard start the run
SCHEDULED = "2024-05-01T12:05:00Z"  # the hourly schedule fires five minutes past the hour


def test_the_same_cycle_from_every_face_is_one_run(tmp_path, monkeypatch, lambda_context):
    from services import cli
    from services.orchestrator import handlers, runner, usecases
    from shared.pipeline.contracts import RunStart
    from shared.settings import Settings, get_settings

    lake_dir = tmp_path / "lake"
    monkeypatch.setattr(runs, "utcnow", lambda: STARTED)
    monkeypatch.setenv("CST_LAKE__URI", str(lake_dir))
    get_settings.cache_clear()

    # The schedule: EventBridge Scheduler sends its scheduled time to the start handler.
    scheduled = handlers.start({"source": "live", "as_of": SCHEDULED}, lambda_context)["run_id"]
    # The terminal, without --as-of (now): one step of the run, so nothing is fetched.
    assert cli.main(["step", "summary", "--source", "live", "--lake", str(lake_dir)]) == 0
    # The dashboard's action on this machine (the run itself is not the point here).
    monkeypatch.setattr(runner, "run_pipeline", lambda ctx, ref, on_step=None: None)
    dashboard = usecases.start_in_background(Settings(_env_file=None), LocalLake(lake_dir), RunStart(source="live"))

    stored = sorted({k.split("/")[1] for k in LocalLake(lake_dir).list(runs.RUNS)})
    assert stored == [f"run_id={scheduled}"] and dashboard == scheduled
    assert scheduled.startswith("20240501T120000Z-")  # the cycle: the close of the hour's candle
    get_settings.cache_clear()


def test_a_cycle_is_the_close_of_the_shortest_timeframes_candle():
    from shared.contracts import iso_to_ms
    from shared.settings import Settings

    cfg = Settings(_env_file=None)
    hour = iso_to_ms("2024-05-01T12:00:00Z")
    assert {runs.cycle_as_of(cfg, hour + m * 60_000) for m in (0, 5, 37, 59)} == {hour}
    assert runs.cycle_as_of(cfg, hour + 3_600_000) == hour + 3_600_000
    daily_only = cfg.model_copy(update={"timeframes": ["1d"]})
    assert runs.cycle_as_of(daily_only, hour) == iso_to_ms("2024-05-01T00:00:00Z")


def test_an_operators_second_start_of_a_running_cycle_is_refused_on_one_machine(tmp_path, monkeypatch):
    """One execution per (cycle, action): while this cycle's run runs, a second start names it instead of starting
    another; a retrain of the same cycle is another action; once the run ended, a start goes ahead."""
    import threading

    from services.orchestrator import runner, usecases
    from shared.pipeline.contracts import RunStart
    from shared.settings import Settings
    from shared.storage import LocalLake

    release, calls = threading.Event(), []
    monkeypatch.setattr(runner, "run_pipeline", lambda ctx, ref: (calls.append(ref.run_id), release.wait(10)))
    settings, lake = Settings(_env_file=None), LocalLake(tmp_path)
    first = usecases.start_in_background(settings, lake, RunStart(source="live"))
    with pytest.raises(usecases.AlreadyRunning) as refused:
        usecases.start_in_background(settings, lake, RunStart(source="live"))
    assert refused.value.running == first
    usecases.start_in_background(settings, lake, RunStart(source="live", retrain=True, retrain_only=["7d"]))
    release.set()
    for t in threading.enumerate():
        if t.name.startswith(first):
            t.join(10)
    assert usecases.start_in_background(settings, lake, RunStart(source="live")) == first and len(calls) == 3
