"""examples/payments: the two-peer payment cascade runs with one command, and
its README shows the diagram its flows generate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "payments"


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done
    return done.stdout


def test_the_payment_cascade_runs_across_two_peers(tmp_path: Path) -> None:
    out = run("--folder", str(tmp_path / "homes"))
    log = out.split("account log (shop):\n", 1)[1].split("refund entity", 1)[0]
    types = sorted(line.split()[0] for line in log.splitlines())
    assert types == sorted(
        ["dizzy.genesis", "dizzy.grant", "payment.refund_requested"]
        + ["payment.requested", "payment.fraud_checked"] * 2
        + ["payment.authorized", "payment.captured", "payment.declined"]
    )
    assert "refunded in" in out
    assert "← risk/fraud_check v1" in out and "← shop/capture v1" in out


def test_the_readme_shows_the_generated_diagram() -> None:
    readme = (EXAMPLE / "README.md").read_text()
    block = readme.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block == run("--diagram")
