"""`cdk synth` / `cdk deploy` entry: one CstStack for the environment named by `-c env=dev|prod`, checked by cdk-nag.

Started by the CDK CLI (`npx cdk`), the app receives cdk.json's context from the CLI; started directly (`make synth`,
`python -m infra.app [-c env=prod]`), it reads cdk.json itself and writes the cloud assembly to `cdk.out/`. Context
given on the command line wins over cdk.json either way, as it does in the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.stack import CstStack

ROOT = Path(__file__).resolve().parents[1]


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


def file_context() -> dict:
    """cdk.json's context: what the CDK CLI would pass to the app."""
    return json.loads((ROOT / "cdk.json").read_text())["context"]


def make_app(argv: list[str] | None = None) -> App:
    """The app with cdk.json's context under the CLI's (`CDK_CONTEXT_JSON`, which the App reads itself and which
    wins) and `-c key=value` pairs on top; the assembly goes where the CLI says, or to `cdk.out/`."""
    parser = argparse.ArgumentParser(prog="python -m infra.app", description="synthesize the cst stack")
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                        help="context value, e.g. env=prod (as `cdk -c`)")
    parser.add_argument("--outdir", help="cloud assembly directory (default: the CLI's, else cdk.out)")
    args = parser.parse_args(argv)
    context = file_context()
    for pair in args.context:
        key, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"context {pair!r} is not KEY=VALUE")
        context[key] = value
    by_cli = "CDK_OUTDIR" in os.environ  # noqa: SIM112 (the CDK CLI's own variable, read by the App too)
    return App(context=context, outdir=args.outdir or (None if by_cli else str(ROOT / "cdk.out")))


def main(argv: list[str] | None = None) -> None:
    app = make_app(argv)
    stack = build(app)
    assembly = app.synth()
    if "CDK_OUTDIR" not in os.environ:  # noqa: SIM112
        print(f"wrote {Path(assembly.directory) / stack.template_file}")


if __name__ == "__main__":
    main()
