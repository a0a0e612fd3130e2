"""A Contributor's code in a docker replica cannot reach anything of Studio or the host.

A scoring script deployed through the REST API tries, from inside its container, each way out a model's
code could take: Studio's files (it has no view of STUDIO_HOME), writing outside its private /tmp,
privileges (root, capabilities, setuid), the host's processes, Studio's secrets in its environment. It
answers what happened through the gateway, and each attempt must have failed. The image is built while
the worker's umask is 077, as a hardened host sets it: every file of the image must still be readable by
the replica's unprivileged user.

These need a Docker engine and a base image (`make docker-base-image`); they skip without, or fail when
STUDIO_REQUIRE_DOCKER=1 (CI).
"""

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings as django_settings

from endpoints.targets.docker import LABEL, PIDS_LIMIT, installation_id
from endpoints.tests.support import ENDPOINTS, deploy, register, upload_code
from registry.tests.factories import zip_bytes
from studio.testkit import GATEWAY_SECRET, until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints", "docker_target"),
]

UNPRIVILEGED = 65532

# Each attempt reports {"ok": True, "value": ...} or {"ok": False, "error": "<errno name>"}.
ESCAPE_PY = b"""
import errno
import json
import os


def init():
    pass


def _attempt(action):
    try:
        return {"ok": True, "value": action()}
    except OSError as exc:
        return {"ok": False, "error": errno.errorcode.get(exc.errno, str(exc))}


def _read(path):
    if os.path.isdir(path):
        return os.listdir(path)
    with open(path, "rb") as handle:
        return len(handle.read())


def _write(folder):
    path = os.path.join(folder, "escaped")
    with open(path, "w") as handle:
        handle.write("out")
    return path


def _status():
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return {name: fields.get(name) for name in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb", "NoNewPrivs")}


def _mount(point):
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if parts[1] == point:
                return {"type": parts[2], "options": parts[3].split(",")}
    return None


def _pids_max():
    for path in ("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"):
        if os.path.exists(path):
            with open(path) as limit:
                return limit.read().strip()
    return None


def _unreadable(roots):
    found = []
    for root in roots:
        for folder, folders, files in os.walk(root):
            if not os.access(folder, os.R_OK | os.X_OK):
                found.append(folder)
            found += [os.path.join(folder, name) for name in files
                      if not os.access(os.path.join(folder, name), os.R_OK)]
    return found[:20]


def run(raw_data):
    asked = json.loads(raw_data)
    home = os.path.expanduser("~")
    tmp = os.statvfs("/tmp")
    with open("/proc/1/cmdline", "rb") as init_process:
        pid_one = init_process.read().split(b"\\0")[0].decode()
    return {
        "read": {path: _attempt(lambda path=path: _read(path)) for path in asked["read"]},
        "write": {folder: _attempt(lambda folder=folder: _write(folder)) for folder in asked["write"]},
        "write_tmp": _attempt(lambda: _write("/tmp")),
        "write_home": _attempt(lambda: _write(home)),
        "home": home,
        "tmp_bytes": tmp.f_blocks * tmp.f_frsize,
        "tmp_mount": _mount("/tmp"),
        "uid": [os.getuid(), os.geteuid()],
        "gid": [os.getgid(), os.getegid()],
        "groups": os.getgroups(),
        "setuid_root": _attempt(lambda: os.setuid(0)),
        "status": _status(),
        "pid_one": pid_one,
        "signal_host": {str(pid): _attempt(lambda pid=pid: os.kill(pid, 0)) for pid in asked["pids"]},
        "processes": sorted(int(name) for name in os.listdir("/proc") if name.isdigit()),
        "pids_max": _pids_max(),
        "environment": dict(os.environ),
        "unreadable": _unreadable(asked["readable"]),
    }
"""

# Studio's control plane reads these; none belongs in a replica, whatever their value.
CONTROL_PLANE_VARIABLES = {
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "STUDIO_HOME",
    "STUDIO_GATEWAY_SECRET",
    "STUDIO_GATEWAY_SECRET_FILE",
    "STUDIO_ARTIFACT_STORE",
    "DOCKER_HOST",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
# What the model server is given of Studio's own names: where it is, and its deployment's key.
REPLICA_VARIABLES = {
    "STUDIO_MODEL_DIR",
    "STUDIO_ENDPOINT",
    "STUDIO_DEPLOYMENT",
    "STUDIO_REPLICA",
    "STUDIO_REPLICA_KEY",
}


@pytest.fixture
def studio_secrets(settings, monkeypatch) -> Iterator[dict[str, Path]]:
    """Studio's files where its settings put them, and its secrets in the worker's environment as
    production has them there: the replica must see none of them."""
    home = Path(settings.STUDIO_HOME)
    gateway_secret = home / f"gateway-secret-{os.getpid()}"
    gateway_secret.write_text(GATEWAY_SECRET)
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET_FILE", str(gateway_secret))
    monkeypatch.setenv("SECRET_KEY", settings.SECRET_KEY)
    installation_id()
    paths = {"home": home, "gateway secret": gateway_secret, "installation id": home / "installation-id"}
    if "sqlite" in django_settings.DATABASES["default"]["ENGINE"]:  # a server's database is no file here
        paths["database"] = Path(django_settings.DATABASES["default"]["NAME"])
    if (home / "secret_key").exists():  # made by Studio unless SECRET_KEY came from the environment
        paths["secret key"] = home / "secret_key"
    for name, path in paths.items():
        assert path.exists(), f"the {name} is not at {path} on the host"
    yield paths
    gateway_secret.unlink()


def test_a_scoring_script_cannot_reach_studio_or_the_host_from_its_container(
    team, gateway, docker_target, studio_secrets
):
    client = team.contributor.client()
    register(client, "probe", zip_bytes({"model/weights.txt": b"0.5\n"}))
    code = upload_code(client, zip_bytes({"onlinescoring/score.py": ESCAPE_PY}))
    endpoint = client.post(ENDPOINTS, {"name": "escape"}, format="json").json()
    spec = {
        "name": "blue",
        "model": "azureml:probe:1",
        "code_configuration": {"code": code, "scoring_script": "onlinescoring/score.py"},
        "environment_variables": {"GREETING": "hello"},
        "target": "docker",
    }
    previous = os.umask(0o077)  # the image must not depend on the worker's umask
    try:
        job = deploy(client, "escape", spec)["job"]
    finally:
        os.umask(previous)
    assert job["state"] == "succeeded", job["error"]

    (container,) = docker_target.containers.list(
        filters={"label": [f"{LABEL}={installation_id()}", f"{LABEL}.endpoint=escape"]}
    )
    host_config = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == f"{UNPRIVILEGED}:{UNPRIVILEGED}"
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"] and not host_config["CapAdd"]
    assert host_config["SecurityOpt"] == ["no-new-privileges"]
    assert host_config["PidsLimit"] == PIDS_LIMIT
    assert host_config["Privileged"] is False
    assert list(host_config["Tmpfs"]) == ["/tmp"]
    assert not host_config["Binds"] and container.attrs["Mounts"] == [], "nothing of the host is mounted"

    key = client.post(f"{ENDPOINTS}escape/credentials/").json()["primaryKey"]
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    model_dir, code_dir = env["AZUREML_MODEL_DIR"], env["AZUREML_SOURCE_DIRECTORY"]
    asked = {
        "read": [str(path) for path in studio_secrets.values()]
        + ["/var/run/docker.sock", "/run/docker.sock"],
        "write": [
            code_dir,
            f"{code_dir}/onlinescoring",
            model_dir,
            "/",
            "/var/tmp",
            "/opt/studio/env",
            "/etc",
        ],
        "pids": [os.getpid(), gateway.process.pid],
        "readable": ["/opt/studio", "/var/azureml-app"],
    }

    def attempt():
        return httpx.post(
            endpoint["scoring_uri"], json=asked, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    assert until(lambda: attempt().status_code == 200, timeout=30)
    seen = attempt().json()

    for path, result in seen["read"].items():
        assert result == {"ok": False, "error": "ENOENT"}, f"{path} is visible in the replica: {result}"
    for folder, result in seen["write"].items():
        assert result == {"ok": False, "error": "EROFS"}, (
            f"writing in {folder} did not meet a read-only filesystem: {result}"
        )
    assert seen["write_tmp"]["ok"] and seen["write_home"]["ok"], seen
    assert seen["home"] == "/tmp"
    assert seen["tmp_mount"]["type"] == "tmpfs"
    assert {"nosuid", "nodev"} <= set(seen["tmp_mount"]["options"])
    assert 0 < seen["tmp_bytes"] <= 512 * 1024**2, "/tmp is size-limited"

    assert seen["uid"] == [UNPRIVILEGED, UNPRIVILEGED] and seen["gid"] == [UNPRIVILEGED, UNPRIVILEGED]
    assert set(seen["groups"]) <= {UNPRIVILEGED}
    assert seen["setuid_root"] == {"ok": False, "error": "EPERM"}
    status = seen["status"]
    for capabilities in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, f"{capabilities} is {status[capabilities]}"
    assert status["NoNewPrivs"] == "1", "setuid programs could raise its privileges"

    # Its own pid namespace: pid 1 is the container's init, and the host's processes do not exist there.
    assert re.search(r"docker-init|tini", seen["pid_one"]), seen["pid_one"]
    assert not set(asked["pids"]) & set(seen["processes"]), seen["processes"]
    for pid, result in seen["signal_host"].items():
        assert result == {"ok": False, "error": "ESRCH"}, f"host process {pid} got a signal: {result}"
    assert seen["pids_max"] == str(PIDS_LIMIT)

    environment = seen["environment"]
    assert environment["GREETING"] == "hello", "the deployment's own variables are there"
    assert not CONTROL_PLANE_VARIABLES & set(environment), environment.keys()
    studio_names = {name for name in environment if name.startswith("STUDIO_")}
    assert studio_names <= REPLICA_VARIABLES, studio_names - REPLICA_VARIABLES
    secrets = {django_settings.SECRET_KEY, GATEWAY_SECRET}
    assert not secrets & set(environment.values()), "a Studio secret is in the replica's environment"

    assert seen["unreadable"] == [], "files of the image the replica's user cannot read"
    assert attempt().status_code == 200, "the replica still serves after every attempt"
