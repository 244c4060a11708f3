"""EventBridge Scheduler: the hourly cycle and the weekly full retrain, both starting the state machine."""

from __future__ import annotations

import json

from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct


class Schedules(Construct):
    def __init__(self, scope: Construct, cid: str, *, state_machine: sfn.IStateMachine, hourly: str,
                 weekly: str) -> None:
        super().__init__(scope, cid)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
                        description="cst schedules: may start the pipeline's executions, nothing else")
        state_machine.grant_start_execution(role)
        # The scheduled time is the run's as-of: a late or retried delivery judges the same hour.
        run = {"source": "live", "as_of": "<aws.scheduler.scheduled-time>"}
        self.schedules = {}
        for name, expression, payload in (("Hourly", hourly, run), ("WeeklyRetrain", weekly, {**run, "retrain": True})):
            self.schedules[name] = scheduler.CfnSchedule(
                self, name, schedule_expression=expression, schedule_expression_timezone="UTC",
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=state_machine.state_machine_arn, role_arn=role.role_arn, input=json.dumps(payload),
                    retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(maximum_retry_attempts=2)))
