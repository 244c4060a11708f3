"""The state machine executed end to end, offline: moto's Step Functions interpreter runs the definition taken from
the synthesized CDK template (the JSON that deploys) against moto S3, every Lambda task running the real handler in process, on a slice of the recorded files.

moto (pinned) executes Task/Choice/Map/Retry/Catch for real; its Lambda backend only echoes, so its one `invoke`
method is replaced to call our handlers (a test below fails if that method's signature changes). moto's interpreter
rejects `createTrainingJob.sync` and its SageMaker only records jobs: the training states are pointed at a stand-in
function that runs the training job's own entry point (`services.orchestrator.sagemaker.main`) in process on the moto lake, with the
hyperparameters the state machine passes. Afterwards the lake must hold what `cst run` writes for the same as-of.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import FakeLambdaContext, daily_source

pytest.importorskip("moto")
pytest.importorskip("torch")

REGION = "eu-west-1"
BUCKET = "cst-lake"
AS_OF = "2024-06-20T00:00:00Z"
LATER = "2024-06-24T00:00:00Z"
COINS = ("BTC", "ETH", "XRP", "LTC", "ADA")
TINY = {"quick": {"folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1}, "timeout_s": 120, "epochs": 1,
                  "gbt_max_estimators": 50}}


def test_moto_lambda_invoke_still_has_the_signature_we_replace():
    from moto.awslambda_simple.models import LambdaSimpleBackend

    assert list(inspect.signature(LambdaSimpleBackend.invoke).parameters) == [
        "self", "function_name", "qualifier", "body", "headers", "response_headers"]


def slice_source(shared_data: Path, dest: Path) -> Path:
    return daily_source(shared_data, dest, COINS)


def _settings_env(monkeypatch, lake_uri: str) -> None:
    monkeypatch.setenv("CST_LAKE__URI", lake_uri)
    monkeypatch.setenv("CST_AWS_REGION", REGION)
    monkeypatch.setenv("CST_HORIZONS", '["24h", "7d"]')
    monkeypatch.setenv("CST_TRAINING__BUDGETS", json.dumps(TINY))
    monkeypatch.setenv("CST_TRAINING__CALIBRATION_GRID", "64")
    monkeypatch.setenv("CST_RUN__RETRAIN_BUDGET", "quick")
    from shared.settings import get_settings

    get_settings.cache_clear()


def sagemaker_local(event: dict, context) -> dict:
    """Stand-in for the SageMaker training job: its entry point, in process, with the state's hyperparameters."""
    import os

    from services.orchestrator.sagemaker import main as sagemaker_main

    os.environ["SM_HPS"] = json.dumps(event["HyperParameters"])
    os.environ["SM_OUTPUT_DATA_DIR"] = os.environ["CST_TEST_SM_OUT"]
    try:
        sagemaker_main()
    finally:
        del os.environ["SM_HPS"]
    return {"TrainingJobStatus": "Completed"}


class Machine:
    """moto's Step Functions with our handlers behind its Lambda invoke; `faults` wrap handlers per test."""

    def __init__(self, faults: dict | None = None):
        from services.orchestrator import handlers

        self.functions = {"start": handlers.start, **handlers.HANDLERS, "sagemaker-local": sagemaker_local}
        self.calls: dict[str, int] = {}
        self.faults = faults or {}

    def invoke(self, backend, function_name, qualifier, body, headers, response_headers):
        name = function_name.split(":")[-1]
        self.calls[name] = self.calls.get(name, 0) + 1
        event = json.loads(body) if body else {}
        try:
            fault = self.faults.get(name)
            if fault is not None:
                fault(event, self.calls[name])
            result = self.functions[name](event, FakeLambdaContext(name))
        except Exception as exc:  # noqa: BLE001 - the error goes back to the interpreter as Lambda reports it
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
        return json.dumps(result).encode()


def definition_for(template: dict, arns: dict[str, str]) -> dict:
    """The state machine exactly as the synthesized template deploys it, its substitutions resolved: each step
    function's ARN to the moto function of the same handler; the training states to the local stand-in."""
    from shared.pipeline.asl import SAGEMAKER_SYNC

    handler_of = {lid: res["Properties"]["ImageConfig"]["Command"][0].removeprefix("services.orchestrator.handlers.")
                  for lid, res in template["Resources"].items() if res["Type"] == "AWS::Lambda::Function"}
    (machine,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]

    def resolve(part) -> str:
        if isinstance(part, str):
            return part
        if "Fn::GetAtt" in part and part["Fn::GetAtt"][0] in handler_of:
            return arns[handler_of[part["Fn::GetAtt"][0]]]
        return "resolved-elsewhere"  # image URI, roles, bucket: parameters of the training job only

    doc = json.loads("".join(resolve(p) for p in machine["Properties"]["DefinitionString"]["Fn::Join"][1]))
    for state in doc["States"].values():
        if state.get("Resource") == SAGEMAKER_SYNC:
            hps = state["Parameters"]["HyperParameters"]
            state["Resource"] = "arn:aws:states:::lambda:invoke"
            state["Parameters"] = {"FunctionName": arns["sagemaker-local"], "Payload": {"HyperParameters": hps}}
    return doc


def execute(machine: Machine, name: str, run_input: dict, timeout_s: float = 900) -> dict:
    import boto3

    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.start_execution(stateMachineArn=machine.arn, name=name, input=json.dumps(run_input))["executionArn"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        desc = sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            return desc
        time.sleep(0.5)
    raise AssertionError(f"execution {name} still running after {timeout_s} s")


@pytest.fixture
def cloud(monkeypatch, tmp_path, synthesized):
    """moto S3 (the lake), Lambda (our handlers) and Step Functions (the generated definition)."""
    from moto import mock_aws
    from moto.awslambda_simple.models import LambdaSimpleBackend

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("CST_TEST_SM_OUT", str(tmp_path / "sm-output"))
    logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)  # it logs every caught failure
    _settings_env(monkeypatch, f"s3://{BUCKET}")
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        import boto3

        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName="cst", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam = boto3.client("lambda", region_name=REGION)

        def build(faults: dict | None = None) -> Machine:
            machine = Machine(faults)
            monkeypatch.setattr(LambdaSimpleBackend, "invoke", lambda self, *a: machine.invoke(self, *a))
            arns = {}
            for name in machine.functions:
                try:
                    arns[name] = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
                except lam.exceptions.ResourceNotFoundException:
                    arns[name] = lam.create_function(
                        FunctionName=name, Runtime="python3.12", Role=role, Handler=f"services.orchestrator.handlers.{name}",
                        Code={"ZipFile": b"code is in process"})["FunctionArn"]
            sfn = boto3.client("stepfunctions", region_name=REGION)
            machine.arn = sfn.create_state_machine(
                name=f"cst-{len(sfn.list_state_machines()['stateMachines'])}", roleArn=role,
                definition=json.dumps(definition_for(synthesized[1], arns)))["stateMachineArn"]
            return machine

        yield build


def summaries(lake) -> list[dict]:
    return [lake.get_json(k) for k in lake.list("runs/") if k.endswith("/summary.json") and "/steps/" not in k]


def s3_lake():
    from shared.storage import open_lake

    return open_lake(f"s3://{BUCKET}", region=REGION)


def predictions(lake) -> list[dict]:
    import io

    rows = []
    for key in sorted(k for k in lake.list("predictions/") if k.endswith(".parquet")):
        rows += pq.read_table(io.BytesIO(lake.get(key))).to_pylist()
    return sorted(({k: v for k, v in r.items() if k not in ("model_version",)} for r in rows),
                  key=lambda r: (r["horizon"], r["coin"], r["decision_ts"]))


def comparable(summary: dict) -> dict:
    """A summary less what differs between any two runs: timings and model version names."""
    doc = copy.deepcopy(summary)
    doc.pop("timings", None)
    for key in ("trained", "retrained", "models"):
        doc.pop(key, None)
    if doc.get("basket"):
        doc["basket"].pop("model_version", None)
    return doc


def emf_documents(text: str) -> dict[str, list[dict]]:
    """The CloudWatch EMF documents the handlers printed, by step."""
    docs: dict[str, list[dict]] = {}
    for line in text.splitlines():
        if line.startswith('{"_aws"'):
            doc = json.loads(line)
            docs.setdefault(doc["step"], []).append(doc)
    return docs


def test_the_state_machine_writes_what_cst_run_writes(cloud, shared_data, tmp_path, monkeypatch, capsys):
    src = slice_source(shared_data, tmp_path / "data")
    machine = cloud()
    desc = execute(machine, "run-1", {"source": str(src), "as_of": AS_OF})
    assert desc["status"] == "SUCCEEDED", desc
    # Every Lambda step published its EMF metrics: duration, and the counts of its output contract.
    emf = emf_documents(capsys.readouterr().out)
    assert set(emf) == {"start", "ingest", "validate", "features", "predict", "risk", "books", "outcomes",
                        "performance", "drift", "summary"}
    assert [d["Predictions"] for d in emf["predict"]] == [[5.0], [5.0]]
    assert emf["risk"][0]["Actionable"] == [0.0] and emf["features"][0]["Rows"][0] > 0
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "cst" for ds in emf.values() for d in ds)
    lake = s3_lake()
    ref = json.loads(desc["output"]) if desc.get("output") else {}
    (summary,) = summaries(lake)
    assert summary["status"] == "complete" and summary["failures"] == []
    assert machine.calls["sagemaker-local"] == 1  # no model yet: the training state ran, once
    assert machine.calls["predict"] == 2  # the Map over both horizons

    # The same as-of through the local runner (`cst run`), on a folder lake.
    from services.cli import main

    local = tmp_path / "local"
    _settings_env(monkeypatch, str(local))
    assert main(["run", "--source", str(src), "--lake", str(local), "--as-of", AS_OF]) == 0
    from shared.storage import LocalLake

    local_lake = LocalLake(local)
    (local_summary,) = summaries(local_lake)
    assert comparable(local_summary) == comparable(summary)
    assert summary["predictions"] == 10 and summary["coins_predicted"] == 5
    assert len(predictions(lake)) == 10 and predictions(local_lake) == predictions(lake)
    assert ref["run_id"] == summary["run_id"]  # the execution's final state is the run
    # The books step of the state machine moved both paper books exactly as the local runner's did.
    from services.books import store

    for book in ("signals", "research"):
        cloud_book, local_book = store.load_state(lake, book), store.load_state(local_lake, book)
        assert cloud_book is not None and cloud_book.marks
        assert cloud_book.model_dump(exclude={"runs"}) == local_book.model_dump(exclude={"runs"})


def test_a_transient_error_is_retried_and_a_failed_horizon_does_not_stop_the_others(cloud, shared_data, tmp_path):
    from services.orchestrator.handlers import TransientStepError
    from shared.errors import CstError

    src = slice_source(shared_data, tmp_path / "data")

    def flaky_features(_event, attempt):
        if attempt == 1:
            raise TransientStepError("[server_error] the store answered 503")

    def broken_7d(event, _attempt):
        if event.get("item") == "7d":
            raise CstError("feature_mismatch", "model 7d was trained on other features; retrain")

    machine = cloud({"features": flaky_features, "predict": broken_7d})
    desc = execute(machine, "run-faults", {"source": str(src), "as_of": AS_OF})
    assert desc["status"] == "SUCCEEDED", desc
    assert machine.calls["features"] == 2  # retried once, then it worked
    lake = s3_lake()
    (summary,) = summaries(lake)
    assert summary["status"] == "failed"
    assert summary["failures"] == [{"step": "predict", "item": "7d", "code": "feature_mismatch",
                                    "message": "model 7d was trained on other features; retrain"}]
    landed = {r["horizon"] for r in predictions(lake)}
    assert landed == {"24h"}  # the other horizon landed


def test_the_weekly_retrain_runs_the_retraining_job_through_the_gate(cloud, shared_data, tmp_path):
    src = slice_source(shared_data, tmp_path / "data")
    machine = cloud()
    assert execute(machine, "first", {"source": str(src), "as_of": AS_OF})["status"] == "SUCCEEDED"
    lake = s3_lake()
    from shared.registry import current_version

    before = {h: current_version(lake, h) for h in ("24h", "7d")}
    # The weekly schedule's input: every horizon is retrained, drift or not.
    desc = execute(machine, "later", {"source": str(src), "as_of": LATER, "retrain": True})
    assert desc["status"] == "SUCCEEDED", desc
    assert machine.calls["sagemaker-local"] == 2  # first training, then the retraining job
    later = [k for k in lake.list("runs/") if k.endswith("/steps/retrain.json")]
    assert len(later) == 1
    retrain = lake.get_json(later[0])
    assert set(retrain["trained"]) == {"24h", "7d"}
    for h in ("24h", "7d"):
        version = retrain["trained"][h]
        meta = lake.get_json(f"models/horizon={h}/version={version}/metadata.json")
        assert meta["gate"]["previous"] == before[h]  # judged against the version it would replace
        assert current_version(lake, h) == (version if meta["gate"]["promote"] else before[h])
