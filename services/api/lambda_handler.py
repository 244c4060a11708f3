"""The API in Lambda: the same FastAPI app behind API Gateway's HTTP API, through Mangum.

Everything comes from settings the CDK app sets: the lake; the user pool's issuer and the dashboard client (the JWKS
is fetched from the issuer over HTTPS with urllib and cached by the verifier); the pool's managed login domain and
the site's URL for browser sign-in; and the pipeline's state machine, whose executions an operator's run or retrain
starts."""

from __future__ import annotations

import json
import urllib.request
import uuid
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
        # nosec B310 - the user pool's issuer from the settings (the CDK app sets its HTTPS URL), never a request's
        with urllib.request.urlopen(f"{issuer}/.well-known/jwks.json", timeout=5) as r:  # nosec B310
            return json.loads(r.read())
    return fetch


def execution_actions(state_machine_arn: str, client: Any) -> Actions:
    """Runs and retrains as executions of the pipeline's state machine: the input is the RunStart the schedules send
    (no as-of: the run is judged now); the execution's ARN is what the audit log records."""
    def start(request: dict) -> str:
        from services.orchestrator.usecases import AlreadyRunning, action_name
        from shared.runs import new_ref

        run = RunStart.model_validate(request)
        # The execution is named after the cycle and the action: while it runs, a second start is refused with its
        # ARN (two starts racing get the same execution: Step Functions' start is idempotent on name and input);
        # once it has ended, a start of the same cycle is a new attempt under a suffixed name.
        name = action_name(run, new_ref(get_settings(), run.source).run_id)[:70]
        running = client.list_executions(stateMachineArn=state_machine_arn, statusFilter="RUNNING")["executions"]
        for e in running:
            if e["name"] == name or e["name"].startswith(name + "-"):
                raise AlreadyRunning(e["executionArn"])
        body = run.model_dump_json(exclude_none=True)
        try:
            started = client.start_execution(stateMachineArn=state_machine_arn, name=name, input=body)
        except client.exceptions.ExecutionAlreadyExists:  # this cycle ran before and ended: a new attempt
            started = client.start_execution(stateMachineArn=state_machine_arn, input=body,
                                             name=f"{name}-{uuid.uuid4().hex[:8]}")
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
    if not _http_event(event):
        # Not an HTTP API request (a test invoke, a misrouted event): a 400 in the API's error shape, not a crash.
        logger.warning("not an HTTP API event", extra={"keys": sorted(event)[:10] if isinstance(event, dict) else []})
        return {"statusCode": 400, "headers": {"content-type": "application/json"},
                "body": json.dumps({"error": "bad_event", "message": "not an HTTP API (payload 2.0) request"})}
    if _handler is None:
        _handler = build()
    return _handler(event, context)


def _http_event(event: object) -> bool:
    """An API Gateway HTTP API request (payload format 2.0) as Mangum reads it."""
    if not isinstance(event, dict):
        return False
    http = (event.get("requestContext") or {}).get("http") if isinstance(event.get("requestContext"), dict) else None
    return isinstance(http, dict) and isinstance(http.get("method"), str) and isinstance(event.get("rawPath"), str)
