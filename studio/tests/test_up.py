"""`studio up` as a user runs it: a real process group on the embedded defaults, stopped by a signal."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from serving import processes
from studio.testkit import until
from studio.tests.installation import (
    STUDIO,
    TOKEN,
    deploy,
    free_port,
    group_alive,
    invoke,
    replica_pids,
    started_children,
    time_wait_sockets,
)

REPO = Path(__file__).resolve().parents[2]


def test_it_runs_the_group_restarts_a_crashed_worker_and_stops_cleanly(studio_up, installation):
    process, output, port, env = studio_up
    # What isolation local replicas get is said before anything runs (docs/security.md).
    expected = "sandboxed" if os.geteuid() == 0 else "unavailable, so replicas run as Studio's user"
    output.wait_for(rf"replica isolation: {expected}", timeout=180)

    output.wait_for(r"Studio is up\.", timeout=180)
    response = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/models/", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200, response.text
    output.wait_for(r"^studio +\| +API docs +http://127\.0\.0\.1:\d+/api/docs/")
    pids = started_children(output)
    assert {"web", "worker", "beat"} <= pids.keys()

    # A real task, sent through the filesystem broker, is received and run by the worker.
    sent = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "studio", "call", "celery.accumulate", "--args", "[1, 2]"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    task_id = sent.stdout.strip().splitlines()[-1]
    output.wait_for(rf"^worker +\| .*Task celery\.accumulate\[{task_id}\] succeeded", timeout=60)

    # A worker that dies is reported and comes back.
    seen = len(output)
    os.kill(pids["worker"], signal.SIGKILL)
    output.wait_for(r"worker was killed by SIGKILL", after=seen, timeout=10)
    restarted = int(output.wait_for(r"started worker \(pid (\d+)\)", after=seen, timeout=15).group(1))
    assert restarted != pids["worker"]
    output.wait_for(r"^worker +\| .*worker@\S+ ready\.", after=seen, timeout=60)
    assert not group_alive(pids["worker"]), "the killed worker's pool processes were left behind"

    groups = {*pids.values(), restarted} - {pids["worker"]}
    assert installation.stop(process, output, timeout=30) == 0
    assert until(lambda: not any(map(group_alive, groups)), 5), "children outlived the supervisor"


def test_stopping_studio_up_stops_the_replicas_of_its_deployments(installation):
    process, output = installation.up()
    output.wait_for(r"Studio is up\.", timeout=180)
    pid = deploy(installation)
    assert group_alive(pid)

    assert installation.stop(process, output, timeout=60) == 0
    output.wait_for(r"^replicas +\| Stopped 1 local replica;")
    assert until(lambda: not group_alive(pid), 5), "the replica outlived Studio"


def test_keep_replicas_leaves_them_serving_and_a_restart_under_load_starts_at_once_and_takes_them_over(
    installation,
):
    process, output = installation.up("--keep-replicas")
    output.wait_for(r"Studio is up\.", timeout=180)
    pid = deploy(installation)
    assert until(lambda: invoke(installation) is not None, 60), "the gateway never routed to the replica"
    answer = invoke(installation)
    # Client load whose connections the gateway closes: its side of each waits out TIME_WAIT on its port.
    # Each client reads to the end before it closes, so the gateway's close always comes first (a client
    # that closed once it had the response could beat it, and the TIME_WAIT would be the client's).
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", installation.gateway_port), timeout=10) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            while client.recv(65536):
                pass

    assert installation.stop(process, output, timeout=60) == 0
    output.wait_for(r"local replicas keep serving \(--keep-replicas\)")
    assert group_alive(pid), "the replica stopped with Studio"
    assert time_wait_sockets(installation.gateway_port), "the gateway's closed connections are in TIME_WAIT"

    process, output = installation.up()
    output.wait_for(r"Studio is up\.", timeout=180)
    assert not [line for line in output.lines if "already in use" in line]
    # The new gateway serves once it has read the route table; the kept replica answers through it.
    assert until(lambda: invoke(installation) == answer, 60), "the kept replica never answered"
    assert replica_pids(installation)[-1] == pid, "taken over as it was, not started again"

    assert installation.stop(process, output, timeout=60) == 0
    assert until(lambda: not group_alive(pid), 5), "without --keep-replicas, the replica stops with Studio"


def test_a_killed_studio_up_leaves_no_child_running_and_the_next_one_starts(installation):
    process, output = installation.up()
    output.wait_for(r"Studio is up\.", timeout=180)
    children = started_children(output)
    assert {"web", "worker", "beat", "gateway"} <= children.keys()

    # One `studio up` per installation: a second one, even on other ports, is refused while it runs.
    second = subprocess.run(
        [str(STUDIO), "up", "--port", str(free_port()), "--gateway-port", str(free_port())],
        cwd=installation.root,
        env=installation.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert f"Studio already runs with STUDIO_HOME='{installation.home}' (studio up, pid {process.pid})" in (
        second.stdout
    )

    process.kill()
    process.wait()
    assert until(lambda: not any(map(group_alive, children.values())), 30), [
        name for name, pid in children.items() if group_alive(pid)
    ]

    # A child that outlived a killed predecessor anyway is stopped before the next one starts.
    leftover = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (installation.home / "run" / "up.json").write_text(
        json.dumps({"web": {"pid": leftover.pid, "start": processes.start_ticks(leftover.pid)}})
    )
    try:
        process, output = installation.up()
        output.wait_for(r"stopped web, left running by a Studio that was killed", timeout=60)
        assert leftover.wait(timeout=5) == -signal.SIGTERM
        output.wait_for(r"Studio is up\.", timeout=180)
    finally:
        leftover.kill()
        leftover.wait()
    assert installation.stop(process, output, timeout=60) == 0


def test_a_bad_keep_replicas_setting_stops_the_start_naming_it(installation):
    done = subprocess.run(
        [str(STUDIO), "up", "--port", str(installation.port)],
        cwd=installation.root,
        env={**installation.env, "STUDIO_KEEP_REPLICAS": "maybe"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "STUDIO_KEEP_REPLICAS='maybe' is not a boolean" in done.stdout


def test_a_stop_signal_that_lands_while_studio_up_prints_still_stops_it():
    # The handler runs on the main thread between two bytecodes, here inside `say`, holding its lock:
    # taking that lock (or any other) in the handler would hang `studio up` for good.
    script = """
import os, signal
from studio import supervisor
group = supervisor.Supervisor([])
signal.signal(signal.SIGTERM, group.request_stop)
with supervisor._print_lock:
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)
print(group.received, group.hurry)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.split() == ["SIGTERM", "True"]
