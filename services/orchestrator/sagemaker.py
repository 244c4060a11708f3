"""The SageMaker training job's entry point: the lake's URI and the run come as hyperparameters. Started by the state
machine (hyperparameter `step`), it runs that pipeline step of the stored run exactly as `cst step` does; otherwise it
trains as `cst train` does. Versions are published through the gate of that lake's registry; metrics go to
SM_OUTPUT_DATA_DIR. Step Functions retries the task (the step makes one attempt here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from services.orchestrator.runner import execute
from services.training.train import train
from shared.errors import CstError
from shared.pipeline.context import StepContext
from shared.records import ModelMetadata
from shared.runs import load_ref
from shared.settings import Settings
from shared.storage import open_lake


def main() -> int:
    """SageMaker training job: the lake's URI and the run whose stored series to train on come as hyperparameters;
    versions are published through the gate of that lake's registry. Metrics go to SM_OUTPUT_DATA_DIR."""
    hps = json.loads(os.environ.get("SM_HPS", "{}") or "{}")
    hp_file = Path(os.environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")) / "hyperparameters.json"
    if not hps and hp_file.is_file():
        hps = json.loads(hp_file.read_text())
    if not hps.get("run_id"):
        raise CstError("missing_hyperparameter", "the training job needs hyperparameter run_id (the run whose "
                                                 "stored series to train on) and lake (its URI)")
    settings = Settings()
    lake = open_lake(str(hps.get("lake") or settings.lake.uri), region=settings.aws_region)
    out = Path(os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
    out.mkdir(parents=True, exist_ok=True)
    if hps.get("step"):
        # Started by the state machine: the pipeline's training step for the stored run, exactly as `cst step`
        # runs it (its output lands in the lake where the next steps read it).
        ref = load_ref(lake, str(hps["run_id"]))
        result = execute(StepContext(settings, lake), str(hps["step"]), ref)
        (out / "metrics.json").write_text(result.model_dump_json(indent=2))
        return 0
    horizons = [h for h in str(hps.get("horizons", "")).split(",") if h] or None
    results = train(settings, lake, str(hps["run_id"]), until=hps.get("until") or None, horizons=horizons,
                    budget=str(hps.get("budget", "quick")))
    (out / "metrics.json").write_text(json.dumps({h: m.metrics if isinstance(m, ModelMetadata) else m.model_dump()
                                                  for h, m in results.items()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
