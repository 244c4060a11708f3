"""The API in Lambda: the same FastAPI app behind API Gateway's HTTP API, through Mangum.

Everything comes from settings the CDK app sets: the lake; the user pool's issuer and the dashboard client (the JWKS
is fetched from the issuer over HTTPS with urllib and cached by the verifier); the pool's managed login domain and
the site's URL for browser sign-in; and the pipeline's state machine, whose executions an operator's run or retrain
starts."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from mangum import Mangum

from services.api.app import Actions, create_app
from services.api.auth import KeySet, Verifier
from services.api.hosted_login import CALLBACK_PATH, LOGIN_PATH, add_hosted_login
from shared.pipeline.contracts import RunStart
from shared.settings import get_settings
from shared.storage import open_lake


def _jwks(issuer: str):
    def fetch() -> dict:
        with urllib.request.urlopen(f"{issuer}/.well-known/jwks.json", timeout=5) as r:
            return json.loads(r.read())
    return fetch


def execution_actions(state_machine_arn: str, client: Any) -> Actions:
    """Runs and retrains as executions of the pipeline's state machine: the input is the RunStart the schedules send
    (no as-of: the run is judged now); the execution's ARN is what the audit log records."""
    def start(request: dict) -> str:
        from services.orchestrator.usecases import AlreadyRunning, action_name
        from shared.runs import new_ref

        run = RunStart.model_validate(request)
        # The execution is named after the cycle and the action: Step Functions refuses a second execution of the
        # same name, so one cycle's run (or retrain) starts once however often it is asked for.
        name = action_name(run, new_ref(get_settings(), run.source).run_id)[:80]
        try:
            started = client.start_execution(stateMachineArn=state_machine_arn, name=name,
                                             input=run.model_dump_json(exclude_none=True))
        except client.exceptions.ExecutionAlreadyExists:
            running = state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
            raise AlreadyRunning(running) from None
        return started["executionArn"]

    return Actions(start)


def build() -> Mangum:
    settings = get_settings()
    api = settings.api
    verifier = Verifier(api.issuer, api.client_id, KeySet(_jwks(api.issuer)))
    actions = (execution_actions(api.state_machine_arn, boto3.client("stepfunctions", region_name=settings.aws_region))
               if api.state_machine_arn else None)
    app = create_app(settings, open_lake(settings.lake.uri, region=settings.aws_region), verifier, actions)
    if api.login_domain and api.public_url:
        site = api.public_url.rstrip("/")
        add_hosted_login(app, verifier, domain_url=api.login_domain, client_id=api.client_id,
                         redirect_uri=f"{site}{CALLBACK_PATH}", logout_uri=f"{site}{LOGIN_PATH}")
    return Mangum(app, lifespan="off")


_handler: Mangum | None = None
# The same Powertools logger shape as the pipeline's handlers (JSON, the request id as correlation id).
logger = Logger(service="cst-api")


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict, context: object) -> dict:
    global _handler
    if _handler is None:
        _handler = build()
    return _handler(event, context)
