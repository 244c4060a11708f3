"""The synthesized CDK template: every resource the design names, least privilege, schedules and their targets."""

from __future__ import annotations

import json

import pytest

from shared.pipeline.asl import START, state_order
from shared.pipeline.definition import PIPELINE

LAMBDA_STEPS = [START] + [s.name for s in PIPELINE if s.runtime != "sagemaker"]


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def function_ids(template: dict, *, steps_only: bool = True) -> dict[str, str]:
    """Step name -> logical id of its Lambda function (its image command names the handler); the alerts function
    with `steps_only=False` (it is checked in test_alerts_stack.py, the API function in test_api_stack.py)."""
    out = {}
    for lid, res in resources(template, "AWS::Lambda::Function").items():
        cmd = res["Properties"]["ImageConfig"]["Command"]
        if cmd[0].startswith("services.orchestrator.handlers."):
            name = cmd[0].removeprefix("services.orchestrator.handlers.")
            if name != "alerts" or not steps_only:
                out[name] = lid
    return out


def role_statements(template: dict, role_id: str) -> list[dict]:
    stmts = []
    for res in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in res["Properties"]["Roles"]:
            stmts += res["Properties"]["PolicyDocument"]["Statement"]
    return stmts


def actions_of(stmts: list[dict]) -> set[str]:
    out = set()
    for s in stmts:
        a = s["Action"]
        out.update([a] if isinstance(a, str) else a)
    return out


def test_the_lake_is_encrypted_private_tls_only_versioned_and_ages_raw_data(synthesized):
    _, t = synthesized
    lake = next(r for k, r in resources(t, "AWS::S3::Bucket").items() if k.startswith("LakeBucket"))["Properties"]
    assert lake["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"][
        "SSEAlgorithm"] == "AES256"
    assert lake["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                      "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert lake["VersioningConfiguration"] == {"Status": "Enabled"}
    raw = next(r for r in lake["LifecycleConfiguration"]["Rules"] if r.get("Id") == "raw")
    assert raw["Prefix"] == "raw/" and raw["ExpirationInDays"] == 90
    assert "LoggingConfiguration" in lake
    policies = [p["Properties"]["PolicyDocument"]["Statement"] for p in resources(t, "AWS::S3::BucketPolicy").values()]
    assert all(any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in p)
               for p in policies) and len(policies) == 2


def test_one_image_function_per_lambda_step_each_with_its_own_role(synthesized):
    _, t = synthesized
    ids = function_ids(t)
    assert sorted(ids) == sorted(LAMBDA_STEPS)
    fns = resources(t, "AWS::Lambda::Function")
    roles = {json.dumps(fns[lid]["Properties"]["Role"]) for lid in ids.values()}
    assert len(roles) == len(ids)  # no shared role
    for lid in ids.values():
        p = fns[lid]["Properties"]
        assert p["PackageType"] == "Image" and p["TracingConfig"] == {"Mode": "Active"}
        assert p["Timeout"] == 900 and set(p["Environment"]["Variables"]) >= {"CST_LAKE__URI", "CST_SECRETS_MANAGER_ID"}


def test_only_the_fetch_step_reads_the_secret_and_no_step_may_delete_from_the_lake(synthesized):
    _, t = synthesized
    fns = resources(t, "AWS::Lambda::Function")
    for name, lid in function_ids(t).items():
        role_id = fns[lid]["Properties"]["Role"]["Fn::GetAtt"][0]
        acts = actions_of(role_statements(t, role_id))
        reads_secret = any(a.startswith("secretsmanager:") for a in acts)
        assert reads_secret == (name == "fetch"), name
        # Only the summary step may publish, and only to the alerts topic (test_alerts_stack.py).
        assert ("sns:Publish" in acts) == (name == "summary"), name
        assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket"} <= acts
        assert not any(a.startswith("s3:Delete") or a in ("s3:*", "*") for a in acts), (name, acts)


def test_the_state_machine_is_the_generated_pipeline_with_the_sagemaker_job(synthesized):
    stack, t = synthesized
    (sm,) = resources(t, "AWS::StepFunctions::StateMachine").values()
    parts = sm["Properties"]["DefinitionString"]["Fn::Join"][1]
    # Substitutions (ARNs, image URI, role) become placeholders; the structure is what was generated.
    text = "".join(p if isinstance(p, str) else "PLACEHOLDER" for p in parts)
    definition = json.loads(text)
    assert state_order(definition) == [s.name for s in PIPELINE]
    states = definition["States"]
    assert states["predict"]["Type"] == "Map" and states["predict"]["ItemProcessor"]["ProcessorConfig"]["Mode"] == "INLINE"
    for name in ("train", "retrain"):
        assert states[name]["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
        job = states[name]["Parameters"]
        assert job["HyperParameters"]["step"] == name and job["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
        assert states[f"{name}?"]["Type"] == "Choice"
    assert sm["Properties"]["TracingConfiguration"] == {"Enabled": True}
    assert sm["Properties"]["LoggingConfiguration"]["Level"] == "ALL"


def test_schedules_start_the_state_machine_hourly_and_retrain_weekly(synthesized):
    _, t = synthesized
    (sm_id,) = resources(t, "AWS::StepFunctions::StateMachine")
    schedules = {k: v["Properties"] for k, v in resources(t, "AWS::Scheduler::Schedule").items()}
    assert len(schedules) == 2
    by_input = {json.loads(p["Target"]["Input"]).get("retrain", False): p for p in schedules.values()}
    assert by_input[False]["ScheduleExpression"] == "cron(5 * * * ? *)"
    assert by_input[True]["ScheduleExpression"] == "cron(30 2 ? * SUN *)"
    for p in schedules.values():
        assert p["Target"]["Arn"] == {"Ref": sm_id}
        assert json.loads(p["Target"]["Input"])["as_of"] == "<aws.scheduler.scheduled-time>"
        role_id = p["Target"]["RoleArn"]["Fn::GetAtt"][0]
        assert actions_of(role_statements(t, role_id)) == {"states:StartExecution"}


def test_alarms_on_failed_executions_and_every_function_notify_one_encrypted_topic(synthesized):
    _, t = synthesized
    topics = resources(t, "AWS::SNS::Topic")
    (topic_id,) = [k for k, v in topics.items() if v["Properties"].get("DisplayName") == "cst alarms"]
    assert all("KmsMasterKeyId" in topic["Properties"] for topic in topics.values())
    alarms = resources(t, "AWS::CloudWatch::Alarm").values()
    metrics = sorted(a["Properties"]["MetricName"] for a in alarms)
    # Every step function, the API's and the alerts function's.
    assert metrics.count("ExecutionsFailed") == 1 and metrics.count("Errors") == len(LAMBDA_STEPS) + 2
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": topic_id}] for a in alarms)


def test_users_groups_and_the_api_authorizer(synthesized):
    _, t = synthesized
    (pool_id, pool), = resources(t, "AWS::Cognito::UserPool").items()
    assert pool["Properties"]["MfaConfiguration"] == "ON"
    assert pool["Properties"]["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    groups = {g["Properties"]["GroupName"] for g in resources(t, "AWS::Cognito::UserPoolGroup").values()}
    assert groups == {"viewer", "operator"}
    (auth,) = resources(t, "AWS::ApiGatewayV2::Authorizer").values()
    jwt = auth["Properties"]["JwtConfiguration"]
    assert auth["Properties"]["AuthorizerType"] == "JWT"
    assert pool_id in json.dumps(jwt["Issuer"]) and len(jwt["Audience"]) == 1
    (stage,) = resources(t, "AWS::ApiGatewayV2::Stage").values()
    assert "AccessLogSettings" in stage["Properties"]


@pytest.mark.parametrize("env", ["prod"])
def test_prod_retains_data(env, tmp_path):
    pytest.importorskip("aws_cdk")
    from aws_cdk import App
    from aws_cdk.assertions import Template

    from infra.app import build
    from tests.conftest import Path as _Path

    context = json.loads((_Path(__file__).resolve().parents[2] / "cdk.json").read_text())["context"]
    app = App(outdir=str(tmp_path), context={**context, "env": env, "aws:cdk:bundling-stacks": []})
    template = Template.from_stack(build(app))
    template.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Retain"})


def test_no_function_scales_without_bound_and_the_gateway_throttles_every_route(synthesized):
    """Denial of wallet: every function has a reserved concurrency from the pipeline's arithmetic (a Map over
    horizons one per horizon, twice for an overlapping retry; the API and alerts theirs), and the HTTP API's stage
    throttles every route, pages and sign-in included."""
    from infra.constructs.functions import reserved_concurrency
    from shared.settings import Settings

    _, t = synthesized
    fns = resources(t, "AWS::Lambda::Function")
    assert all("ReservedConcurrentExecutions" in f["Properties"] for f in fns.values())
    steps = function_ids(t)
    assert {n: fns[lid]["Properties"]["ReservedConcurrentExecutions"] for n, lid in steps.items()} == {
        n: reserved_concurrency(n, len(Settings().horizons)) for n in LAMBDA_STEPS}
    assert fns[steps["predict"]]["Properties"]["ReservedConcurrentExecutions"] == 2 * len(Settings().horizons)
    total = sum(f["Properties"]["ReservedConcurrentExecutions"] for f in fns.values())
    assert total <= 100, total  # leaves the account's default 1,000 (and its 100 unreserved) to everything else
    (stage,) = resources(t, "AWS::ApiGatewayV2::Stage").values()
    route = stage["Properties"]["DefaultRouteSettings"]
    assert route["ThrottlingRateLimit"] == 10 and route["ThrottlingBurstLimit"] == 20
