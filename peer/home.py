"""Where a peer keeps its state: ``--home``, else ``$DIZZY_HOME``, else the
per-user data folder (platformdirs), created private (0700)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["Home"]


@dataclass(frozen=True, slots=True)
class Home:
    path: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> Home:
        chosen = home or os.environ.get("DIZZY_HOME") or platformdirs.user_data_dir("dizzy")
        return cls(Path(chosen).expanduser().absolute())

    def ensure(self) -> Home:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    @property
    def key_file(self) -> Path:
        return self.path / "agent.key"

    @property
    def database(self) -> Path:
        return self.path / "dizzy.db"

    @property
    def places(self) -> Path:
        """Where verified copies of fetched chunks lie (dizzy.peer.blobs)."""
        return self.path / "places.db"
