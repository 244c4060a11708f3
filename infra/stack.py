"""The cst stack of one environment: every construct wired to the others."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.constructs import acknowledge
from infra.constructs.alarms import Alarms
from infra.constructs.alerts import Alerts
from infra.constructs.api import Api
from infra.constructs.functions import StepFunctions
from infra.constructs.lake import LakeBucket
from infra.constructs.pipeline import Pipeline
from infra.constructs.schedules import Schedules
from infra.constructs.users import Users


class CstStack(Stack):
    def __init__(self, scope: Construct, cid: str, *, env_name: str, config: dict, **kwargs) -> None:
        super().__init__(scope, cid, **kwargs)
        retain = bool(config["retain_data"])
        self.lake = LakeBucket(self, "Lake", retain=retain, raw_days=int(config["raw_retention_days"]))
        # The one secret (exchange and data-vendor keys, the alerts' channel URLs) under a key of its own, rotated
        # yearly: its use is logged per key in CloudTrail, and the key's policy is the last word on who decrypts it.
        key = kms.Key(self, "SecretKey", enable_key_rotation=True, description="cst: the exchange and alert secret")
        self.secret = secretsmanager.Secret(
            self, "ExchangeSecret", encryption_key=key,
            description="cst: exchange and data-vendor credentials (JSON, settings field names)")
        acknowledge(self.secret, "AwsSolutions-SMG4",
            "Exchange and data-vendor API keys are issued and rotated at the exchange by the account owner; "
                   "no rotation function can mint new ones.")
        lake_uri = f"s3://{self.lake.bucket.bucket_name}"
        # The API reads no secret: only the steps are told where it is.
        environment = {"CST_LAKE__URI": lake_uri, "CST_AWS_REGION": self.region, "CST_ENV": env_name}
        self.steps = StepFunctions(self, "Steps", lake=self.lake, secret=self.secret,
                                   environment={**environment, "CST_SECRETS_MANAGER_ID": self.secret.secret_arn},
                                   timeout_minutes=int(config["lambda_timeout_minutes"]))
        self.pipeline = Pipeline(self, "Pipeline", lake=self.lake, functions=self.steps.functions,
                                 training=config["training"], lake_uri=lake_uri)
        self.schedules = Schedules(self, "Schedules", state_machine=self.pipeline.state_machine,
                                   hourly=config["schedule_hourly"], weekly=config["schedule_weekly_retrain"])
        # The HTTP API exists first: its URL is the user pool client's callback, and the client is the authorizer's
        # audience and the API function's.
        self.api = Api(self, "Api", throttle_rate=float(config.get("api_throttle_rate", 10)),
                       throttle_burst=int(config.get("api_throttle_burst", 20)),
                       concurrency=int(config.get("api_concurrency", 10)))
        self.users = Users(self, "Users", retain=retain, site_url=self.api.url)
        self.api.serve(users=self.users, lake=self.lake, state_machine=self.pipeline.state_machine,
                       environment=environment)
        # Alerts: the summary step publishes each run, the API an operator's test; the alerts function delivers.
        self.alerts = Alerts(self, "Alerts", lake=self.lake, secret=self.secret,
                             environment={**environment, "CST_SECRETS_MANAGER_ID": self.secret.secret_arn},
                             emails=list(config.get("alert_emails", [])),
                             webhooks=list(config.get("alert_webhooks", [])))
        self.alerts.allow_publish(self.steps.functions["summary"])
        self.alerts.allow_publish(self.api.function)
        self.alarms = Alarms(self, "Alarms", state_machine=self.pipeline.state_machine,
                             functions={**self.steps.functions, "api": self.api.function,
                                        "alerts": self.alerts.function})
        CfnOutput(self, "LakeBucket", value=self.lake.bucket.bucket_name)
        CfnOutput(self, "StateMachineArn", value=self.pipeline.state_machine.state_machine_arn)
        CfnOutput(self, "ApiUrl", value=self.api.url)
        CfnOutput(self, "SignInDomain", value=self.users.domain.base_url())
        CfnOutput(self, "AlarmTopic", value=self.alarms.topic.topic_arn)
        CfnOutput(self, "AlertsTopic", value=self.alerts.topic.topic_arn)
