"""The state machine, generated from the one pipeline definition, and the SageMaker training job it starts."""

from __future__ import annotations

import json

from aws_cdk import (
    Aws,
    RemovalPolicy,
    Stack,
    aws_ecr_assets as ecr_assets,
    aws_iam as iam,
    aws_lambda as lambda_,
    aws_logs as logs,
    aws_stepfunctions as sfn,
)
from constructs import Construct

from infra.constructs import (
    PLAIN_LOGS,
    REDUNDANT_DEPENDS_ON,
    acknowledge,
    checkov_acknowledge,
    lint_acknowledge,
    logical_ref,
)
from infra.constructs.functions import IMAGE_EXCLUDE, ROOT
from infra.constructs.lake import LakeBucket
from shared.pipeline.asl import state_machine
from shared.pipeline.definition import PIPELINE


class Pipeline(Construct):
    def __init__(self, scope: Construct, cid: str, *, lake: LakeBucket, functions: dict[str, lambda_.IFunction],
                 training: dict, lake_uri: str) -> None:
        super().__init__(scope, cid)
        image = ecr_assets.DockerImageAsset(self, "TrainingImage", directory=str(ROOT),
                                            file="infra/docker/training.Dockerfile", exclude=IMAGE_EXCLUDE)
        self.training_role = iam.Role(self, "TrainingRole", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
                                      description="cst training job: reads and publishes through the lake")
        lake_findings = lake.grant(self.training_role, write=True)
        image.repository.grant_pull(self.training_role)
        self.training_role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=[f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/TrainingJobs*"]))
        self.training_role.add_to_policy(iam.PolicyStatement(actions=["cloudwatch:PutMetricData"], resources=["*"],
                                                             conditions={"StringEquals": {"cloudwatch:namespace":
                                                                                          "/aws/sagemaker/TrainingJobs"}}))
        job = {
            # The same entry point as `cst train` (services.training.train); it runs the run's training step.
            "AlgorithmSpecification": {"TrainingImage": image.image_uri, "TrainingInputMode": "File"},
            "RoleArn": self.training_role.role_arn,
            "OutputDataConfig": {"S3OutputPath": lake.bucket.s3_url_for_object("sagemaker-output")},
            "ResourceConfig": {"InstanceCount": 1, "InstanceType": training["instance_type"],
                               "VolumeSizeInGB": training["volume_gb"]},
            "StoppingCondition": {"MaxRuntimeInSeconds": training["max_runtime_s"]},
            "Environment": {"CST_LAKE__URI": lake_uri},
            "TrainingJobName.$": "States.Format('cst-{}', States.UUID())",
        }
        resources: dict = {name: fn.function_arn for name, fn in functions.items()}
        resources.update({s.name: job for s in PIPELINE if s.runtime == "sagemaker"})
        log_group = logs.LogGroup(self, "ExecutionLogs", retention=logs.RetentionDays.THREE_MONTHS,
                                  removal_policy=RemovalPolicy.DESTROY)
        checkov_acknowledge(log_group, "CKV_AWS_158", PLAIN_LOGS)
        self.state_machine = sfn.StateMachine(
            self, "StateMachine", state_machine_type=sfn.StateMachineType.STANDARD, tracing_enabled=True,
            definition_body=sfn.DefinitionBody.from_string(json.dumps(state_machine(resources))),
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True))
        lint_acknowledge(self.state_machine, "W3005", REDUNDANT_DEPENDS_ON)
        role = self.state_machine.role
        for fn in functions.values():
            fn.grant_invoke(role)
        stack = Stack.of(self)
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                     "sagemaker:AddTags"],
            resources=[stack.format_arn(service="sagemaker", resource="training-job", resource_name="cst-*")]))
        # `.sync` waits through a managed EventBridge rule.
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[stack.format_arn(service="events", resource="rule",
                                        resource_name="StepFunctionsGetEventsForSageMakerTrainingJobsRule")]))
        self.training_role.grant_pass_role(role)
        acknowledge(role, "AwsSolutions-IAM5",
                    "Invoking each step function's versions and aliases (function:*), training jobs named cst-* (names "
                    "are generated per run), and the log-delivery and X-Ray actions Step Functions needs on '*'.",
                    [f"Resource::{logical_ref(fn)}:*"
                     for fn in functions.values()]
                    + [f"Resource::arn:<AWS::Partition>:sagemaker:{stack.region}:<AWS::AccountId>:training-job/cst-*",
                       "Resource::*"])
        acknowledge(self.training_role, "AwsSolutions-IAM5",
                    "Objects inside the lake bucket, SageMaker's own training-job log groups "
                    "(/aws/sagemaker/TrainingJobs*), and PutMetricData (no resource; limited by a namespace condition).",
                    lake_findings + ["Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
                                     "/aws/sagemaker/TrainingJobs*", "Resource::*"])
