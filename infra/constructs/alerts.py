"""Alerts in the cloud: an encrypted SNS topic the summary step (and the API's test alert) publish each run to, the
alerts function subscribed to it (it alone reads the channels' Apprise URLs from the secret and delivers, once per
decision), and the operators' email and HTTPS subscriptions from the environment's configuration."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constructs import (
    NO_VPC,
    PLAIN_ENVIRONMENT,
    PLAIN_LOGS,
    REDUNDANT_DEPENDS_ON,
    acknowledge,
    checkov_acknowledge,
    lint_acknowledge,
)
from infra.constructs.functions import serving_image
from infra.constructs.lake import LakeBucket


class Alerts(Construct):
    def __init__(self, scope: Construct, cid: str, *, lake: LakeBucket, secret: secretsmanager.ISecret,
                 environment: dict[str, str], emails: list[str], webhooks: list[str]) -> None:
        super().__init__(scope, cid)
        key = kms.Key(self, "TopicKey", enable_key_rotation=True, description="cst alerts topic")
        self.topic = sns.Topic(self, "Topic", master_key=key, enforce_ssl=True, display_name="cst alerts")
        log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.THREE_MONTHS,
                                  removal_policy=RemovalPolicy.DESTROY)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description="cst alerts: reads run summaries, records alerts, reads the channels' URLs")
        log_group.grant_write(role)
        checkov_acknowledge(log_group, "CKV_AWS_158", PLAIN_LOGS)
        # SNS invokes the function asynchronously: a run whose alerts still fail after Lambda's retries is kept here
        # (14 days) instead of being lost, and the alarm on the function's errors says so.
        self.dead_letters = sqs.Queue(self, "DeadLetters", encryption=sqs.QueueEncryption.KMS_MANAGED,
                                      enforce_ssl=True, retention_period=Duration.days(14))
        acknowledge(self.dead_letters, "AwsSolutions-SQS3", "This queue is the alerts function's dead-letter queue.")
        self.function = lambda_.DockerImageFunction(
            self, "Function", role=role, log_group=log_group,
            code=serving_image("services.orchestrator.handlers.alerts"), memory_size=512,
            timeout=Duration.minutes(2), tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=2,  # one run's alerts at a time (and a test alert beside them)
            dead_letter_queue=self.dead_letters,
            environment={**environment, "POWERTOOLS_SERVICE_NAME": "cst", "POWERTOOLS_METRICS_NAMESPACE": "cst"})
        lint_acknowledge(self.function, "W3005", REDUNDANT_DEPENDS_ON)
        checkov_acknowledge(self.function, "CKV_AWS_117", NO_VPC)
        checkov_acknowledge(self.function, "CKV_AWS_173", PLAIN_ENVIRONMENT)
        lake_findings = lake.grant(role, write=True)
        secret.grant_read(role)
        acknowledge(role, "AwsSolutions-IAM5",
                    "Objects inside the one lake bucket (alerts/ and state/alerts/ written per date and channel; run "
                    "summaries read), and X-Ray segment writes, which take no resource.",
                    lake_findings + ["Resource::*"])
        self.topic.add_subscription(subscriptions.LambdaSubscription(self.function))
        for address in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(address))
        for url in webhooks:
            self.topic.add_subscription(subscriptions.UrlSubscription(url, protocol=sns.SubscriptionProtocol.HTTPS))

    def allow_publish(self, fn: lambda_.Function) -> None:
        """A function that publishes runs (or test alerts) to the topic: the ARN in its environment, publish only."""
        self.topic.grant_publish(fn)
        fn.add_environment("CST_ALERTS__TOPIC_ARN", self.topic.topic_arn)
        acknowledge(fn.role, "AwsSolutions-IAM5",
                    "Publishing to the KMS-encrypted alerts topic needs kms:GenerateDataKey* on its one key (CDK's "
                    "grant names the key; the wildcard is in the action's name only).",
                    ["Action::kms:GenerateDataKey*"])
