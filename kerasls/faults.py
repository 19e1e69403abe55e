"""Fault injection for the crash tests: `KERASLS_FAULT=<point>:<n>` kills the process with SIGKILL the n-th time
it passes the named point (`batch`, `epoch_end`, `after_commit`, `checkpoint_write`, `export`). Without the
variable every `fault_point` call returns at once."""

from __future__ import annotations

import os
import signal

_FAULT_COUNTS: dict = {}


def fault_point(name: str) -> None:
    """SIGKILL this process the n-th time it passes `name` when KERASLS_FAULT=name:n (crash tests only)."""
    wanted = os.environ.get("KERASLS_FAULT", "")
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if _FAULT_COUNTS[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
