"""An instance type's CPU and memory, imposed on a running local replica, for profiling it.

A replica on the docker target gets its instance type's size as container limits; a local replica is a
group of processes, so a profile imposes the same size on them itself, with the strongest means the host
allows, and says which. Everywhere, every thread of every process of the replica is pinned to as many CPUs
as the size has vCPUs (threads and processes started later inherit it), so thread pools size themselves
to it. Then:

- `cgroup-v2`: a cgroup of its own beside this process's (see `_v2_cgroup` for why not under it), with
  `cpu.max` (the vCPUs as a CPU-time quota) and `memory.max` (the kernel kills the replica past it); peak
  memory is the cgroup's `memory.peak`. Needs a cgroup v2 hierarchy whose cpu and memory controllers this
  process may use beside its own cgroup (root, or a delegation covering its parent).
- `cgroup-v1`: on a host whose cpu and memory controllers are cgroup v1 hierarchies, a cgroup of its own
  under this process's in each, with `cpu.cfs_quota_us` and `memory.limit_in_bytes` (and no swap past it);
  peak memory is `memory.max_usage_in_bytes`. Needs write access to this process's cgroups (root).
- `cpu-affinity+memory-watch` elsewhere: the CPUs pinned, and the memory watched as below.

Everywhere a watcher samples the sum of the replica's resident memory every WATCH_INTERVAL_S, and kills
the replica once it passes the size's memory, as the kernel would: with a cgroup too, since a replica
forked from the warm template shares pages the kernel charges to the template, not to the replica's
cgroup. When the kernel kills a process of the cgroup for its memory, the whole replica is stopped as
well: it does not fit in the size. Peak memory is the higher of that sum's high-water mark (it counts every
worker) and the cgroup's own peak.
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
CGROUP_V1 = "cgroup-v1"
AFFINITY = "cpu-affinity+memory-watch"
_PAGE = os.sysconf("SC_PAGE_SIZE")
# Where this process's mounts and cgroups are read (`mountinfo`, `cgroup`); tests point it at a recorded
# host layout.
PROC_SELF = Path("/proc/self")
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


@dataclass(frozen=True)
class Cgroup:
    """A cgroup of one replica's own: its folder in each hierarchy it spans (one on cgroup v2; on v1, where
    each controller has a hierarchy of its own, the cpu controller's and the memory controller's)."""

    method: str
    folders: tuple[Path, ...]
    memory: Path  # the folder of the memory controller's files

    def add(self, pid: int) -> None:
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(f"{pid}\n")

    def peak_bytes(self) -> int:
        # memory.peak: Linux 5.19 and later
        names = (
            ("memory.peak", "memory.current") if self.method == CGROUP_V2 else ("memory.max_usage_in_bytes",)
        )
        for name in names:
            with contextlib.suppress(OSError, ValueError):
                return int((self.memory / name).read_text())
        return 0

    def oom_kills(self) -> int:
        """How many of its processes the kernel killed for memory (`oom_kill` of memory.events on v2, of
        memory.oom_control on v1 since Linux 4.13)."""
        events = "memory.events" if self.method == CGROUP_V2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (self.memory / events).read_text().splitlines():
                name, _, count = line.partition(" ")
                if name == "oom_kill":
                    return int(count)
        return 0

    def remove(self) -> None:
        """Remove its folders; one still holding a process is left to the kernel."""
        for folder in self.folders:
            with contextlib.suppress(OSError):
                folder.rmdir()


@dataclass
class Confinement:
    """The limits one replica runs under while it is profiled; `close()` lifts what is left of them."""

    size: InstanceType
    pgid: int
    cpus: list[int]
    group: Cgroup | None = None
    peak_bytes: int = 0
    out_of_memory: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None

    @property
    def method(self) -> str:
        return self.group.method if self.group is not None else AFFINITY

    @property
    def cgroups(self) -> list[str]:
        """The folders of the cgroup the replica was moved into (none without one)."""
        return [str(folder) for folder in self.group.folders] if self.group is not None else []

    def describe(self) -> dict:
        described = {
            "method": self.method,
            "cpus": self.size.cores,
            "memory_bytes": self.size.memory_bytes,
            "cpu_list": self.cpus,
        }
        if self.group is not None:
            described["cgroups"] = self.cgroups
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
        for pid in processes.live_group(self.pgid):
            with contextlib.suppress(OSError):  # gone meanwhile (its /proc folder too)
                if self.group is not None:
                    self.group.add(pid)
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(int(task.name), self.cpus)

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            # The resident sum is watched with a cgroup too: a replica forked from the warm template shares
            # the template's pages, which the kernel charges to the template's cgroup, not to the replica's.
            used = resident_bytes(processes.live_group(self.pgid))
            too_big = used > self.size.memory_bytes
            if self.group is not None:
                used = max(used, self.group.peak_bytes())
                too_big = too_big or self.group.oom_kills() > 0
            self.peak_bytes = max(self.peak_bytes, used)
            if too_big and not self.out_of_memory:
                self.out_of_memory = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        if self.group is not None:
            self.peak_bytes = max(self.peak_bytes, self.group.peak_bytes())
            self.group.remove()  # empty once the replica stopped


def confine(size: InstanceType, pgid: int) -> Confinement:
    """Impose `size` (fitted to the host) on the running replica whose process group is `pgid`, and watch
    its memory from now on."""
    cpus = host_cpus()[: max(1, math.ceil(size.cores))]
    confinement = Confinement(size, pgid, cpus, _v2_cgroup(size) or _v1_cgroup(size))
    confinement.refresh()
    confinement._watcher = threading.Thread(target=confinement._watch, name="profile-memory", daemon=True)
    confinement._watcher.start()
    return confinement


def _mounts(fstype: str) -> list[tuple[Path, set[str]]]:
    """Where file systems of `fstype` are mounted, each with its super options (a v1 hierarchy's
    controllers among them)."""
    found = []
    with contextlib.suppress(OSError):
        for line in (PROC_SELF / "mountinfo").read_text().splitlines():
            before, _, after = line.partition(" - ")
            fields = after.split()
            if fields[:1] == [fstype] and len(fields) >= 3:
                found.append((Path(before.split()[4]), set(fields[2].split(","))))
    return found


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup in each hierarchy, by controller ("" for the v2 hierarchy)."""
    own = {}
    with contextlib.suppress(OSError):
        for line in (PROC_SELF / "cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path.lstrip("/")
    return own


def _cgroup_name() -> str:
    return f"studio-profile-{secrets.token_hex(6)}"


def _cpu_quota_us(size: InstanceType) -> int:
    return max(1000, int(size.cores * 100_000))  # per period of 100,000 µs


def _v2_cgroup(size: InstanceType) -> Cgroup | None:
    """A new cgroup v2 sized `size`, or None where this host does not let this process make one.

    cgroup v2 lets a cgroup other than the root enable controllers for its children only while it holds no
    process itself (EBUSY otherwise), and this process is in its own. So the new cgroup is a sibling of it,
    under its parent, whose controllers are what that parent already enables for its children (it enabled
    them for this process's cgroup): nothing is written there. At the hierarchy's root, which may hold
    processes and enable controllers at once, the new cgroup is a child of the root, with cpu and memory
    enabled for it if they are not yet. Writing under the parent needs root, or a delegation covering it."""
    mounts, own = _mounts("cgroup2"), _own_cgroups()
    if not mounts or "" not in own:
        return None
    mount = mounts[0][0]
    own_folder = mount / own[""]
    parent = own_folder if own_folder == mount else own_folder.parent
    try:
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if not {"cpu", "memory"} <= enabled:
            if parent != mount:
                return None
            (parent / "cgroup.subtree_control").write_text("+cpu +memory\n")
        folder = parent / _cgroup_name()
        folder.mkdir()
    except OSError:
        return None
    group = Cgroup(CGROUP_V2, (folder,), folder)
    try:
        (folder / "cpu.max").write_text(f"{_cpu_quota_us(size)} 100000\n")
        (folder / "memory.max").write_text(f"{size.memory_bytes}\n")
        with contextlib.suppress(OSError):  # no swap accounting: nothing to turn off
            (folder / "memory.swap.max").write_text("0\n")
    except OSError:
        group.remove()
        return None
    return group


def _v1_cgroup(size: InstanceType) -> Cgroup | None:
    """A new cgroup sized `size` under this process's own in the cgroup v1 hierarchies of the cpu and the
    memory controller (v1 lets a cgroup holding processes have children), or None where there are no such
    hierarchies or this process may not write there."""
    own = _own_cgroups()
    name, folders = _cgroup_name(), {}
    for mount, options in _mounts("cgroup"):
        for controller in {"cpu", "memory"} & options:
            if controller in own:
                folders[controller] = mount / own[controller] / name
    if set(folders) != {"cpu", "memory"} or folders["cpu"].parent == folders["memory"].parent:
        return None  # one controller missing, or both in one hierarchy (a layout no distribution uses)
    made: list[Path] = []
    try:
        for folder in folders.values():
            folder.mkdir()
            made.append(folder)
        (folders["cpu"] / "cpu.cfs_period_us").write_text("100000\n")
        (folders["cpu"] / "cpu.cfs_quota_us").write_text(f"{_cpu_quota_us(size)}\n")
        (folders["memory"] / "memory.limit_in_bytes").write_text(f"{size.memory_bytes}\n")
        with contextlib.suppress(OSError):  # no swap accounting: nothing to turn off
            (folders["memory"] / "memory.memsw.limit_in_bytes").write_text(f"{size.memory_bytes}\n")
    except OSError:
        Cgroup(CGROUP_V1, tuple(made), folders["memory"]).remove()
        return None
    return Cgroup(CGROUP_V1, tuple(folders.values()), folders["memory"])
