"""The wall clock, in the unit the log and the protocol use: milliseconds since the epoch.

One helper, so every timestamp (event clocks, back-off, throttling) is read the
same way, and a test has one place to look at.
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Milliseconds since the Unix epoch, as an int (no float rounding)."""
    return time.time_ns() // 1_000_000
