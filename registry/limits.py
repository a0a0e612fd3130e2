"""An instance type's CPU and memory, imposed on a running local replica, for profiling it.

A replica on the docker target gets its instance type's size as container limits; a local replica is a
group of processes, so a profile imposes the same size on them itself, with the strongest means the host
allows, and says which:

- `cgroup-v2`: a cgroup of its own beside this process's (see `_cgroup_for` for why not under it), with
  `cpu.max` (the vCPUs as a CPU-time quota)
  and `memory.max` (the kernel kills the replica past it); peak memory is the cgroup's `memory.peak`.
  Needs a cgroup v2 hierarchy whose cpu and memory controllers this process may use beside its own cgroup
  (root, or a delegation covering its parent); hosts with cgroup v1 or without that get the next method.
- `cpu-affinity+memory-watch` elsewhere: every thread of every process of the replica is pinned to as many
  CPUs as the size has vCPUs (threads and processes started later inherit it), and a watcher samples the
  replica's resident memory and kills it once the sum passes the size's memory, as the kernel would.

Peak memory is the high-water mark of the sum of the replica's resident memory (the cgroup's own figure,
or sampled every WATCH_INTERVAL_S), so it counts every worker of the replica.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from endpoints.targets.instance_types import InstanceType, fit_to_host
from serving import processes

WATCH_INTERVAL_S = 0.05
CGROUP_V2 = "cgroup-v2"
AFFINITY = "cpu-affinity+memory-watch"
_PAGE = os.sysconf("SC_PAGE_SIZE")
_RSS = 21  # index of the resident set size in serving.processes.stat's fields


def host_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def host_memory_bytes() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def fitted(size: InstanceType) -> tuple[InstanceType, list[str]]:
    """`size` limited to this host's CPUs and memory, with a warning for each limit applied."""
    return fit_to_host(size, len(host_cpus()), host_memory_bytes())


def cpus_allowed(pid: int) -> set[int]:
    """The CPUs every thread of `pid` may run on (their union), as /proc shows them."""
    allowed: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            allowed |= os.sched_getaffinity(int(task.name))
    return allowed


def resident_bytes(pids: list[int]) -> int:
    """The sum of the resident memory of `pids` (those still there), from their /proc stat as
    serving.processes reads it (the resident set is field 24, in pages)."""
    total = 0
    for pid in pids:
        fields = processes.stat(pid)
        if fields:
            total += int(fields[_RSS]) * _PAGE
    return total


@dataclass
class Confinement:
    """The limits one replica runs under while it is profiled; `close()` lifts what is left of them."""

    size: InstanceType
    pgid: int
    method: str = ""
    cpus: list[int] = field(default_factory=list)
    peak_bytes: int = 0
    out_of_memory: bool = False
    _cgroup: Path | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None

    @property
    def cgroup(self) -> Path | None:
        """The cgroup the replica was moved into, when the method is cgroup-v2."""
        return self._cgroup

    def describe(self) -> dict:
        described = {
            "method": self.method,
            "cpus": self.size.cores,
            "memory_bytes": self.size.memory_bytes,
        }
        if self.cpus:
            described["cpu_list"] = self.cpus
        if self._cgroup is not None:
            described["cgroup"] = str(self._cgroup)
        return described

    def observed_cpus(self) -> set[int]:
        """The CPUs the replica's threads may run on now, read back from /proc."""
        allowed: set[int] = set()
        for pid in processes.live_group(self.pgid):
            with contextlib.suppress(OSError):
                allowed |= cpus_allowed(pid)
        return allowed

    def refresh(self) -> None:
        """Apply the limits to processes the replica started since (a worker replaced, say)."""
        pids = processes.live_group(self.pgid)
        if self._cgroup is not None:
            for pid in pids:
                with contextlib.suppress(OSError):  # gone meanwhile
                    (self._cgroup / "cgroup.procs").write_text(f"{pid}\n")
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(int(task.name), self.cpus)

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            if self._cgroup is not None:
                self.peak_bytes = max(self.peak_bytes, _cgroup_peak(self._cgroup))
                if _cgroup_oom_kills(self._cgroup):
                    self.out_of_memory = True
                continue
            used = resident_bytes(processes.live_group(self.pgid))
            self.peak_bytes = max(self.peak_bytes, used)
            if used > self.size.memory_bytes and not self.out_of_memory:
                self.out_of_memory = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        if self._cgroup is not None:
            self.peak_bytes = max(self.peak_bytes, _cgroup_peak(self._cgroup))
            # Empty once the replica stopped; a cgroup still holding a process is left to the kernel.
            with contextlib.suppress(OSError):
                self._cgroup.rmdir()


def confine(size: InstanceType, pgid: int) -> Confinement:
    """Impose `size` (fitted to the host) on the running replica whose process group is `pgid`, and watch
    its memory from now on."""
    confinement = Confinement(size, pgid)
    confinement._cgroup = _cgroup_for(size)
    if confinement._cgroup is not None:
        confinement.method = CGROUP_V2
    else:
        confinement.method = AFFINITY
        confinement.cpus = host_cpus()[: max(1, math.ceil(size.cores))]
    confinement.refresh()
    confinement._watcher = threading.Thread(target=confinement._watch, name="profile-memory", daemon=True)
    confinement._watcher.start()
    return confinement


def _own_cgroup() -> tuple[Path, Path] | None:
    """The cgroup v2 mount and this process's cgroup in it, where one is mounted."""
    mount = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            before, _, after = line.partition(" - ")
            if after.split()[:1] == ["cgroup2"]:
                mount = Path(before.split()[4])
                break
    if mount is None:
        return None
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return mount, mount / line[3:].lstrip("/")
    return None


def _cgroup_for(size: InstanceType) -> Path | None:
    """A new cgroup sized `size`, or None where this host does not let this process make one.

    cgroup v2 lets a cgroup other than the root enable controllers for its children only while it holds no
    process itself (EBUSY otherwise), and this process is in its own. So the new cgroup is a sibling of it,
    under its parent, whose controllers are what that parent already enables for its children (it enabled
    them for this process's cgroup): nothing is written there. At the hierarchy's root, which may hold
    processes and enable controllers at once, the new cgroup is a child of the root, with cpu and memory
    enabled for it if they are not yet. Writing under the parent needs root, or a delegation covering it."""
    found = _own_cgroup()
    if found is None:
        return None
    mount, own = found
    parent = own if own == mount else own.parent
    try:
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if not {"cpu", "memory"} <= enabled:
            if parent != mount:
                return None
            (parent / "cgroup.subtree_control").write_text("+cpu +memory\n")
        group = parent / f"studio-profile-{secrets.token_hex(6)}"
        group.mkdir()
    except OSError:
        return None
    try:
        (group / "cpu.max").write_text(f"{max(1000, int(size.cores * 100_000))} 100000\n")
        (group / "memory.max").write_text(f"{size.memory_bytes}\n")
        with contextlib.suppress(OSError):  # no swap accounting: nothing to turn off
            (group / "memory.swap.max").write_text("0\n")
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return group


def _cgroup_peak(group: Path) -> int:
    for name in ("memory.peak", "memory.current"):  # memory.peak: Linux 5.19 and later
        with contextlib.suppress(OSError, ValueError):
            return int((group / name).read_text())
    return 0


def _cgroup_oom_kills(group: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        for line in (group / "memory.events").read_text().splitlines():
            name, _, count = line.partition(" ")
            if name == "oom_kill" and int(count) > 0:
                return True
    return False
