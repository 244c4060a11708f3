"""One construct per concern of the deployment."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str, findings: list[str] | None = None) -> None:
    """cdk-nag findings accepted on `scope` (and what it holds), each with the reason a reviewer reads. Rules that
    report one finding per wildcard (IAM5) are acknowledged finding by finding, never as a whole rule."""
    ids = [f"AwsSolutions::{rule}[{f}]" for f in findings] if findings else [rule]
    Validations.of(scope).acknowledge(*[Acknowledgment(id=i, reason=reason) for i in ids])


# CDK writes DependsOn on a function's (or a state machine's) role and its default policy, and also references the
# role by GetAtt: the role's entry is redundant, harmless, and not ours to remove.
REDUNDANT_DEPENDS_ON = "CDK's own DependsOn on the role that the resource also references with GetAtt"


def lint_acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """A cfn-lint finding accepted on `construct`'s resource, with the reason a reviewer reads: cfn-lint reads the
    resource's Metadata (`cfn-lint: config: ignore_checks`); the reason sits beside it (`cst-lint-reasons`)."""
    res = construct.node.default_child
    lint = res.get_metadata("cfn-lint") or {"config": {"ignore_checks": []}}
    lint["config"]["ignore_checks"] = sorted({*lint["config"]["ignore_checks"], rule})
    reasons = {**(res.get_metadata("cst-lint-reasons") or {}), rule: reason}
    res.add_metadata("cfn-lint", lint)
    res.add_metadata("cst-lint-reasons", reasons)


# checkov's findings accepted on what they concern, each with its reason (`checkov_acknowledge`).
SYNC_INVOKED = ("invoked synchronously (the state machine's task, or API Gateway's request), which retries and "
                "reports the failure (the run summary, the HTTP answer): a dead-letter queue serves only "
                "asynchronous invocations")
NO_VPC = ("reaches only S3, Secrets Manager, SNS, Step Functions and the public exchange and data APIs: no private "
          "resource to reach, and a VPC would add NAT gateways to reach them")
PLAIN_ENVIRONMENT = ("the environment holds names and ARNs (the lake's URI, the region, the secret's and the topic's "
                     "ARNs), no secret: credentials are read from Secrets Manager at run time; at rest under the "
                     "AWS-managed key")
PLAIN_LOGS = ("log lines carry run ids, step names, counts and error codes with secrets redacted (shared/logging.py), "
              "encrypted at rest by CloudWatch Logs: a customer key would add its cost and a key policy for no secret")


def checkov_acknowledge(construct: IConstruct, check: str, reason: str) -> None:
    """A checkov finding accepted on `construct`'s resource, with its reason: checkov reads the resource's Metadata
    (`checkov: skip: [{id, comment}]`)."""
    res = construct if isinstance(construct, CfnResource) else construct.node.default_child
    meta = res.get_metadata("checkov") or {"skip": []}
    meta["skip"] = [s for s in meta["skip"] if s["id"] != check] + [{"id": check, "comment": reason}]
    res.add_metadata("checkov", meta)


def logical_ref(construct: IConstruct, attribute: str = "Arn") -> str:
    """How cdk-nag names a resource's attribute inside a finding: <LogicalId.Arn>."""
    stack = Stack.of(construct)
    return f"<{stack.resolve(stack.get_logical_id(construct.node.default_child))}.{attribute}>"
