"""`cdk synth` / `cdk deploy` entry: one CstStack for the environment named by `-c env=dev|prod`, checked by cdk-nag."""

from __future__ import annotations

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.stack import CstStack


def build(app: App) -> CstStack:
    env_name = app.node.try_get_context("env") or "dev"
    environments = app.node.try_get_context("environments") or {}
    if env_name not in environments:
        raise SystemExit(f"unknown environment {env_name!r}: cdk.json defines {sorted(environments)}")
    config = environments[env_name]
    stack = CstStack(app, f"cst-{env_name}", env_name=env_name, config=config,
                     env=Environment(account=config.get("account"), region=config.get("region")))
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


def main() -> None:
    app = App()
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
