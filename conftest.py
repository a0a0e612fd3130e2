"""Fixtures every test module can use: a team of personas with tokens, stores, a real S3 server."""

import contextlib
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from studio.testkit import PASSWORD, free_port, wait_for_port


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """Personas sign in often; the production hasher's cost buys nothing in tests."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def download_cache(name: str) -> Path:
    """A folder of downloads that outlives the test run, so the next run on this machine (CI runs where a
    developer just did) fetches nothing again; what tests build from them is still built afresh."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "studio-tests" / name


@pytest.fixture(autouse=True, scope="session")
def persistent_download_cache():
    """Environment builds (and the Studio processes tests start) download into one uv cache that outlives
    the run; every environment is still built in its test's STUDIO_HOME. uv locks its cache, so
    concurrent runs share it safely. A UV_CACHE_DIR set by whoever runs the tests wins."""
    if os.environ.get("UV_CACHE_DIR"):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UV_CACHE_DIR", str(download_cache("uv")))
        yield


@pytest.fixture(autouse=True)
def isolated_stores(request, tmp_path):
    """Each test gets its own artifact and telemetry folders (Django tests only)."""
    if "settings" not in request.fixturenames and not request.node.get_closest_marker("django_db"):
        needs_django = any(name in request.fixturenames for name in ("db", "transactional_db", "live_server"))
        if not needs_django:
            yield
            return
    settings = request.getfixturevalue("settings")
    settings.STUDIO_ARTIFACT_STORE = f"file://{tmp_path / 'artifacts'}"
    settings.STUDIO_TELEMETRY_STORE = f"file://{tmp_path / 'telemetry'}"
    upload_tmp = tmp_path / "upload-tmp"
    upload_tmp.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(upload_tmp)
    yield


@pytest.fixture(autouse=True)
def route_table_watcher_stopped():
    """The route-table watcher a test's long-polls started stops with the test: its connections must not
    outlive the test database (PostgreSQL refuses to drop a database in use), nor its idea of the version
    leak into the next test."""
    yield
    notify = sys.modules.get("endpoints.notify")  # imported only by tests that served a long-poll
    if notify is not None:
        notify.stop()


@dataclass
class Persona:
    user: object
    token: str
    role: str | None

    def client(self):
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.token}")
        return client


@dataclass
class Team:
    """The personas of one workspace: admin, contributor, reader, and an outsider with no role."""

    people: dict[str, Persona] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Persona:
        try:
            return self.people[name]
        except KeyError:
            raise AttributeError(name) from None


@pytest.fixture
def team(db) -> Team:
    from django.contrib.auth.models import User

    from studio.models import AccessToken
    from studio.roles import ensure_role_groups, set_role

    ensure_role_groups()
    team = Team()
    for name, role in (
        ("admin", "Admin"),
        ("contributor", "Contributor"),
        ("reader", "Reader"),
        ("outsider", None),
    ):
        user = User.objects.create_user(name, f"{name}@example.com", PASSWORD)
        if role:
            set_role(user, role)
        _, raw = AccessToken.issue(user, f"{name} token")
        team.people[name] = Persona(user, raw, role)
    return team


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto in server mode) on loopback, for the whole session."""
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "studio", "AWS_SECRET_ACCESS_KEY": "studio-secret"}
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the S3 server, with the AWS_* variables set as production sets them."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "studio")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "studio-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"studio-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture
def eager_jobs(settings):
    """Run each job in the request that starts it, once its transaction commits."""
    from studio.celery import app

    # Read before the setting changes: the first read of app.conf loads it from the settings as they are.
    previous = app.conf.task_always_eager
    settings.CELERY_TASK_ALWAYS_EAGER = True
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def cleanup_endpoints():
    """Stop every replica process a test started, and the warm template, whatever the test did."""
    yield
    from endpoints.models import Replica
    from endpoints.targets import get_target
    from endpoints.targets.local import template_socket
    from serving import warm

    for replica in Replica.objects.select_related("deployment"):
        get_target(replica.deployment.target).stop(replica)
    Replica.objects.all().delete()
    warm.stop_template(template_socket())


@pytest.fixture
def gateway(live_server, settings, monkeypatch, tmp_path):
    """A real gateway reading this test's route table; the control plane shares its secret."""
    from studio.testkit import GATEWAY_SECRET, GatewayProcess

    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    process = GatewayProcess(live_server.url, tmp_path / "gateway-spool")
    settings.STUDIO_GATEWAY_URL = process.url
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def wheel_folder() -> Path:
    """One wheel cache for every run: each package is fetched once, whichever test (or run) packs it.
    Packaging locks it while pip writes there, so concurrent runs share it safely."""
    return download_cache("wheels")


@pytest.fixture
def shared_wheels(settings, wheel_folder):
    settings.STUDIO_WHEEL_CACHE = wheel_folder
    return wheel_folder


@pytest.fixture(scope="session")
def docker_engine():
    """The Docker engine and a base image it has. Without them the tests skip, saying why, unless
    STUDIO_REQUIRE_DOCKER=1 (CI) makes that a failure."""
    import docker

    give_up = pytest.fail if os.environ.get("STUDIO_REQUIRE_DOCKER") == "1" else pytest.skip
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 -- whatever the reason, there is no engine to test with
        give_up(f"No Docker engine answers ({exc}); start dockerd to run the docker target's tests.")
    base = os.environ.get("STUDIO_DOCKER_BASE_IMAGE") or "studio/python:3.11"
    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        give_up(f"The base image {base} is not on the Docker host; build it with `make docker-base-image`.")
    started = time.time()
    yield client, base

    # The model images this run built (each run's models differ), then the build stages they leave
    # untagged, but for the install stages: those hold only the base image and the locked wheels, the
    # same from one run to the next, so the next run's builds take them from the engine's cache instead
    # of installing every wheel again. They are one per set of requirements; `docker image prune` clears
    # them.
    def built_here(image) -> bool:
        created = datetime.fromisoformat(image.attrs["Created"][:26].rstrip("Z") + "+00:00").timestamp()
        return created >= started - 1

    def install_stage(image) -> bool:
        made_by = image.history()[0]["CreatedBy"]
        return "-m venv" in made_by and "/opt/studio/requirements.lock" in made_by

    for image in client.images.list(filters={"label": "studio.content-key"}):
        if built_here(image):
            for tag in image.tags:
                client.images.remove(tag, force=True)
    for image in client.images.list(filters={"dangling": True}):
        with contextlib.suppress(docker.errors.APIError):
            if built_here(image) and not install_stage(image):
                client.images.remove(image.id, force=True)


@pytest.fixture
def docker_target(settings, docker_engine, shared_wheels):
    """The docker target on the test's engine; no container of this installation outlives the test."""
    from endpoints.targets.docker import LABEL, installation_id

    client, base = docker_engine
    settings.STUDIO_DOCKER_BASE_IMAGE = base
    yield client
    for container in client.containers.list(all=True, filters={"label": f"{LABEL}={installation_id()}"}):
        container.remove(force=True)
