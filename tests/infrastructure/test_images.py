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
    assert installs == ['RUN pip install --no-cache-dir "${LAMBDA_TASK_ROOT}"']  # the project, no extras
    core = {_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert {"numpy", "onnxruntime", "pyarrow", "ta-lib", "aws-lambda-powertools"} <= core
    assert not core & TRAINING_ONLY


def test_the_training_image_runs_the_cst_train_entry_point():
    dockerfile = (ROOT / "infra" / "docker" / "training.Dockerfile").read_text()
    assert '".[training]"' in dockerfile and "python -m services.training.train" in dockerfile
