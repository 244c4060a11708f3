"""The HTTP API the dashboard and the JSON API are served from: the API function (the serving image running the
FastAPI app through Mangum), a JWT authorizer bound to the user pool in front of `/api/`, and the pages, static files
and browser sign-in on `$default`, where the app checks the session cookie itself."""

from __future__ import annotations

from aws_cdk import (
    Duration,
    RemovalPolicy,
    Stack,
    aws_apigatewayv2 as apigw,
    aws_iam as iam,
    aws_lambda as lambda_,
    aws_logs as logs,
    aws_stepfunctions as sfn,
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
    logical_ref,
)
from infra.constructs.functions import serving_image
from infra.constructs.lake import LakeBucket
from infra.constructs.users import Users
from shared.audit import AUDIT, FEEDBACK, WATCHLISTS

HANDLER = "services.api.lambda_handler.handler"
# The lake keys the API writes: operators' actions and users' feedback. Everything else it only reads.
WRITES = (AUDIT + "*", FEEDBACK + "*", WATCHLISTS + "*")
# API Gateway gives an integration at most 30 s.
TIMEOUT_S = 29


class Api(Construct):
    """Built in two steps: the HTTP API first (its URL is the user pool client's callback), then `serve` once the
    client exists (the authorizer and the function need it)."""

    def __init__(self, scope: Construct, cid: str, *, throttle_rate: float, throttle_burst: int,
                 concurrency: int) -> None:
        super().__init__(scope, cid)
        self.concurrency = concurrency
        self.http_api = apigw.HttpApi(self, "HttpApi", description="cst dashboard and API", create_default_stage=False)
        access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.THREE_MONTHS,
                                    removal_policy=RemovalPolicy.DESTROY)
        checkov_acknowledge(access_logs, "CKV_AWS_158", PLAIN_LOGS)
        self.stage = apigw.CfnStage(
            self, "Stage", api_id=self.http_api.api_id, stage_name="$default", auto_deploy=True,
            # Every route, pages and sign-in included: a flood of requests is refused at the gateway (429), not
            # billed as function time (denial of wallet).
            default_route_settings=apigw.CfnStage.RouteSettingsProperty(
                throttling_rate_limit=throttle_rate, throttling_burst_limit=throttle_burst),
            access_log_settings=apigw.CfnStage.AccessLogSettingsProperty(
                destination_arn=access_logs.log_group_arn,
                format='{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
                       '"route":"$context.routeKey","status":"$context.status","user":"$context.authorizer.claims.sub"}'))
        self.url = self.http_api.api_endpoint

    def serve(self, *, users: Users, lake: LakeBucket, state_machine: sfn.IStateMachine,
              environment: dict[str, str]) -> None:
        api_id = self.http_api.api_id
        self.authorizer = apigw.CfnAuthorizer(
            self, "Jwt", api_id=api_id, authorizer_type="JWT", name="cognito",
            identity_source=["$request.header.Authorization"],
            jwt_configuration=apigw.CfnAuthorizer.JWTConfigurationProperty(
                audience=[users.client.user_pool_client_id], issuer=users.pool.user_pool_provider_url))

        log_group = logs.LogGroup(self, "FunctionLogs", retention=logs.RetentionDays.THREE_MONTHS,
                                  removal_policy=RemovalPolicy.DESTROY)
        self.role = iam.Role(self, "FunctionRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="cst API: reads the lake, writes audit, feedback and watchlists, starts runs")
        log_group.grant_write(self.role)
        lake_findings = lake.grant(self.role, write=False)
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:PutObject"], resources=[lake.bucket.arn_for_objects(prefix) for prefix in WRITES]))
        state_machine.grant_start_execution(self.role)
        # Whether this cycle's execution still runs (one execution per cycle and action): the running ones listed.
        self.role.add_to_principal_policy(iam.PolicyStatement(actions=["states:ListExecutions"],
                                                              resources=[state_machine.state_machine_arn]))
        acknowledge(self.role, "AwsSolutions-IAM5",
                    "Objects inside the lake bucket: read anywhere (the API shows every run, model and prediction), "
                    "written only under audit/, feedback/ and watchlists/ (their keys are per date, per coin and per user).",
                    lake_findings + [f"Resource::{logical_ref(lake.bucket)}/{prefix}" for prefix in WRITES])
        self.function = lambda_.DockerImageFunction(
            self, "Function", role=self.role, log_group=log_group, code=serving_image(HANDLER, "[api]"),
            memory_size=1024, timeout=Duration.seconds(TIMEOUT_S),
            # At most this many requests are served at once; beyond, Lambda throttles instead of scaling the bill.
            reserved_concurrent_executions=self.concurrency,
            environment={**environment,
                         "CST_API__ISSUER": users.pool.user_pool_provider_url,
                         "CST_API__CLIENT_ID": users.client.user_pool_client_id,
                         "CST_API__LOGIN_DOMAIN": users.domain.base_url(),
                         "CST_API__PUBLIC_URL": self.url,
                         "CST_API__STATE_MACHINE_ARN": state_machine.state_machine_arn})
        lint_acknowledge(self.function, "W3005", REDUNDANT_DEPENDS_ON)
        for check, reason in (("CKV_AWS_116", SYNC_INVOKED), ("CKV_AWS_117", NO_VPC),
                              ("CKV_AWS_173", PLAIN_ENVIRONMENT)):
            checkov_acknowledge(self.function, check, reason)
        checkov_acknowledge(log_group, "CKV_AWS_158", PLAIN_LOGS)

        integration = apigw.CfnIntegration(
            self, "Integration", api_id=api_id, integration_type="AWS_PROXY",
            integration_uri=self.function.function_arn, payload_format_version="2.0",
            timeout_in_millis=TIMEOUT_S * 1000)
        target = f"integrations/{integration.ref}"
        self.api_route = apigw.CfnRoute(self, "ApiRoute", api_id=api_id, route_key="ANY /api/{proxy+}",
                                        authorization_type="JWT", authorizer_id=self.authorizer.ref, target=target)
        self.default_route = apigw.CfnRoute(self, "DefaultRoute", api_id=api_id, route_key="$default",
                                            authorization_type="NONE", target=target)
        acknowledge(self.default_route, "AwsSolutions-APIG4",
                    "Pages, static files, /login, /auth/callback and /health: browsers carry the session in an HttpOnly "
                    "cookie, not an Authorization header, so a gateway JWT authorizer cannot see it; the app verifies "
                    "the cookie's token (signature, issuer, client, expiry, groups) on every page and action, and "
                    "every /api/ route has the JWT authorizer.")
        self.function.add_permission(
            "ApiGatewayInvoke", principal=iam.ServicePrincipal("apigateway.amazonaws.com"),
            source_arn=Stack.of(self).format_arn(service="execute-api", resource=api_id, resource_name="*"))
