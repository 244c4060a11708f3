"""One construct per concern of the deployment."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str, findings: list[str] | None = None) -> None:
    """cdk-nag findings accepted on `scope` (and what it holds), each with the reason a reviewer reads. Rules that
    report one finding per wildcard (IAM5) are acknowledged finding by finding, never as a whole rule."""
    ids = [f"AwsSolutions::{rule}[{f}]" for f in findings] if findings else [rule]
    Validations.of(scope).acknowledge(*[Acknowledgment(id=i, reason=reason) for i in ids])


def logical_ref(construct: IConstruct, attribute: str = "Arn") -> str:
    """How cdk-nag names a resource's attribute inside a finding: <LogicalId.Arn>."""
    stack = Stack.of(construct)
    return f"<{stack.resolve(stack.get_logical_id(construct.node.default_child))}.{attribute}>"
