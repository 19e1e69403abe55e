"""How much memory the machine has for a run, read before a large allocation so a run that cannot fit stops with
one line instead of being killed by the kernel's OOM killer mid-way (which prints only "Killed")."""

from __future__ import annotations

import os

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
