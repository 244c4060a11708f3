"""checkov (IaC policy) on the synthesized template: no failed check; every finding accepted is acknowledged on its
resource, in code, with its reason (infra/constructs: `checkov_acknowledge`), and the check can fail."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def checkov(template: dict, tmp: Path) -> dict:
    """checkov's JSON report on `template`, offline (no download of Prisma Cloud's guidelines, no version check)."""
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV} is not installed: `make test` installs it (infra/checkov/requirements.txt)")
    path = tmp / "template.json"
    path.write_text(json.dumps(template))
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    done = subprocess.run([str(CHECKOV), "-f", str(path), "--framework", "cloudformation", "-o", "json", "--compact",
                           "--skip-download"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


def test_the_template_fails_no_checkov_check_and_every_acknowledgment_is_reasoned(synthesized, tmp_path):
    _, template = synthesized
    report = checkov(template, tmp_path)
    failed = report.get("results", {}).get("failed_checks", [])
    assert [f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in failed] == []
    assert report["summary"]["passed"] > 300
    skipped = report["results"]["skipped_checks"]
    assert skipped and all((s["check_result"].get("suppress_comment") or "").strip() for s in skipped)
    # What is acknowledged, by check: no dead-letter queue on a synchronously invoked function, no VPC, an
    # environment and log groups without a customer key (each with the reason in its Metadata).
    assert set(Counter(s["check_id"] for s in skipped)) == {"CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_173",
                                                             "CKV_AWS_158", "CKV_AWS_18"}


def test_checkov_finds_what_is_acknowledged_when_the_acknowledgments_are_taken_off(synthesized, tmp_path):
    _, template = synthesized
    bare = json.loads(json.dumps(template))
    for res in bare["Resources"].values():
        res.get("Metadata", {}).pop("checkov", None)
    failed = checkov(bare, tmp_path)["results"]["failed_checks"]
    assert {f["check_id"] for f in failed} == {"CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_173", "CKV_AWS_158",
                                               "CKV_AWS_18"}
