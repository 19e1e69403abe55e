"""How much memory and disk the machine has for a run, read before a large allocation or write, so a run that cannot
fit stops with one line instead of being killed mid-way (the OOM killer prints only "Killed"; a full disk fails deep
inside a writer, or h5py ends the process)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kerasls.errors import KeraslsError


def available_bytes() -> int:
    """MemAvailable of /proc/meminfo (memory a process can take without swapping), else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def size(count: float) -> str:
    """Bytes as GB (one decimal), or MB below a GB."""
    return f"{count / 2**30:.1f} GB" if count >= 2**30 else f"{count / 2**20:,.0f} MB"


def check_fits(needed: int, what: str, fixes: str, share: float = 0.8) -> None:
    """A KeraslsError when `needed` bytes exceed `share` of the available memory: `what` needs them, `fixes` says
    what to change."""
    available = available_bytes()
    if needed > share * available:
        raise KeraslsError(f"{what} needs about {size(needed)}, more than the {size(available)} of memory "
                           f"available on this machine; {fixes}")


def check_free_space(folder, needed: int, what: str) -> None:
    """One `KeraslsError` naming `folder`, the space `what` needs and the space free, when the disk holding `folder`
    has less than `needed` bytes free: a full disk otherwise fails deep inside a writer (an OSError traceback, or
    h5py ending the process), after the run's time was spent."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise KeraslsError(f"{folder}: {what} takes about {needed / 2**20:,.0f} MB and the disk has "
                           f"{free / 2**20:,.0f} MB free; free some space (or pass --runs-dir on a larger disk) and "
                           "rerun the same command: a run resumes from its last finished epoch")
