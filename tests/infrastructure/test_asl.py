"""The state machine as Step Functions will read it: asl-validator (npm, pinned in infra/asl/package.json) checks the
generated definition and the one inside the synthesized template, ARNs and paths included."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from shared.pipeline.asl import state_machine
from shared.pipeline.definition import PIPELINE

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "infra" / "asl" / "node_modules" / ".bin" / "asl-validator"
ACCOUNT = "arn:aws:lambda:eu-west-1:123456789012:function:"


def validate(definition: dict, tmp_path: Path, name: str = "definition.json") -> subprocess.CompletedProcess:
    if not VALIDATOR.exists():
        pytest.skip(f"{VALIDATOR} is not installed: `make test` installs it (npm ci --prefix infra/asl)")
    path = tmp_path / name
    path.write_text(json.dumps(definition))
    return subprocess.run([str(VALIDATOR), "--json-path", str(path)], capture_output=True, text=True, timeout=120)


def _resolved(token) -> str:
    """A CloudFormation token in the template's definition as a value of its kind: a function's ARN, a name."""
    if isinstance(token, str):
        return token
    (fn, arg), = token.items()
    if fn == "Fn::GetAtt" and arg[1] == "Arn":
        return ACCOUNT + arg[0]
    if fn == "Ref":
        return arg
    return "resolved-" + fn.removeprefix("Fn::").lower()


def test_the_generated_definition_is_valid_states_language(tmp_path):
    resources = {s.name: ACCOUNT + s.name for s in PIPELINE if s.runtime != "sagemaker"} | {"start": ACCOUNT + "start"}
    result = validate(state_machine(resources), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_synthesized_templates_definition_is_valid_states_language(synthesized, tmp_path):
    _, template = synthesized
    (sm,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    text = "".join(_resolved(p) for p in sm["Properties"]["DefinitionString"]["Fn::Join"][1])
    result = validate(json.loads(text), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_state_names_are_unique_across_the_machine_nested_ones_included(tmp_path):
    names: list[str] = []

    def walk(states: dict) -> None:
        for name, state in states.items():
            names.append(name)
            if "ItemProcessor" in state:
                walk(state["ItemProcessor"]["States"])

    walk(state_machine()["States"])
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert {"fetch batch", "predict horizon"} <= set(names)


def test_the_validator_refuses_a_repeated_state_name(tmp_path):
    """The check can fail: a Map whose item task is named as the Map itself (what Step Functions refuses)."""
    d = copy.deepcopy(state_machine())
    processor = d["States"]["predict"]["ItemProcessor"]
    processor["States"]["predict"] = processor["States"].pop("predict horizon")
    processor["StartAt"] = "predict"
    result = validate(d, tmp_path)
    assert result.returncode != 0 and "DUPLICATE_STATE_NAMES" in result.stdout + result.stderr


def test_make_synth_writes_the_template_from_the_repository_alone(tmp_path):
    """`make synth` as the README shows it: the app reads cdk.json's context itself (no CDK CLI here)."""
    if not (ROOT / ".venv" / ".installed-test").exists():
        pytest.skip("make synth runs in the project's own .venv (make test creates it)")
    out = tmp_path / "cdk.out"
    result = subprocess.run(["make", "--no-print-directory", "synth", f"CDK_OUT={out}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    template = json.loads((out / "cst-dev.template.json").read_text())
    assert any(r["Type"] == "AWS::StepFunctions::StateMachine" for r in template["Resources"].values())
    assert f"wrote {out / 'cst-dev.template.json'}" in result.stdout
