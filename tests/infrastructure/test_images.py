"""The container images: the serving image installs the core dependencies only, which hold no training library."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINING_ONLY = {"scikit-learn", "torch", "shap", "pandas", "lightgbm", "optuna", "matplotlib", "skl2onnx", "onnx"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0].lower()


def test_the_serving_image_installs_the_core_dependencies_only():
    dockerfile = (ROOT / "infra" / "docker" / "serving.Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    # The project with no extras unless a function's build asks for some (the API function: "[api]").
    assert installs == ['RUN pip install --no-cache-dir "${LAMBDA_TASK_ROOT}${EXTRAS}"']
    assert 'ARG EXTRAS=""' in dockerfile
    core = {_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert {"numpy", "onnxruntime", "pyarrow", "ta-lib", "aws-lambda-powertools"} <= core
    assert not core & TRAINING_ONLY


def test_the_training_image_runs_the_orchestrators_sagemaker_entry_point():
    dockerfile = (ROOT / "infra" / "docker" / "training.Dockerfile").read_text()
    assert '".[training]"' in dockerfile and "python -m services.orchestrator.sagemaker" in dockerfile


def test_only_the_api_function_builds_the_image_with_the_api_extra(synthesized):
    import json

    stack, template = synthesized
    assets = json.loads((Path(stack.node.root.outdir) / f"{stack.artifact_id}.assets.json").read_text())
    images = {k: v["source"] for k, v in assets["dockerImages"].items()}
    api_extra = {k for k, src in images.items() if src.get("dockerBuildArgs", {}).get("EXTRAS") == "[api]"}
    assert len(api_extra) == 1 and len(images) >= 2  # the steps share the image without extras
    # Which function uses which image: the image URI names the asset hash.
    api_functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
                     and next(iter(api_extra)) in json.dumps(r["Properties"]["Code"])]
    assert [f["Properties"]["ImageConfig"]["Command"] for f in api_functions] == [["services.api.lambda_handler.handler"]]
    # The API extra holds what the API imports; the core does not.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["api"]
    assert {"fastapi", "mangum", "pyjwt", "jinja2"} <= {_name(r) for r in extras}
