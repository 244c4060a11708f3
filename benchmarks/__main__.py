"""Runs every benchmarks/bench_*.py main() and rewrites that benchmark's section of BENCHMARKS.md at the repo root."""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPORT = HERE.parent / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Recorded by `make bench` (`.venv/bin/python -m benchmarks`). Each section is rewritten by its benchmark's\n"
    "latest run; benchmarks measure, they do not pass or fail.\n"
)


def discover(only: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    return [n for n in names if not only or n in only]


def section(name: str, summary: str, figures: dict[str, object], when: datetime) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in figures.items())
    return (
        f"<!-- {name}:start -->\n"
        f"## {name}\n\n"
        f"{summary}\n\n"
        f"- Command: `make bench`\n"
        f"- Cores: {os.cpu_count()} (`os.cpu_count()`)\n"
        f"- Python: {platform.python_version()} on {platform.system()} {platform.machine()}\n"
        f"- Date: {when.strftime('%Y-%m-%d %H:%M UTC')}\n\n"
        f"| figure | value |\n|---|---|\n{rows}\n"
        f"<!-- {name}:end -->\n"
    )


def record(name: str, text: str, report: Path = REPORT) -> None:
    """Replace the benchmark's marked section, or append it when the file has none yet."""
    current = report.read_text() if report.exists() else HEADER
    block = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->\n?", re.DOTALL)
    if block.search(current):
        updated = block.sub(lambda _: text, current)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    report.write_text(updated)


def main(argv: list[str]) -> int:
    names = discover(argv)
    if not names:
        print(f"no benchmark matches {argv}; found: {discover([])}", file=sys.stderr)
        return 1
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}")
        figures = module.main()
        summary = (module.__doc__ or name).strip().splitlines()[0]
        record(name, section(name, summary, figures, datetime.now(timezone.utc)))
    print(f"recorded in {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
