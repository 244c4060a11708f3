"""The lake bucket: encrypted, private, TLS only, versioned (model versions survive an overwrite), raw data aged out."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, aws_iam as iam, aws_s3 as s3
from constructs import Construct

from infra.constructs import acknowledge, checkov_acknowledge, logical_ref
from shared.contracts import RAW


class LakeBucket(Construct):
    def __init__(self, scope: Construct, cid: str, *, retain: bool, raw_days: int) -> None:
        super().__init__(scope, cid)
        policy = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY
        self.access_logs = s3.Bucket(
            self, "AccessLogs", encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True, removal_policy=policy,
            versioned=True, lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365),
                                                              noncurrent_version_expiration=Duration.days(30))])
        acknowledge(self.access_logs, "AwsSolutions-S1", "This bucket is the lake's access-log target; logging it would recurse.")
        checkov_acknowledge(self.access_logs, "CKV_AWS_18", "the lake's access-log target: logging it would recurse")
        self.bucket = s3.Bucket(
            self, "Bucket", encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True, versioned=True,
            server_access_logs_bucket=self.access_logs, server_access_logs_prefix="lake/",
            lifecycle_rules=[
                # Raw responses are kept for audit and re-parsing, then expire; everything derived stays.
                s3.LifecycleRule(id="raw", prefix=RAW, transitions=[s3.Transition(
                    storage_class=s3.StorageClass.INFREQUENT_ACCESS, transition_after=Duration.days(30))],
                    expiration=Duration.days(raw_days)),
                # Overwritten objects (CURRENT pointers, states) keep their earlier versions for 30 days.
                s3.LifecycleRule(id="noncurrent", noncurrent_version_expiration=Duration.days(30)),
            ])

    def grant(self, principal: iam.IGrantable, *, write: bool) -> list[str]:
        """Exactly what the lake's client calls (get, head, put, list): no delete, no bucket configuration. Returns
        the wildcard findings this grant causes, for the caller's acknowledgment."""
        actions = ["s3:GetObject"] + (["s3:PutObject"] if write else [])
        principal.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=actions, resources=[self.bucket.arn_for_objects("*")]))
        principal.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn]))
        return [f"Resource::{logical_ref(self.bucket)}/*"]
