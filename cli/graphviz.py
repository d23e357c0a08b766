"""SVG from Graphviz dot text, through the ``dot`` program if it is installed."""

from __future__ import annotations

import shutil
import subprocess

from dizzy.protocol import UsageError

__all__ = ["to_svg"]


def to_svg(dot: str) -> str:
    """``dot`` rendered as SVG; a UsageError if Graphviz is not installed or fails."""
    program = shutil.which("dot")
    if program is None:
        raise UsageError(
            "--format svg needs Graphviz's dot program (apt-get install graphviz);"
            " --format dot or mermaid work without it"
        )
    done = subprocess.run(
        [program, "-Tsvg"], input=dot, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise UsageError(f"dot failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout
