"""The one wall clock of dizzy.peer, in milliseconds since the epoch.

Events carry the author's clock and the log records when it received each
event, both in integer milliseconds; everything that reads the time goes
through ``now_ms`` so tests can replace one function.
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000
