"""Fixtures shared by the test modules. Keep it small: factories live in helpers.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).resolve().parent / "vectors"


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The folder of external test vectors (tests/vectors/, copied into the repo)."""
    return VECTORS


@pytest.fixture(scope="session")
def load_vector() -> Callable[[str], Any]:
    """Parsed JSON of a file under tests/vectors/."""

    def load(name: str) -> Any:
        return json.loads((VECTORS / name).read_text(encoding="utf-8"))

    return load
