"""Alarms to one SNS topic: failed executions of the pipeline and errors of any step function or of the API."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct


class Alarms(Construct):
    def __init__(self, scope: Construct, cid: str, *, state_machine: sfn.StateMachine,
                 functions: dict[str, lambda_.IFunction]) -> None:
        super().__init__(scope, cid)
        key = kms.Key(self, "TopicKey", enable_key_rotation=True, description="cst alarm topic")
        self.topic = sns.Topic(self, "Topic", master_key=key, enforce_ssl=True, display_name="cst alarms")
        notify = actions.SnsAction(self.topic)
        self.alarms = [cloudwatch.Alarm(
            self, "ExecutionsFailed", metric=state_machine.metric_failed(period=Duration.minutes(5)), threshold=1,
            evaluation_periods=1, comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="A pipeline execution failed (its run summary names the step).")]
        for name, fn in functions.items():
            self.alarms.append(cloudwatch.Alarm(
                self, f"{name}Errors", metric=fn.metric_errors(period=Duration.minutes(5)), threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=f"The {name} function raised an error."))
        for alarm in self.alarms:
            alarm.add_alarm_action(notify)
