"""The `cst` command: validate, ingest, train, run (the main job), evaluate and backtest, serve.

Each command is a small module here over the orchestrator's use cases (the same ones the API's actions use); what it
prints is drawn by `render` from the typed records the services return.
"""

from __future__ import annotations

import argparse
import logging
import sys

from services.cli import books, evaluate, ingest, run, serve, train, validate
from services.cli.common import console, lake_option
from shared.errors import CstError
from shared.logging import configure_logging, redact
from shared.settings import Settings, resolve_secrets

COMMANDS = (validate, train, evaluate, ingest, run, books, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cst", description="CryptoSmartTrader: multi-horizon crypto forecasts from real data")
    sub = parser.add_subparsers(dest="command", required=True)
    lake = lake_option()
    for command in COMMANDS:
        command.register(sub, lake)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = resolve_secrets(Settings())
        configure_logging(settings.log_level, settings.secret_values())
        # Fetch failures reach the terminal from the run's own record, grouped by source and code: not twice.
        logging.getLogger("services.ingest.logic.fetch_failures").setLevel(logging.ERROR)
        return args.func(args, settings)
    except CstError as exc:
        console.print(f"error {redact(str(exc))}", markup=False, highlight=False)
        return exc.exit_code


def entry() -> None:
    """The `cst` command: main(), then leave without tearing down native thread pools.

    Once a command has returned, everything it wrote is closed; what remains are the worker threads of the native
    libraries (ONNX Runtime, PyTorch, LightGBM's OpenMP). About one exit in sixteen after a training run, one of them
    was still joinable while the interpreter tore down, and the C++ runtime aborted the finished process (exit 134,
    "terminate called without an active exception"), so a complete run read as a crash. Streams and log handlers
    are flushed here, then the process ends with the command's own exit code."""
    import logging
    import os

    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
