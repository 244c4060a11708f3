"""The one pipeline definition: the runner, the Lambda handlers, the CLI and the state machine all follow it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from services import cli
from services.orchestrator import handlers, runner
from services.orchestrator.entries import ENTRIES
from shared.pipeline.asl import state_machine, state_order
from shared.pipeline.contracts import RunRef
from shared.pipeline.definition import PIPELINE, STEPS

ROOT = Path(__file__).resolve().parents[1]


def test_runner_handlers_cli_and_state_machine_name_the_same_steps_in_the_same_order(monkeypatch):
    names = [s.name for s in PIPELINE]
    visited: list[str] = []
    calls: list[str] = []

    def record(ctx, name, ref, item=None):
        calls.append(name)
        return STEPS[name].output_model()(run_id=ref.run_id, horizon=item or "", quality_key="")

    # The runner's walk with every step recorded instead of run, and every condition true.
    monkeypatch.setattr(runner, "run_step", record)
    monkeypatch.setattr(runner, "should_run", lambda ctx, step, ref: True)
    from types import SimpleNamespace

    from shared.settings import Settings

    runner.run_pipeline(SimpleNamespace(settings=Settings(_env_file=None)), RunRef(run_id="r", as_of="2024-05-01T00:00:00Z", source="x", horizons=["24h", "7d"],
                                                                              batches=["0", "1"]),
                        on_step=visited.append)
    assert visited == names
    assert list(dict.fromkeys(calls)) == names
    lambda_steps = [s.name for s in PIPELINE if s.runtime != "sagemaker"]
    assert list(handlers.HANDLERS) == lambda_steps
    assert all(getattr(handlers, n) is handlers.HANDLERS[n] for n in lambda_steps)
    assert state_order(state_machine()) == names
    step_cmd = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["step"]._actions
                    if a.dest == "name")
    assert list(step_cmd.choices) == names


def test_every_step_has_its_function_in_its_service():
    """The entries table binds each step of the definition, and only those, to the function of the service that owns
    it; each entry imports that function when the step runs (read from its source, then imported here)."""
    import importlib
    import inspect

    assert list(ENTRIES) == [s.name for s in PIPELINE]
    owner = {"fetch": "services.ingest", "ingest": "services.ingest", "validate": "services.features",
             "features": "services.features", "train": "services.training", "predict": "services.predict",
             "risk": "services.risk", "books": "services.books", "outcomes": "services.predict", "performance": "services.predict",
             "drift": "services.predict", "retrain": "services.training", "summary": "services.orchestrator.summary"}
    for step in PIPELINE:
        (imp,) = [n for n in ast.walk(ast.parse(inspect.getsource(ENTRIES[step.name])))
                  if isinstance(n, ast.ImportFrom)]
        fn = getattr(importlib.import_module(imp.module), imp.names[0].name)
        assert callable(fn) and fn.__module__.startswith(owner[step.name]), (step.name, fn.__module__)
        assert step.output_model().__name__ == step.output


def test_no_second_list_of_steps_in_the_code():
    """Only the definition spells the order of the steps; the rest reads PIPELINE (the entries table binds names to
    functions and is checked against PIPELINE above)."""
    names = [s.name for s in PIPELINE]
    offenders = []
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]:
        if path == ROOT / "shared" / "pipeline" / "definition.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.List, ast.Tuple)):
                strings = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if len(set(strings) & set(names)) >= 4 and {"ingest", "predict"} <= set(strings):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {strings}")
    assert not offenders, offenders


def test_state_machine_shape():
    d = state_machine({"predict": "arn:aws:lambda:eu-west-1:123456789012:function:predict"})
    states = d["States"]
    assert states["predict"]["Type"] == "Map" and states["predict"]["ItemsPath"] == "$.horizons"
    assert "MaxConcurrency" not in states["predict"]  # horizons side by side
    # A live run's symbol batches one after another: the exchange's rate limit is per client.
    assert states["fetch"]["Type"] == "Map" and states["fetch"]["ItemsPath"] == "$.batches"
    assert states["fetch"]["MaxConcurrency"] == 1 and states["fetch"]["Next"] == "ingest"
    inner = states["predict"]["ItemProcessor"]["States"]["predict horizon"]
    assert inner["Parameters"]["FunctionName"].endswith(":function:predict")
    # Conditional retraining: a Choice on the drift step's output, skipping to the summary otherwise.
    assert states["drift"]["Next"] == "retrain?" and states["drift"]["ResultPath"] == "$.run.drift"
    assert states["retrain?"]["Default"] == "summary"
    assert states["retrain"]["Resource"].startswith("arn:aws:states:::sagemaker:")
    # Every task but the summary is caught and routed to the summary with the failed step named.
    for name in (s.name for s in PIPELINE[:-1]):
        assert states[name]["Catch"][0]["Next"] == f"{name} failed"
        assert states[f"{name} failed"]["Next"] == "summary"
    assert states["ingest"]["Retry"][0]["ErrorEquals"][0] == handlers.TransientStepError.__name__


@pytest.mark.parametrize("code,transient", [("server_error", True), ("feature_mismatch", False)])
def test_handlers_raise_retryable_codes_as_the_transient_error(monkeypatch, code, transient, lambda_context):
    from shared.errors import CstError

    def boom(*_a, **_k):
        raise CstError(code, "x")

    monkeypatch.setattr(handlers, "execute", boom)
    monkeypatch.setattr(handlers, "_context", lambda _secrets=False: None)
    event = {"run_id": "r", "as_of": "2024-05-01T00:00:00Z", "source": "x", "horizons": ["24h"]}
    with pytest.raises(handlers.TransientStepError if transient else CstError):
        handlers.HANDLERS["ingest"](event, lambda_context)


def test_the_runner_runs_fetch_batches_one_at_a_time_and_horizons_side_by_side(monkeypatch):
    import threading
    import time as clock
    from types import SimpleNamespace

    from shared.settings import Settings

    lock, running, most = threading.Lock(), {}, {}

    def record(ctx, name, ref, item=None):
        with lock:
            running[name] = running.get(name, 0) + 1
            most[name] = max(most.get(name, 0), running[name])
        clock.sleep(0.05)
        with lock:
            running[name] -= 1
        return STEPS[name].output_model()(run_id=ref.run_id, horizon=item or "", quality_key="")

    monkeypatch.setattr(runner, "run_step", record)
    monkeypatch.setattr(runner, "should_run", lambda ctx, step, ref: True)
    ref = RunRef(run_id="r", as_of="2024-05-01T00:00:00Z", source="live", horizons=["1h", "24h"],
                 batches=["0", "1", "2", "3"])
    runner.run_pipeline(SimpleNamespace(settings=Settings(_env_file=None)), ref)
    assert most["fetch"] == 1 and most["predict"] == 2


def test_retries_live_in_one_layer_per_runtime(monkeypatch, lambda_context):
    """Locally the runner retries a transient failure (sleeping between attempts); a Lambda handler makes one attempt
    and leaves the retry to Step Functions, which the state machine's Retry declares for the same step."""
    from types import SimpleNamespace

    from shared.errors import CstError
    from shared.settings import Settings

    calls = {"n": 0}

    def flaky(ctx, ref):
        calls["n"] += 1
        if calls["n"] == 1:
            raise CstError("server_error", "the exchange answered 502")
        return STEPS["ingest"].output_model()(run_id=ref.run_id)

    monkeypatch.setitem(ENTRIES, "ingest", flaky)
    slept: list[float] = []
    monkeypatch.setattr(runner.time, "sleep", slept.append)
    monkeypatch.setattr(runner.runs, "store_output", lambda lake, out: None)
    ctx = SimpleNamespace(settings=Settings(_env_file=None), output=lambda *a: None, lake=None)
    ref = RunRef(run_id="r", as_of="2024-05-01T00:00:00Z", source="x", horizons=["24h"])
    runner.run_step(ctx, "ingest", ref)
    assert calls["n"] == 2 and slept == [STEPS["ingest"].retry.interval_s]

    calls["n"] = 0
    monkeypatch.setattr(handlers, "_context", lambda _secrets=False: ctx)
    with pytest.raises(handlers.TransientStepError):
        handlers.HANDLERS["ingest"](ref.model_dump(mode="json"), lambda_context)
    assert calls["n"] == 1 and slept == [STEPS["ingest"].retry.interval_s]  # one attempt, no sleep in the Lambda
    retry = state_machine()["States"]["ingest"]["Retry"][0]
    assert retry["ErrorEquals"][0] == handlers.TransientStepError.__name__
    assert retry["MaxAttempts"] == STEPS["ingest"].retry.max_attempts - 1
