"""docs/flows.md runs: its flow file and its tour, as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def blocks(text: str, language: str) -> list[str]:
    return [part.split("```", 1)[0] for part in text.split(f"```{language}\n")[1:]]


def test_the_flows_tour_runs(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "flows.md").read_text()
    flow_file = blocks(doc, "python")[0]
    assert flow_file.startswith("# payments_flow.py\n")
    tour = blocks(doc.split("## Tour", 1)[1], "sh")[0]
    (tmp_path / "payments_flow.py").write_text(flow_file)
    (tmp_path / "tour.sh").write_text("set -euo pipefail\n" + tour)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DIZZY_HOME", None)
    result = subprocess.run(
        ["bash", "tour.sh"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for type_ in ("payment.authorized", "payment.captured", "payment.declined"):
        assert type_ in out, type_
    assert "payments/captured_totals" in out and "flowchart LR" in out
    assert out.rstrip().endswith("handled nothing new")
