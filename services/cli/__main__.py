"""`python -m services.cli`: the `cst` command (the benchmarks and the browser tests start it this way)."""

from services.cli import entry

entry()
