"""Settings are read strictly at start: each case runs `manage.py` in a fresh process with its own env."""

import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What a deployment may set; every test starts from none of them, as a newcomer's shell would.
STUDIO_VARIABLES = (
    "DEBUG",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "STUDIO_CACHE_URL",
    "STUDIO_HTTPS",
    "ALLOWED_HOSTS",
    "STUDIO_ARTIFACT_STORE",
    "STUDIO_TELEMETRY_STORE",
)


def python(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if key not in STUDIO_VARIABLES}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=clean | {"STUDIO_HOME": str(home)} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def manage(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    return python(str(REPO / "manage.py"), *args, home=home, **env)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://db.example.com/studio"),
        ("CELERY_BROKER_URL", "sqs://queue"),
        ("STUDIO_ARTIFACT_STORE", "ftp://files.example.com/"),
        ("STUDIO_HTTPS", "sure"),
    ],
)
def test_it_refuses_to_start_with_a_bad_value_and_names_the_variable(tmp_path, variable, value):
    result = manage("check", home=tmp_path, **{variable: value})
    assert result.returncode != 0
    assert f"{variable}=" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr.splitlines()[-1]


def test_it_refuses_a_studio_home_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = manage("check", home=blocker / "home")
    assert result.returncode != 0
    assert "STUDIO_HOME=" in result.stderr, result.stderr


def test_it_generates_the_secret_key_once_and_keeps_it(tmp_path):
    show_key = ("-c", "from studio import settings; print(settings.SECRET_KEY)")
    first = python(*show_key, home=tmp_path)
    second = python(*show_key, home=tmp_path)
    other_home = python(*show_key, home=tmp_path / "other")

    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert len(key) >= 50
    assert second.stdout.strip() == key
    assert other_home.stdout.strip() != key
    key_file = tmp_path / "secret_key"
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_deploy_checks_are_clean_with_production_settings(tmp_path):
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        home=tmp_path,
        STUDIO_HTTPS="true",
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="false",
        ALLOWED_HOSTS="studio.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
