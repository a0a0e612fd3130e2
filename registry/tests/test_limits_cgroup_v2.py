"""The cgroup v2 method of profiling limits, on recorded host layouts.

Hosts whose cpu and memory controllers are cgroup v1 hierarchies (this one, and the CI machine) cannot
enable them on a cgroup v2 hierarchy, so the `cgroup-v2` method cannot run for real there; the v1 and
affinity methods do, in test_profile.py. Here `limits.PROC_SELF` points at a recorded `/proc/self`
(`mountinfo` and `cgroup`) whose cgroup2 mount is a folder laid out as the kernel lays one out, and a real
process group is confined: what is checked is every decision and every file the method writes and reads
(where the cgroup goes, what it enables, the quota and the limits, the pids moved, peak memory and OOM
kills read back). That the kernel then enforces those files is the kernel's part.
"""

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from endpoints.targets.instance_types import GIB, InstanceType
from registry import limits
from serving import processes
from studio.testkit import until

SIZE = InstanceType("Standard_test", 1.5, 0.5)


def recorded_host(tmp_path: Path, own: str, parent_controllers: str) -> Path:
    """A host whose only cgroup hierarchy is a v2 one mounted at <tmp>/cgroup, this process in its
    cgroup `own`, whose parent enables `parent_controllers` for its children; the mount's folder."""
    mount = tmp_path / "cgroup"
    folder = mount / own.strip("/")
    folder.mkdir(parents=True)
    (mount / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (mount / "cgroup.subtree_control").write_text("\n")
    if folder != mount:
        (folder.parent / "cgroup.subtree_control").write_text(f"{parent_controllers}\n")
    proc = tmp_path / "proc-self"
    proc.mkdir()
    (proc / "mountinfo").write_text(
        "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw\n"
        f"31 22 0:26 / {mount} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    (proc / "cgroup").write_text(f"0::{own}\n")
    return mount


@pytest.fixture
def replica():
    """A real process group of two standing for a replica (a server and its worker): its leader."""
    process = subprocess.Popen(["sh", "-c", "sleep 60 & exec sleep 60"], start_new_session=True)
    assert until(lambda: len(processes.live_group(process.pid)) == 2)
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def confined(tmp_path: Path, monkeypatch, replica, own: str, parent_controllers: str):
    """The replica confined on a recorded host (see recorded_host): the mount's folder and the confinement,
    closed afterwards."""
    mount = recorded_host(tmp_path, own, parent_controllers)
    monkeypatch.setattr(limits, "PROC_SELF", tmp_path / "proc-self")
    confinement = limits.confine(SIZE, replica.pid)
    try:
        yield mount, confinement
    finally:
        confinement.close()


def moved(folder: Path, replica: subprocess.Popen) -> bool:
    """Whether a process of the replica was written into the cgroup's `cgroup.procs` (the kernel takes one
    pid a write, so a recorded folder keeps the last one)."""
    written = (folder / "cgroup.procs").read_text()
    return written in {f"{pid}\n" for pid in processes.live_group(replica.pid)}


def profile_cgroups(under: Path) -> list[Path]:
    return sorted(under.glob("studio-profile-*"))


def test_at_the_hierarchy_s_root_the_replica_gets_a_child_with_cpu_and_memory_enabled(
    tmp_path, monkeypatch, replica
):
    with confined(tmp_path, monkeypatch, replica, "/", "") as (mount, confinement):
        (folder,) = profile_cgroups(mount)
        # The root may hold processes and enable controllers at once.
        assert (mount / "cgroup.subtree_control").read_text() == "+cpu +memory\n"
        assert (folder / "cpu.max").read_text() == "150000 100000\n"  # 1.5 vCPUs of each 100 ms
        assert (folder / "memory.max").read_text() == f"{GIB // 2}\n"
        assert (folder / "memory.swap.max").read_text() == "0\n"
        assert moved(folder, replica)
        assert confinement.describe() == {
            "method": "cgroup-v2",
            "cpus": 1.5,
            "memory_bytes": GIB // 2,
            "cpu_list": limits.host_cpus()[:2],
            "cgroups": [str(folder)],
        }
        assert confinement.observed_cpus() == set(limits.host_cpus()[:2])


def test_in_a_cgroup_of_its_own_the_replica_gets_a_sibling_and_the_parent_is_left_as_it_is(
    tmp_path, monkeypatch, replica
):
    # A process in a non-root cgroup cannot enable controllers for children of its own (EBUSY), and its
    # parent already enables cpu and memory for it.
    with confined(tmp_path, monkeypatch, replica, "/system.slice/studio.service", "cpu memory pids") as (
        mount,
        confinement,
    ):
        (folder,) = profile_cgroups(mount / "system.slice")
        assert profile_cgroups(mount / "system.slice" / "studio.service") == []
        assert (mount / "system.slice" / "cgroup.subtree_control").read_text() == "cpu memory pids\n"
        assert (mount / "cgroup.subtree_control").read_text() == "\n"
        assert moved(folder, replica)
        assert confinement.method == "cgroup-v2"


def test_a_parent_that_does_not_enable_cpu_and_memory_leaves_pinning_and_the_memory_watch(
    tmp_path, monkeypatch, replica
):
    with confined(
        tmp_path, monkeypatch, replica, "/user.slice/user-1000.slice/user@1000.service", "pids"
    ) as (mount, confinement):
        assert list(mount.rglob("studio-profile-*")) == []
        assert (mount / "user.slice" / "user-1000.slice" / "cgroup.subtree_control").read_text() == "pids\n"
        assert confinement.describe()["method"] == "cpu-affinity+memory-watch"
        assert "cgroups" not in confinement.describe()
        assert confinement.observed_cpus() == set(limits.host_cpus()[:2])


def test_an_oom_kill_in_the_cgroup_stops_the_whole_replica_and_its_peak_is_read_back(
    tmp_path, monkeypatch, replica
):
    with confined(tmp_path, monkeypatch, replica, "/", "") as (mount, confinement):
        (folder,) = profile_cgroups(mount)
        peak = 480 * 1024**2
        (folder / "memory.peak").write_text(f"{peak}\n")
        assert until(lambda: confinement.peak_bytes >= peak, timeout=10)
        assert not confinement.out_of_memory  # a peak under the limit is no reason to stop it
        # What the kernel writes once it killed a process of the cgroup for its memory.
        (folder / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
        assert until(lambda: not processes.live_group(replica.pid), timeout=10)
        assert replica.wait() == -signal.SIGKILL
        assert confinement.out_of_memory
    assert confinement.peak_bytes >= peak


def test_before_linux_5_19_the_peak_is_the_highest_memory_current_seen(tmp_path, monkeypatch, replica):
    with confined(tmp_path, monkeypatch, replica, "/", "") as (mount, confinement):
        (folder,) = profile_cgroups(mount)
        current = 300 * 1024**2
        (folder / "memory.current").write_text(f"{current}\n")
        assert until(lambda: confinement.peak_bytes >= current, timeout=10)
        (folder / "memory.current").write_text(f"{current // 3}\n")  # memory given back lowers no peak
    assert confinement.peak_bytes >= current
    assert not confinement.out_of_memory
