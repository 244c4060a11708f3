"""The synthesized API: one user pool and dashboard client behind the gateway's authorizer and the API function
alike, the groups the app checks, the JWT authorizer on /api/ only, browser sign-in through the pool's domain, and an
API role that writes only the audit log and feedback and starts only the pipeline."""

from __future__ import annotations

import json
import re

from services.api.auth import GROUPS, OPERATOR, VIEWER, Identity
from tests.infrastructure.test_stack import actions_of, resources, role_statements

HANDLER = "services.api.lambda_handler.handler"
ACCOUNT = "123456789012"


def one(template: dict, kind: str) -> tuple[str, dict]:
    (found,) = resources(template, kind).items()
    return found


def api_function(template: dict) -> tuple[str, dict]:
    (found,) = [(lid, r) for lid, r in resources(template, "AWS::Lambda::Function").items()
                if r["Properties"]["ImageConfig"]["Command"] == [HANDLER]]
    return found


def render(value, **refs: str) -> str:
    """A Fn::Join / Ref / Fn::GetAtt value as text, with the given refs substituted and other references shown as
    <LogicalId> or <LogicalId.Attribute>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(render(p, **refs) for p in parts)
    if "Ref" in value:
        return refs.get(value["Ref"], f"<{value['Ref']}>")
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    raise AssertionError(f"unexpected intrinsic {value}")


def test_the_authorizer_and_the_api_function_trust_the_same_pool_and_dashboard_client(synthesized):
    _, t = synthesized
    pool_id, _ = one(t, "AWS::Cognito::UserPool")
    client_id, client = one(t, "AWS::Cognito::UserPoolClient")
    assert client["Properties"]["UserPoolId"] == {"Ref": pool_id}
    issuer, audience = {"Fn::GetAtt": [pool_id, "ProviderURL"]}, {"Ref": client_id}
    _, auth = one(t, "AWS::ApiGatewayV2::Authorizer")
    assert auth["Properties"]["AuthorizerType"] == "JWT"
    assert auth["Properties"]["IdentitySource"] == ["$request.header.Authorization"]
    assert auth["Properties"]["JwtConfiguration"] == {"Issuer": issuer, "Audience": [audience]}
    env = api_function(t)[1]["Properties"]["Environment"]["Variables"]
    assert env["CST_API__ISSUER"] == issuer and env["CST_API__CLIENT_ID"] == audience


def test_the_api_function_runs_the_serving_image_with_the_lake_the_pipeline_and_the_sign_in_domain(synthesized):
    # The image is the serving image built with the api extra (tests/infrastructure/test_images.py).
    _, t = synthesized
    fn_id, fn = api_function(t)
    p = fn["Properties"]
    steps = [r["Properties"] for lid, r in resources(t, "AWS::Lambda::Function").items() if lid != fn_id]
    assert steps and all(s["Code"] == steps[0]["Code"] != p["Code"] for s in steps)  # the steps share theirs
    assert p["PackageType"] == "Image" and p["Timeout"] <= 29  # inside API Gateway's integration limit
    env = p["Environment"]["Variables"]
    (sm_id,) = resources(t, "AWS::StepFunctions::StateMachine")
    (api_id,) = resources(t, "AWS::ApiGatewayV2::Api")
    (domain_id,) = resources(t, "AWS::Cognito::UserPoolDomain")
    assert env["CST_API__STATE_MACHINE_ARN"] == {"Ref": sm_id}
    assert env["CST_LAKE__URI"] == steps[0]["Environment"]["Variables"]["CST_LAKE__URI"]
    assert env["CST_API__PUBLIC_URL"] == {"Fn::GetAtt": [api_id, "ApiEndpoint"]}
    # A prefix domain's Ref is its prefix.
    login = render(env["CST_API__LOGIN_DOMAIN"], **{domain_id: f"cst-dev-{ACCOUNT}"})
    assert login == f"https://cst-dev-{ACCOUNT}.auth.eu-west-1.amazoncognito.com"
    # The API reads no secret, so it is not told where one is.
    assert "CST_SECRETS_MANAGER_ID" not in env


def test_the_pool_groups_are_exactly_the_groups_the_app_checks(synthesized):
    _, t = synthesized
    groups = {g["Properties"]["GroupName"] for g in resources(t, "AWS::Cognito::UserPoolGroup").values()}
    assert groups == set(GROUPS) == {VIEWER, OPERATOR}
    as_operator = Identity("s", "otto", frozenset({OPERATOR}), "id")
    as_viewer = Identity("s", "vera", frozenset({VIEWER}), "id")
    assert as_operator.is_operator and as_operator.is_viewer and as_viewer.is_viewer and not as_viewer.is_operator


def test_api_routes_have_the_jwt_authorizer_and_the_pages_route_none(synthesized):
    _, t = synthesized
    fn_id, _ = api_function(t)
    (auth_id,) = resources(t, "AWS::ApiGatewayV2::Authorizer")
    (api_id,) = resources(t, "AWS::ApiGatewayV2::Api")
    integration_id, integration = one(t, "AWS::ApiGatewayV2::Integration")
    assert integration["Properties"] == {"ApiId": {"Ref": api_id}, "IntegrationType": "AWS_PROXY",
                                         "IntegrationUri": {"Fn::GetAtt": [fn_id, "Arn"]},
                                         "PayloadFormatVersion": "2.0", "TimeoutInMillis": 29000}
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in resources(t, "AWS::ApiGatewayV2::Route").values()}
    assert set(routes) == {"ANY /api/{proxy+}", "$default"}
    api, pages = routes["ANY /api/{proxy+}"], routes["$default"]
    assert api["AuthorizationType"] == "JWT" and api["AuthorizerId"] == {"Ref": auth_id}
    assert pages["AuthorizationType"] == "NONE" and "AuthorizerId" not in pages
    target = {"Fn::Join": ["", ["integrations/", {"Ref": integration_id}]]}
    assert api["Target"] == pages["Target"] == target
    (permission,) = [p["Properties"] for p in resources(t, "AWS::Lambda::Permission").values()
                     if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [fn_id, "Arn"]}]
    assert permission["Principal"] == "apigateway.amazonaws.com" and permission["Action"] == "lambda:InvokeFunction"
    assert render(permission["SourceArn"], **{"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT}) == (
        f"arn:aws:execute-api:eu-west-1:{ACCOUNT}:<{api_id}>/*")


def test_the_api_role_writes_only_audit_feedback_and_watchlists_and_starts_only_the_pipeline(synthesized):
    _, t = synthesized
    _, fn = api_function(t)
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    role = t["Resources"][role_id]["Properties"]
    assert "ManagedPolicyArns" not in role and "Policies" not in role
    stmts = role_statements(t, role_id)
    assert all(s["Effect"] == "Allow" for s in stmts)
    assert actions_of(stmts) == {"logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject", "s3:ListBucket",
                                 "s3:PutObject", "states:StartExecution", "states:ListExecutions",
                                 "sns:Publish", "kms:Decrypt",
                                 "kms:GenerateDataKey*"}  # publish: an operator's test alert
    lake_id = next(k for k in resources(t, "AWS::S3::Bucket") if k.startswith("LakeBucket"))

    def targets(action: str) -> list[str]:
        found = []
        for s in stmts:
            if action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]):
                found += s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        return [render(r) for r in found]

    assert sorted(targets("s3:PutObject")) == [f"<{lake_id}.Arn>/audit/*", f"<{lake_id}.Arn>/feedback/*",
                                               f"<{lake_id}.Arn>/watchlists/*"]
    assert targets("s3:GetObject") == [f"<{lake_id}.Arn>/*"] and targets("s3:ListBucket") == [f"<{lake_id}.Arn>"]
    (sm_id,) = resources(t, "AWS::StepFunctions::StateMachine")
    assert targets("states:StartExecution") == [f"<{sm_id}>"]
    assert not any(r == "*" for s in stmts for r in ([s["Resource"]] if isinstance(s["Resource"], str)
                                                      else s["Resource"]))


def test_browsers_sign_in_through_the_pool_domain_with_the_code_grant_back_to_the_api(synthesized):
    _, t = synthesized
    pool_id, _ = one(t, "AWS::Cognito::UserPool")
    client_id, client = one(t, "AWS::Cognito::UserPoolClient")
    (api_id,) = resources(t, "AWS::ApiGatewayV2::Api")
    c = client["Properties"]
    assert c["AllowedOAuthFlows"] == ["code"] and c["AllowedOAuthFlowsUserPoolClient"] is True
    assert c["AllowedOAuthScopes"] == ["openid"] and c["SupportedIdentityProviders"] == ["COGNITO"]
    assert "ALLOW_USER_SRP_AUTH" in c["ExplicitAuthFlows"] and not c.get("GenerateSecret", False)
    site = f"<{api_id}.ApiEndpoint>"
    assert [render(u) for u in c["CallbackURLs"]] == [f"{site}/auth/callback"]
    assert [render(u) for u in c["LogoutURLs"]] == [f"{site}/login"]
    _, domain = one(t, "AWS::Cognito::UserPoolDomain")
    d = domain["Properties"]
    assert d["UserPoolId"] == {"Ref": pool_id} and d["ManagedLoginVersion"] == 2
    prefix = render(d["Domain"], **{"AWS::AccountId": ACCOUNT})
    # A valid prefix domain: lowercase letters, digits and inner hyphens, no reserved word; the same on every deploy.
    assert prefix == f"cst-dev-{ACCOUNT}"
    assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", prefix)
    assert not any(word in prefix for word in ("aws", "amazon", "cognito"))
    _, branding = one(t, "AWS::Cognito::ManagedLoginBranding")
    assert branding["Properties"]["ClientId"] == {"Ref": client_id}
    assert json.dumps(branding["Properties"]["UserPoolId"]) == json.dumps({"Ref": pool_id})
