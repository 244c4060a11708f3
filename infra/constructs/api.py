"""The HTTP API the dashboard is served from, with a JWT authorizer bound to the user pool (the app checks tokens
itself as well)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_logs as logs
from constructs import Construct


class Api(Construct):
    def __init__(self, scope: Construct, cid: str, *, pool: cognito.UserPool, client: cognito.UserPoolClient) -> None:
        super().__init__(scope, cid)
        self.http_api = apigw.HttpApi(self, "HttpApi", description="cst dashboard and API", create_default_stage=False)
        access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.THREE_MONTHS,
                                    removal_policy=RemovalPolicy.DESTROY)
        self.stage = apigw.CfnStage(
            self, "Stage", api_id=self.http_api.api_id, stage_name="$default", auto_deploy=True,
            access_log_settings=apigw.CfnStage.AccessLogSettingsProperty(
                destination_arn=access_logs.log_group_arn,
                format='{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
                       '"route":"$context.routeKey","status":"$context.status","user":"$context.authorizer.claims.sub"}'))
        self.authorizer = apigw.CfnAuthorizer(
            self, "Jwt", api_id=self.http_api.api_id, authorizer_type="JWT", name="cognito",
            identity_source=["$request.header.Authorization"],
            jwt_configuration=apigw.CfnAuthorizer.JWTConfigurationProperty(
                audience=[client.user_pool_client_id], issuer=pool.user_pool_provider_url))
