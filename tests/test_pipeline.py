"""The one pipeline definition: the runner, the Lambda handlers, the CLI and the state machine all follow it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from services import cli, handlers, runner
from shared.pipeline import PIPELINE, STEPS, RunRef, state_machine, state_order

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


def test_every_entry_resolves_to_a_function_of_its_service():
    for step in PIPELINE:
        fn = runner.resolve(step.entry)
        assert callable(fn) and fn.__name__ == step.entry.split(":")[1]
        assert step.output_model().__name__ == step.output


def test_no_second_list_of_steps_in_the_code():
    """Only shared/pipeline.py spells the order of the steps; the rest reads PIPELINE."""
    names = [s.name for s in PIPELINE]
    offenders = []
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]:
        if path.name == "pipeline.py" and path.parent.name == "shared":
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

    monkeypatch.setattr(handlers, "run_step", boom)
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
