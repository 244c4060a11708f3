"""Who may see and do what: a Cognito user pool with the groups the app checks, its managed sign-in domain, and the
dashboard's client (SRP for API clients, the authorization-code grant with PKCE for browsers)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from services.api.auth import GROUPS, OPERATOR, VIEWER
from services.api.hosted_login import CALLBACK_PATH, LOGIN_PATH

DESCRIPTIONS = {VIEWER: "reads signals, forecasts, runs, performance and models",
                OPERATOR: "also starts runs and retrains horizons"}
# The managed login's ID and access tokens; the browser's session cookie lives exactly as long.
TOKEN_HOURS = 1


class Users(Construct):
    def __init__(self, scope: Construct, cid: str, *, retain: bool, site_url: str) -> None:
        """`site_url`: the dashboard as browsers reach it (the HTTP API's endpoint); the client sends browsers back
        to its callback after sign-in and to its sign-in page after sign-out."""
        super().__init__(scope, cid)
        self.pool = cognito.UserPool(
            self, "Pool", self_sign_up_enabled=False, sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            password_policy=cognito.PasswordPolicy(min_length=12, require_digits=True, require_lowercase=True,
                                                   require_uppercase=True, require_symbols=True),
            mfa=cognito.Mfa.REQUIRED, mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            feature_plan=cognito.FeaturePlan.PLUS, standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            removal_policy=RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY)
        self.groups = {name: cognito.CfnUserPoolGroup(self, name, user_pool_id=self.pool.user_pool_id,
                                                      group_name=name, description=DESCRIPTIONS[name])
                       for name in GROUPS}
        stack = Stack.of(self)
        # A prefix domain is global per region: the stack's name (cst-<env>) and the account make it unique and
        # the same on every deploy.
        self.domain = self.pool.add_domain(
            "Domain", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=f"{stack.stack_name}-{stack.account}"),
            managed_login_version=cognito.ManagedLoginVersion.NEWER_MANAGED_LOGIN)
        self.client = self.pool.add_client(
            "Dashboard", auth_flows=cognito.AuthFlow(user_srp=True), prevent_user_existence_errors=True,
            access_token_validity=Duration.hours(TOKEN_HOURS), id_token_validity=Duration.hours(TOKEN_HOURS),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            o_auth=cognito.OAuthSettings(flows=cognito.OAuthFlows(authorization_code_grant=True),
                                         scopes=[cognito.OAuthScope.OPENID],
                                         callback_urls=[f"{site_url}{CALLBACK_PATH}"],
                                         logout_urls=[f"{site_url}{LOGIN_PATH}"]))
        # Managed login serves a client's pages only once the client has a style; Cognito's own is enough.
        self.branding = cognito.CfnManagedLoginBranding(
            self, "Branding", user_pool_id=self.pool.user_pool_id, client_id=self.client.user_pool_client_id,
            use_cognito_provided_values=True)
        self.branding.node.add_dependency(self.domain)
