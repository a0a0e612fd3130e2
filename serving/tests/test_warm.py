"""The warm template (`python -m serving.warm`): replicas forked from it, and what it does with bad requests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serving import warm
from serving.tests.conftest import REPO, SCRIPTS, free_port, linear
from serving.tests.test_installation import CHECK_EVERY_S, make_marker
from serving.worker import THREAD_VARIABLES
from studio.testkit import process_group, process_stat, until


def replica_env(**extra: str) -> dict[str, str]:
    """What the local target gives a replica: a small base environment plus the deployment's own."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class Template:
    """A template process for one socket, and the replicas a test started through it."""

    def __init__(self, path: Path, log_path: Path) -> None:
        self.path = path
        self.log_path = log_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                warm.command(sys.executable, path),
                env=replica_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.replicas: list[int] = []

    def wait_listening(self, timeout: float = 180.0) -> Template:
        def listening() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"the template exited:\n{self.log_path.read_text()[-3000:]}")
            return any(line.get("event") == "listening" for line in _json_lines(self.log_path))

        assert until(listening, timeout), f"the template is not listening:\n{self.log_path.read_text()}"
        return self

    def start(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[warm.Started, str]:
        """Start a replica on a free port; returns what the template answered and the replica's URL."""
        port = free_port()
        argv = ["--host", "127.0.0.1", "--port", str(port), *args]
        started = warm.request_start(self.path, argv, env, str(cwd), str(log))
        self.replicas.append(started.pid)
        return started, f"http://127.0.0.1:{port}"

    def close(self) -> None:
        warm.stop_template(self.path)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for pid in self.replicas:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _json_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"unparsed": line})
    return lines


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    with httpx.Client(timeout=2) as client:

        def ready() -> bool:
            try:
                return client.get(f"{url}/health/ready").status_code == 200
            except httpx.TransportError:
                return False

        assert until(ready, timeout), f"{url} never became ready"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    started = Template(root / "run" / "warm.sock", root / "warm.log").wait_listening()
    yield started
    started.close()


@pytest.fixture
def fresh_template(tmp_path):
    """A template of the test's own, to kill. Its socket path is longer than a Unix address may be."""
    folder = tmp_path / ("deep-" * 20) / "run"
    started = Template(folder / "warm.sock", tmp_path / "warm.log").wait_listening()
    yield started
    started.close()


@pytest.mark.parametrize("model", ["tensor", "fussy"], ids=["skops", "cloudpickle-with-code"])
def test_a_replica_forked_from_the_template_serves_its_model(template, models, tmp_path, model):
    log = tmp_path / "replica.log"
    started, url = template.start(["--model-dir", str(models / model)], replica_env(), models / model, log)
    assert started.start == process_stat(started.pid)[19], "the answer names the replica's own start time"
    fields = process_stat(started.pid)
    assert int(fields[1]) == template.process.pid, "the template forked it"
    assert int(fields[3]) == started.pid, "setsid made it a leader, detached from the template"
    _wait_ready(url)
    answer = httpx.post(f"{url}/score", json={"input_data": [[1.0, 2.0], [0.0, -1.0]]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == pytest.approx([linear(1.0, 2.0), linear(0.0, -1.0)])
    events = {line.get("event") for line in _json_lines(log)}
    assert {"listening", "worker_started", "ready"} <= events, "the replica's output goes to its log"
    os.killpg(started.pid, signal.SIGTERM)
    assert until(lambda: not process_group(started.pid)), "stopped, with no zombie left"


def test_a_warm_replica_gets_what_a_cold_one_gets(template, tmp_path):
    """Same environment, folder and import path; the deployment's thread limits; its own randomness."""
    env = replica_env(
        STUDIO_SCORING_SCRIPT="score_process.py",
        WORKER_COUNT="2",
        STUDIO_THREADS_PER_WORKER="2",
        DEPLOYMENT_SETTING="blue",
    )
    args = ["--code", str(SCRIPTS)]
    started, warm_url = template.start(args, env, SCRIPTS, tmp_path / "warm.log")
    port = free_port()
    with (tmp_path / "cold.log").open("ab") as log:
        cold = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--host", "127.0.0.1", "--port", str(port), *args],
            env=env,
            cwd=SCRIPTS,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        cold_url = f"http://127.0.0.1:{port}"
        _wait_ready(warm_url)
        _wait_ready(cold_url)
        answers = {}
        for _ in range(60):  # a new connection each time, so both workers answer
            answer = httpx.post(f"{warm_url}/score", json={}).json()
            answers[answer["pid"]] = answer
            if len(answers) == 2:
                break
        cold_answer = httpx.post(f"{cold_url}/score", json={}).json()
    finally:
        os.killpg(cold.pid, signal.SIGTERM)
        cold.wait(20)
        os.killpg(started.pid, signal.SIGTERM)
    assert len(answers) == 2, "both workers answered"
    first, second = answers.values()
    assert first["env"] == cold_answer["env"]
    assert first["env"]["DEPLOYMENT_SETTING"] == "blue"
    assert all(first["env"][name] == "2" for name in THREAD_VARIABLES)
    assert first["cwd"] == cold_answer["cwd"] == str(SCRIPTS)
    assert first["path0"] == cold_answer["path0"]
    assert first["pools"] == cold_answer["pools"]
    assert first["pools"]["openblas"] == 2 and first["pools"]["openmp"] == 2
    assert first["random"] != second["random"], "each forked worker draws its own random numbers"
    assert first["ppid"] == second["ppid"] == started.pid


def test_stopping_a_warm_replica_stops_its_workers(template, models, tmp_path):
    env = replica_env(WORKER_COUNT="2")
    started, url = template.start(
        ["--model-dir", str(models / "tensor")], env, models / "tensor", tmp_path / "replica.log"
    )
    _wait_ready(url)
    assert len(process_group(started.pid)) == 3, "the replica and its two workers"
    os.killpg(started.pid, signal.SIGTERM)
    assert until(lambda: not process_group(started.pid)), f"left behind: {process_group(started.pid)}"


def test_a_warm_replica_outlives_its_template(fresh_template, models, tmp_path):
    assert len(str(fresh_template.path)) > 108
    started, url = fresh_template.start(
        ["--model-dir", str(models / "tensor")], replica_env(), models / "tensor", tmp_path / "replica.log"
    )
    _wait_ready(url)
    fresh_template.process.kill()
    fresh_template.process.wait(10)
    answer = httpx.post(f"{url}/score", json={"input_data": [[1.0, 1.0]]})
    assert answer.status_code == 200
    assert answer.json() == pytest.approx([linear(1.0, 1.0)])
    assert int(process_stat(started.pid)[1]) != fresh_template.process.pid
    os.killpg(started.pid, signal.SIGTERM)
    assert until(lambda: not process_group(started.pid))


def test_a_warm_replica_exits_once_its_installation_is_gone(template, models, tmp_path):
    marker = make_marker(tmp_path)
    env = replica_env(STUDIO_INSTALLATION=str(marker), STUDIO_INSTALLATION_CHECK_S=CHECK_EVERY_S)
    log = tmp_path / "replica.log"
    started, url = template.start(["--model-dir", str(models / "tensor")], env, models / "tensor", log)
    _wait_ready(url)
    marker.unlink()
    assert until(lambda: not process_group(started.pid), 30), "it stops, its workers too, and is reaped"
    assert any(line.get("event") == "installation_gone" for line in _json_lines(log)), "it says why"
    assert warm.template_pid(template.path) == template.process.pid, "the template serves on"


def test_a_template_whose_code_changed_on_disk_refuses_and_stops(fresh_template, tmp_path):
    source = Path(warm.__file__).with_name("errors.py")
    before = source.stat()
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    try:
        with pytest.raises(warm.WarmStartUnavailable, match="code or its libraries changed"):
            warm.request_start(fresh_template.path, [], replica_env(), str(tmp_path), str(tmp_path / "r.log"))
        assert fresh_template.process.wait(10) == 0
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not fresh_template.path.exists(), "its socket is gone with it"


def test_a_replica_whose_init_fails_says_so_and_its_reason_is_in_its_log(template, tmp_path):
    log = tmp_path / "replica.log"
    args = ["--code", str(SCRIPTS), "--scoring-script", "score_slow_init.py"]
    started, url = template.start(args, replica_env(TEST_INIT_FAIL="1"), SCRIPTS, log)

    def failed() -> bool:
        try:
            answer = httpx.get(f"{url}/health/ready")
        except httpx.TransportError:
            return False
        return [w["state"] for w in answer.json()["error"]["details"]["workers"]] == ["failed"]

    assert until(failed, 60), "readiness reports the worker that could not load"
    assert "cannot find the model file" in log.read_text()
    os.killpg(started.pid, signal.SIGTERM)
    assert until(lambda: not process_group(started.pid))


def test_a_replica_with_nothing_to_serve_exits_and_is_reaped(template, models, tmp_path):
    log = tmp_path / "replica.log"
    started, _ = template.start(["--model-dir", str(models / "empty")], replica_env(), models / "empty", log)
    assert until(lambda: not process_group(started.pid), 60), "it exits, and no zombie is left"
    assert "No MLmodel file" in log.read_text()


def _exchange(path: Path, raw: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(raw)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return json.loads(answer)


def _request(tmp_path: Path, **change) -> bytes:
    message = {
        "argv": ["--port", "0"],
        "env_names": sorted(replica_env()),
        "cwd": str(tmp_path),
        "log": str(tmp_path / "r.log"),
    }
    return json.dumps(message | change).encode() + b"\n"


def test_the_template_answers_bad_requests_with_an_error_and_keeps_serving(template, models, tmp_path):
    pid = warm.template_pid(template.path)
    bad = {
        b"not json\n": "not JSON",
        b"[1, 2]\n": "a JSON object",
        b"": "not JSON",
        b"x" * (warm.MAX_REQUEST_BYTES + 10): "longer than",
        _request(tmp_path, argv="--port 0"): "argv must be a list of strings",
        _request(tmp_path, env_names={"PORT": "5001"}): "env_names must be a list of strings",
        _request(tmp_path, env_names=["A=B"]): "no environment can",
        _request(tmp_path, env=replica_env()): "fields this template does not know: env",
        _request(tmp_path, cwd="relative/folder"): "cwd must be",
        _request(tmp_path, cwd=str(tmp_path / "missing")): "cwd must be",
        _request(tmp_path, log="replica.log"): "log must be an absolute path",
        _request(tmp_path, log=str(tmp_path / "missing" / "r.log")): "cannot open the log file",
        _request(tmp_path, env_names=[*replica_env(), "PYTHONHASHSEED"]): "only a new interpreter reads",
        _request(
            tmp_path, env_names=[*replica_env(), "LD_PRELOAD"]
        ): "only a new interpreter reads LD_PRELOAD",
    }
    for raw, reason in bad.items():
        answer = _exchange(template.path, raw)
        assert reason in answer.get("error", ""), (raw[:80], answer)
    # A caller that leaves without a word is no reason to stop either.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(template.path))
    with pytest.raises(warm.WarmStartUnavailable, match="only a new interpreter reads PYTHONOPTIMIZE"):
        warm.request_start(template.path, [], replica_env(PYTHONOPTIMIZE="1"), str(tmp_path), "/dev/null")

    assert warm.template_pid(template.path) == pid == template.process.pid
    started, url = template.start(
        ["--model-dir", str(models / "tensor")], replica_env(), models / "tensor", tmp_path / "good.log"
    )
    _wait_ready(url)
    os.killpg(started.pid, signal.SIGTERM)
    assert until(lambda: not process_group(started.pid))


def test_a_second_template_for_a_socket_in_use_steps_aside(template):
    second = subprocess.run(
        warm.command(sys.executable, template.path),
        env=replica_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0
    assert "Another template serves this socket" in second.stdout
    assert warm.template_pid(template.path) == template.process.pid


def test_nothing_listening_is_told_apart_from_a_refusal(tmp_path):
    with pytest.raises(warm.TemplateNotRunning):
        warm.request_start(tmp_path / "run" / "warm.sock", [], {}, str(tmp_path), str(tmp_path / "r.log"))
    assert warm.template_pid(tmp_path / "run" / "warm.sock") is None
    assert warm.stop_template(tmp_path / "run" / "warm.sock") is False


def _memory_holds(pid: int, needle: bytes) -> bool:
    """Whether the writable memory of process `pid` holds `needle` (read as root through /proc)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            start, end = (int(part, 16) for part in span.split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, OverflowError, ValueError):
                continue
    return False


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_the_template_never_holds_a_replicas_environment_values(template, models, tmp_path):
    """Every later replica inherits the template's memory: a deployment's secrets never enter it."""
    secret = f"replica-secret-{os.getpid()}-{time.time_ns()}"
    started, url = template.start(
        ["--model-dir", str(models / "tensor")],
        replica_env(DEPLOYMENT_PASSWORD=secret),
        models / "tensor",
        tmp_path / "secret.log",
    )
    _wait_ready(url)
    assert _memory_holds(started.pid, secret.encode()), "the replica has it"
    assert not _memory_holds(template.process.pid, secret.encode()), "the template does not"
    os.killpg(started.pid, signal.SIGTERM)
    assert until(lambda: not process_group(started.pid))
