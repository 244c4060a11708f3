"""cfn-lint on the synthesized template: no error and no warning that is not acknowledged on its resource, in code,
with its reason (infra/constructs: `lint_acknowledge`), as the cdk-nag findings are."""

from __future__ import annotations

import json

import pytest

cfnlint = pytest.importorskip("cfnlint.api")


def test_the_template_passes_cfn_lint_with_every_acknowledgment_reasoned(synthesized):
    _, template = synthesized
    matches = cfnlint.lint(json.dumps(template), regions=["eu-west-1"])
    assert [f"{m.rule.id} {'/'.join(map(str, m.path))}: {m.message}" for m in matches] == []
    acknowledged = {name: res["Metadata"] for name, res in template["Resources"].items()
                    if "cfn-lint" in res.get("Metadata", {})}
    assert acknowledged, "the acknowledged findings are visible in the template"
    for name, meta in acknowledged.items():
        for rule in meta["cfn-lint"]["config"]["ignore_checks"]:
            assert meta["cst-lint-reasons"][rule], (name, rule)


def test_cfn_lint_finds_what_it_is_asked_to_find(synthesized):
    """The check can fail: the same template with the acknowledgments taken off shows their findings again."""
    _, template = synthesized
    bare = json.loads(json.dumps(template))
    for res in bare["Resources"].values():
        res.get("Metadata", {}).pop("cfn-lint", None)
    rules = {m.rule.id for m in cfnlint.lint(json.dumps(bare), regions=["eu-west-1"])}
    assert rules == {"W3005"}
