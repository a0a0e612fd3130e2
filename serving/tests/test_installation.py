"""A replica stops by itself once the Studio installation that started it is gone (STUDIO_INSTALLATION)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

from serving import processes

CHECK_EVERY_S = "0.2"  # how often these tests' servers look at their installation's marker


def make_marker(folder: Path) -> Path:
    """An installation marker as the local target makes it: a file holding a random id."""
    marker = folder / "installation"
    marker.write_text(secrets.token_hex(16) + "\n")
    return marker


@pytest.fixture
def script(tmp_path: Path) -> list[str]:
    """The smallest scoring script: these tests are about the process, not the model."""
    (tmp_path / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw_data):\n    return 'ok'\n")
    return ["--code", str(tmp_path), "--scoring-script", "score.py"]


def _watched(marker: Path) -> dict[str, str]:
    return {"STUDIO_INSTALLATION": str(marker), "STUDIO_INSTALLATION_CHECK_S": CHECK_EVERY_S}


def test_a_replica_exits_once_its_installation_file_is_deleted(start_server, script, tmp_path):
    marker = make_marker(tmp_path)
    server = start_server("orphan", script, _watched(marker)).wait_ready()
    assert httpx.post(f"{server.url}/score", content=b"x").json() == "ok"
    workers = server.worker_pids()

    marker.unlink()
    assert server.process.wait(30) == 0, "it stops as on SIGTERM"
    gone = [line for line in server.logs() if line.get("event") == "installation_gone"]
    assert gone and f"{marker} was removed" in gone[0]["message"], "it says why"
    assert any(line.get("event") == "stopping" for line in server.logs()), "its workers were stopped"
    assert not [pid for pid in workers if processes.stat(pid)], "no worker is left behind"


def test_a_replica_exits_once_another_installation_took_its_place(start_server, script, tmp_path):
    marker = make_marker(tmp_path)
    server = start_server("replaced", script, _watched(marker)).wait_ready()
    make_marker(tmp_path)  # STUDIO_HOME deleted and made again: a new installation, a new id
    assert server.process.wait(30) == 0
    assert "now belongs to another Studio installation" in server.log_path.read_text()


def test_a_replica_whose_installation_is_already_gone_does_not_start(start_server, script, tmp_path):
    server = start_server("late", script, _watched(tmp_path / "installation"))
    assert server.process.wait(60) == 2
    assert "the Studio installation that started this is gone" in server.log_path.read_text()


def test_a_replica_keeps_serving_while_its_installation_is_there(start_server, script, tmp_path):
    marker = make_marker(tmp_path)
    server = start_server("kept", script, _watched(marker)).wait_ready()
    # Five checks' time: the same file, read again and again, is no reason to stop.
    with pytest.raises(subprocess.TimeoutExpired):
        server.process.wait(5 * float(CHECK_EVERY_S))
    assert httpx.post(f"{server.url}/score", content=b"x").json() == "ok"
    assert not [line for line in server.logs() if line.get("event") == "installation_gone"]
