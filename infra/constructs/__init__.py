"""One construct per concern of the deployment."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
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


def logical_ref(construct: IConstruct, attribute: str = "Arn") -> str:
    """How cdk-nag names a resource's attribute inside a finding: <LogicalId.Arn>."""
    stack = Stack.of(construct)
    return f"<{stack.resolve(stack.get_logical_id(construct.node.default_child))}.{attribute}>"
