"""Telling whether a recorded process still runs, robust to pid reuse.

Jobs record the pid of whoever is preparing or supervising them together with that process's
start time, so a later process that happens to get the same pid is not mistaken for it.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22).

    Stored beside a pid, it tells a live process from a later one that reused the pid.
    None when the process does not exist or is a zombie (exited, not yet reaped).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_alive(pid: int | None, start_time: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    if not Path("/proc/self/stat").exists():  # no procfs: best effort without reuse check
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    current = process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)
