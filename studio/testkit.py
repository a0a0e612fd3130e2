"""What every test suite shares: the personas' password, free loopback ports, waiting for a server."""

import socket
import subprocess
import time

from serving import processes

PASSWORD = "correct-horse-battery-staple"  # noqa: S105 (test personas)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


GATEWAY_SECRET = "gateway-secret-for-tests"  # noqa: S105 (a test value)


class GatewayProcess:
    """A real gateway process (`python -m serving.gateway`) long-polling a control plane."""

    def __init__(
        self,
        control_plane_url: str,
        spool,
        extra_env: dict[str, str] | None = None,
        gateway_id: str = "gw-test",
    ):
        import os
        import sys
        from pathlib import Path

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [
            sys.executable, "-m", "serving.gateway", "--port", str(self.port),
            "--control-plane-url", control_plane_url, "--spool-dir", str(spool), "--gateway-id", gateway_id,
        ]  # fmt: skip
        self.env = {
            **os.environ,
            "STUDIO_GATEWAY_SECRET": GATEWAY_SECRET,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            **(extra_env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, timeout=60, process=self.process)

    def stop(self) -> None:
        """A clean stop: the open spool segment is closed and handed over."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def kill(self) -> None:
        import os
        import signal

        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(20)


def until(predicate, timeout: float = 15.0, every: float = 0.1) -> bool:
    """Whether predicate() became true within timeout seconds, asking every `every` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


# The one /proc reader, under the names the tests know it by.
process_stat = processes.stat
process_group = processes.group


class Gate:
    """A loopback port that refuses connections until the test opens it: what a replica's init() waits
    on to start exactly as slowly as the test wants. A port rather than a file, since a sandboxed replica
    sees no file of the test's, while it shares the host's network."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        self.address = f"127.0.0.1:{self._socket.getsockname()[1]}"

    def open(self) -> None:
        self._socket.listen(64)

    def close(self) -> None:
        self._socket.close()


# A scoring script whose init() waits until the Gate at $RELEASE_ADDRESS opens.
SLOW_INIT = """
import os
import socket
import time


def init():
    host, port = os.environ["RELEASE_ADDRESS"].rsplit(":", 1)
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)


def run(raw_data):
    return "ready"
"""
