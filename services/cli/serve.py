"""`cst serve` (the dashboard and API on this machine) and `cst users` (its users, the development issuer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.cli.common import console
from shared.errors import CstError
from shared.logging import configure_logging
from shared.settings import Settings, resolve_secrets
from shared.storage import open_lake


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import os

    import uvicorn

    from services.api.issuer import DevIssuer

    uri = args.lake or settings.lake.uri
    if not uri.startswith("s3://"):
        uri = str(Path(uri).resolve())  # the workers may start elsewhere; they must open the same folder
    issuer_url = f"http://{args.host}:{args.port}/auth"
    # Created here, once, before any worker: workers only load the key, never race to create it.
    issuer = DevIssuer.for_lake(uri, issuer_url)
    if not issuer.users():
        console.print("no users yet: add one with `cst users add NAME --group viewer|operator`", markup=False)
    # Each worker builds the app from the settings (serve_app): the lake and the issuer it trusts travel as the
    # settings' own variables, the only thing a worker process inherits.
    os.environ["CST_LAKE__URI"], os.environ["CST_API__ISSUER"] = uri, issuer_url
    console.print(f"cst dashboard on http://{args.host}:{args.port}/ (lake {uri}); Ctrl+C stops it", markup=False)
    uvicorn.run("services.cli.serve:serve_app", factory=True, workers=args.workers, host=args.host, port=args.port,
                log_level="warning", access_log=False, server_header=False)
    return 0


def serve_app():
    """The app one `cst serve` worker runs: the lake and the development issuer named by the settings."""
    import gc

    from services.api.app import create_app, local_actions
    from services.api.issuer import DevIssuer

    settings = resolve_secrets(Settings())
    configure_logging(settings.log_level, settings.secret_values())
    issuer = DevIssuer.for_lake(settings.lake.uri, settings.api.issuer)
    lake = open_lake(settings.lake.uri, region=settings.aws_region)
    app = create_app(settings, lake, issuer.verifier(), local_actions(settings, lake), issuer=issuer,
                     secure_cookies=False)  # plain HTTP on this machine; the cloud serves HTTPS only
    # What is imported and built by now lives as long as the process: out of the collector's full passes, which
    # otherwise walk its ~100,000 objects every few seconds under load and were the API's p99 (40 ms pauses).
    gc.freeze()
    return app


def cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    from services.api.issuer import DevIssuer

    issuer = DevIssuer.for_lake(args.lake or settings.lake.uri, "http://127.0.0.1/auth")
    if args.action == "list":
        for name, user in sorted(issuer.users().items()):
            console.print(f"{name}: {', '.join(user['groups'])}", markup=False)
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        raise CstError("no_terminal", "no terminal to ask for the password: pipe it in with --password-stdin")
    else:
        import getpass

        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise CstError("password_mismatch", "the two passwords differ")
    issuer.add_user(args.name, password, args.group)
    console.print(f"{args.name}: {args.group} (users of lake {args.lake or settings.lake.uri}: `cst serve` must "
                  "be given the same --lake)", markup=False)
    return 0


def register(sub, lake: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[lake],
                       help="the dashboard and API on this machine (uvicorn; users from `cst users add`)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (default 1); a Python process answers on one core at a time, so one per "
                        "core serves more. Each keeps its own caches and its own sign-in throttle, so a client can "
                        "try up to workers x the limit of failed sign-ins")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("users", help="users of the local dashboard (the development issuer; in the cloud: Cognito)")
    users = p.add_subparsers(dest="action", required=True)
    add = users.add_parser("add", parents=[lake], help="add a user, or set an existing user's password and group")
    add.add_argument("name")
    add.add_argument("--group", required=True, choices=["viewer", "operator"])
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(func=cmd_users)
    lst = users.add_parser("list", parents=[lake], help="the users and their groups")
    lst.set_defaults(func=cmd_users)
