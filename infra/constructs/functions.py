"""The Lambda functions: one container image with the serving dependencies, one function per Lambda step (and the
run's start), each with its own role that may touch only what its step needs."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import (
    Duration,
    RemovalPolicy,
    Stack,
    aws_iam as iam,
    aws_lambda as lambda_,
    aws_logs as logs,
    aws_secretsmanager as secretsmanager,
)
from constructs import Construct

from infra.constructs import (
    NO_VPC,
    PLAIN_ENVIRONMENT,
    PLAIN_LOGS,
    REDUNDANT_DEPENDS_ON,
    SYNC_INVOKED,
    acknowledge,
    checkov_acknowledge,
    lint_acknowledge,
)
from infra.constructs.lake import LakeBucket
from shared.pipeline.asl import START
from shared.pipeline.definition import PIPELINE, STEPS
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# What the serving image's build context holds: the project's code and its dependency list, nothing else.
IMAGE_EXCLUDE = [".venv", ".venv-checkov", ".git", "cdk.out", "lake", "tests", "benchmarks", "infra", "**/__pycache__",
                 ".ci", ".pytest_cache", "htmlcov", "build", "**/node_modules"]
# Steps whose work is network-bound fetching or small bookkeeping get less memory than the array-heavy ones. The
# ingest step's cold import of 1,000 coins' files peaks at ~1.94 GB (bench_scale): 3,008 MB leaves a margin.
MEMORY_MB = {"fetch": 2048, "ingest": 3008, "validate": 3008, "features": 3008, "predict": 3008}


def reserved_concurrency(name: str, horizons: int) -> int:
    """How many of a step's functions may run at once, from the pipeline's arithmetic: one execution per cycle and
    action (the operators' guard), a Map over horizons runs one per horizon side by side, a Map over batches one at
    a time; twice that for a retry or a retrain overlapping the hourly run. Beyond it Lambda throttles and the
    state machine retries: runaway starts cannot scale the bill."""
    step = STEPS.get(name)
    at_once = horizons if step is not None and step.map_over == "horizons" else 1
    return 2 * at_once


def serving_image(handler: str, extras: str = "") -> lambda_.DockerImageCode:
    """The serving image with `handler` (a dotted path) as the function's command; functions with the same `extras`
    (the project's optional dependencies, e.g. "[api]") share one build."""
    return lambda_.DockerImageCode.from_image_asset(str(ROOT), file="infra/docker/serving.Dockerfile",
                                                    exclude=IMAGE_EXCLUDE, cmd=[handler],
                                                    build_args={"EXTRAS": extras} if extras else None)


class StepFunctions(Construct):
    def __init__(self, scope: Construct, cid: str, *, lake: LakeBucket, secret: secretsmanager.ISecret,
                 environment: dict[str, str], timeout_minutes: int) -> None:
        super().__init__(scope, cid)
        self.functions: dict[str, lambda_.DockerImageFunction] = {}
        names = [START] + [s.name for s in PIPELINE if s.runtime != "sagemaker"]
        for name in names:
            log_group = logs.LogGroup(self, f"{name}Logs", retention=logs.RetentionDays.THREE_MONTHS,
                                      removal_policy=RemovalPolicy.DESTROY)
            role = iam.Role(self, f"{name}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                            description=f"cst {name} step")
            # Its own log group only (no managed policy granting logs on every group).
            log_group.grant_write(role)
            fn = lambda_.DockerImageFunction(
                self, name, role=role, log_group=log_group,
                code=serving_image(f"services.orchestrator.handlers.{name}"),
                memory_size=MEMORY_MB.get(name, 1024), timeout=Duration.minutes(timeout_minutes),
                reserved_concurrent_executions=reserved_concurrency(name, len(Settings().horizons)),
                tracing=lambda_.Tracing.ACTIVE,
                environment={**environment, "POWERTOOLS_SERVICE_NAME": "cst", "POWERTOOLS_METRICS_NAMESPACE": "cst"})
            lake_findings = lake.grant(role, write=True)
            if name in STEPS and STEPS[name].secrets:
                # Only the step that calls exchanges and data vendors reads their credentials.
                secret.grant_read(role)
            acknowledge(role, "AwsSolutions-IAM5",
                        "Objects inside the one lake bucket (bucket/*: the lake's keys are per run and per date), and "
                        "X-Ray segment writes, which take no resource (xray:PutTraceSegments on *).",
                        lake_findings + ["Resource::*"])
            lint_acknowledge(fn, "W3005", REDUNDANT_DEPENDS_ON)
            for check, reason in (("CKV_AWS_116", SYNC_INVOKED), ("CKV_AWS_117", NO_VPC),
                                  ("CKV_AWS_173", PLAIN_ENVIRONMENT)):
                checkov_acknowledge(fn, check, reason)
            checkov_acknowledge(log_group, "CKV_AWS_158", PLAIN_LOGS)
            self.functions[name] = fn
        self.region = Stack.of(self).region
