"""Who may see and do what: a Cognito user pool with the groups viewer and operator, and the dashboard's client."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cognito as cognito
from constructs import Construct

GROUPS = {"viewer": "reads signals, forecasts, runs, performance and models",
          "operator": "also starts runs and retrains horizons"}


class Users(Construct):
    def __init__(self, scope: Construct, cid: str, *, retain: bool) -> None:
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
                                                      group_name=name, description=text)
                       for name, text in GROUPS.items()}
        self.client = self.pool.add_client(
            "Dashboard", auth_flows=cognito.AuthFlow(user_srp=True), prevent_user_existence_errors=True,
            access_token_validity=Duration.hours(1), id_token_validity=Duration.hours(1))
