"""STUDIO_HOME and what Studio's processes create in it are readable by Studio's user only
(studio/home.py), from the first start of a fresh installation and after the next start of an old one.

Each case starts the real processes in a fresh STUDIO_HOME, as a user does: `manage.py migrate` and
`bootstrap` (what `studio up` and the compose file's migrate service run first), `studio up` itself,
and the gateway.
"""

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

from studio.testkit import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
STUDIO = Path(sys.executable).with_name("studio")
# A user's shell: what Studio creates is private because Studio makes it so, not because of the umask
# this test process inherited.
SHELL_UMASK = 0o022


def embedded_env(home: Path) -> dict[str, str]:
    """The embedded defaults (SQLite, the file cache, a generated secret key) under `home`."""
    unset = {"DATABASE_URL", "CELERY_BROKER_URL", "STUDIO_CACHE_URL", "SECRET_KEY", "STUDIO_GATEWAY_SECRET"}
    env = {key: value for key, value in os.environ.items() if key not in unset}
    return env | {
        "STUDIO_HOME": str(home),
        "STUDIO_ADMIN_USER": "ada",
        "STUDIO_ADMIN_PASSWORD": "file-modes-password-42",
    }


def manage(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        cwd=REPO,
        env=embedded_env(home),
        capture_output=True,
        text=True,
        timeout=180,
        umask=SHELL_UMASK,
    )


def start(home: Path) -> None:
    for command in (["migrate", "--noinput"], ["bootstrap"]):
        done = manage(*command, home=home)
        assert done.returncode == 0, done.stdout + done.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def shared(home: Path) -> list[str]:
    """Everything under `home` that another user could read, write or enter."""
    found = [home, *home.rglob("*")]
    return [f"{path} {mode(path):o}" for path in found if not path.is_symlink() and mode(path) & 0o077]


def test_a_fresh_installation_is_its_users_alone(tmp_path):
    home = tmp_path / "home"

    start(home)

    assert mode(home) == 0o700
    assert mode(home / "studio.db") == 0o600
    assert mode(home / "secret_key") == 0o600
    assert shared(home) == []


def test_the_next_start_makes_an_older_installation_private(tmp_path):
    home = tmp_path / "home"
    start(home)
    # As an older Studio left it: a 0755 home with a 0644 database, its journal files and secrets.
    home.chmod(0o755)
    for path in home.iterdir():
        if path.is_file():
            path.chmod(0o644)
    assert mode(home / "studio.db") == 0o644

    done = manage("migrate", "--noinput", home=home)

    assert done.returncode == 0, done.stderr
    assert mode(home) == 0o700
    assert [path.name for path in home.iterdir() if path.is_file() and mode(path) != 0o600] == []


def test_it_refuses_a_folder_shared_by_every_user(tmp_path):
    shared_folder = tmp_path / "tmp-like"
    shared_folder.mkdir()
    shared_folder.chmod(0o1777)

    done = manage("check", home=shared_folder)

    assert done.returncode != 0
    assert "STUDIO_HOME=" in done.stderr and "shared with other users" in done.stderr, done.stderr
    assert mode(shared_folder) == 0o1777, "the shared folder is left as it was"


def test_studio_up_makes_its_home_private_even_when_it_cannot_start(tmp_path):
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(STUDIO), "up", "--port", str(port), "--gateway-port", str(free_port())],
            cwd=tmp_path,
            env=embedded_env(home),
            capture_output=True,
            text=True,
            timeout=120,
            umask=SHELL_UMASK,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {port} is already in use" in done.stdout
    assert mode(home) == 0o700
    assert shared(home) == []


def test_the_gateway_keeps_its_secret_spool_and_route_table_private(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "serving.gateway", "--port", str(port)],
        cwd=tmp_path,
        # No control plane answers: the gateway still makes its secret and its spool, and serves.
        env=embedded_env(home) | {"STUDIO_CONTROL_PLANE_URL": f"http://127.0.0.1:{free_port()}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        umask=SHELL_UMASK,
    )
    try:
        wait_for_port(port, process=gateway)
        assert mode(home / "gateway_secret") == 0o600
        assert (home / "spool" / "gateway").is_dir()
        assert shared(home) == []
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=30)
