"""Processes known by pid and kernel start time, read from Linux's /proc.

A pid alone does not name a process for long: once it exits, the kernel may give the number to another.
The pair (pid, start time in clock ticks since boot, field 22 of /proc/<pid>/stat) does, so everything
Studio records about a process it started (replicas, the warm template, the children of `studio up`)
records both, and acts on a recorded process only while both still match.

Django-free, like the rest of `serving`, so the model server's side and the control plane's share it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

_STATE, _PGRP, _START = 0, 2, 19  # indexes into `stat`'s fields (field 3 is index 0)


def stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/<pid>/stat (state first), or None once the process is gone.

    Index 0 is the state, 1 the parent's pid, 2 the process group, 19 the start time."""
    try:
        # The command name (field 2) may hold spaces and parentheses, so split after its last ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > _START else None


def start_ticks(pid: int) -> str | None:
    """The kernel's start time of `pid` in clock ticks since boot, as /proc writes it; None once gone."""
    fields = stat(pid)
    return fields[_START] if fields else None


def running(pid: int, start: str | None) -> bool:
    """Whether the process `pid` that started at `start` still runs (exists, and is not a zombie)."""
    fields = stat(pid)
    return fields is not None and fields[_START] == start and fields[_STATE] != "Z"


def group(pgid: int) -> list[int]:
    """Every process of the process group `pgid`, zombies included."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat(int(entry.name))) and int(fields[_PGRP]) == pgid:
            members.append(int(entry.name))
    return members


def live_group(pgid: int) -> list[int]:
    """The processes of group `pgid` that still run (zombies left out: they wait only for a reaper)."""
    return [pid for pid in group(pgid) if (fields := stat(pid)) and fields[_STATE] != "Z"]


def parent_death_signal(signum: int):
    """A `preexec_fn` that has the kernel send the child `signum` when this process dies, however it dies.

    Linux's PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process: children
    must be started from the main thread, or they would be stopped with a helper thread. A child that
    changes its uid (a sandbox) loses it. None where prctl is missing: the caller's own records of its
    children must then let it clean up."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def die_with_parent() -> None:
        # Runs in the child between fork and exec: nothing here may take a lock another thread held.
        prctl(pr_set_pdeathsig, int(signum), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)  # the parent died before the signal was armed: it will never be sent

    return die_with_parent
