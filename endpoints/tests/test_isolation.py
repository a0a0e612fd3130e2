"""Replicas on the local target run other people's code: what that code tries against Studio fails.

A scoring script deployed through the REST API tries each escape a Contributor's code could try: read
Studio's secrets, its database and another deployment's code; write outside its scratch folder; signal,
ptrace or read the environment of Studio's processes; find the template's environment in its own. Each
is checked on a replica started cold and on one forked from the warm template.
"""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings as django_settings

from endpoints.models import OnlineDeployment, Replica
from endpoints.targets.local import installation_marker, start_template, template_socket
from endpoints.tests.support import ENDPOINTS, deploy, register, score, upload_code, wait_for_template
from registry.tests.factories import zip_bytes
from serving import sandbox, warm
from studio.testing import signed_in
from studio.testkit import until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints"),
]

if os.geteuid() != 0:
    pytest.skip(
        "replicas are sandboxed only when Studio runs as root; these tests run as another user",
        allow_module_level=True,
    )

ATTEMPTS = b"""
import ctypes, json, os, signal

libc = ctypes.CDLL(None, use_errno=True)


def init():
    pass


def _try(action):
    try:
        action()
        return "done"
    except OSError as exc:
        return exc.strerror or str(exc)


def _read(path):
    with open(path, "rb") as handle:
        handle.read(1)


def _write(path):
    with open(path, "w") as handle:
        handle.write("planted")


def _ptrace(pid):
    if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH


def run(raw):
    asked = json.loads(raw)
    with open("/proc/self/environ", "rb") as handle:
        environ = handle.read().decode(errors="replace")
    with open("/proc/self/status") as handle:
        status = dict(line.split(":", 1) for line in handle if ":" in line)
    return {
        "uid": os.getuid(),
        "capabilities": status["CapEff"].strip(),
        "read": {path: _try(lambda path=path: _read(path)) for path in asked["read"]},
        "write": {path: _try(lambda path=path: _write(path)) for path in asked["write"]},
        "signal": {str(pid): _try(lambda pid=pid: os.kill(pid, 0)) for pid in asked["pids"]},
        "ptrace": {str(pid): _try(lambda pid=pid: _ptrace(pid)) for pid in asked["pids"]},
        "their_environ": {str(pid): _try(lambda pid=pid: _read(f"/proc/{pid}/environ")) for pid in asked["pids"]},
        "environ_leaks": [word for word in asked["secrets"] if word in environ],
        "scratch": _try(lambda: _write("/tmp/scratch")),
    }
"""
LEAKED = "leak-me-if-you-can-0123456789abcdef"


@pytest.fixture(params=["cold", "warm"])
def start(request, settings, tmp_path, monkeypatch):
    """A Studio home of the test's own; for "warm", with its template running, started (as `studio up`
    starts it) from a process whose environment holds an Admin token."""
    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_HOME.mkdir(mode=0o700)
    settings.STUDIO_WARM_START = request.param == "warm"
    monkeypatch.setenv("STUDIO_ADMIN_TOKEN", LEAKED)
    if request.param == "warm":
        path = template_socket()
        start_template(path)
        wait_for_template(path)
        yield request.param
        warm.stop_template(path)
    else:
        yield request.param


def _deploy_body(client, endpoint: str, deployment: str, script: bytes) -> dict:
    """Create `endpoint` and deploy `script` on the notes model to it, as a Contributor would."""
    code = upload_code(client, zip_bytes({"score.py": script}))
    client.post(ENDPOINTS, {"name": endpoint}, format="json")
    spec = {
        "name": deployment,
        "model": "azureml:notes:1",
        "code_configuration": {"code": code, "scoring_script": "score.py"},
    }
    return deploy(client, endpoint, spec)


def _deploy_script(client, endpoint: str, deployment: str, script: bytes) -> Replica:
    body = _deploy_body(client, endpoint, deployment, script)
    assert body["job"]["state"] == "succeeded", body["job"]["error"]
    return Replica.objects.get(deployment__endpoint__name=endpoint, deployment__name=deployment)


def test_a_scoring_script_cannot_reach_studio_or_other_deployments(team, start):
    client = team.contributor.client()
    register(client, "notes", zip_bytes({"model/notes.txt": b"nothing to load"}))
    other = _deploy_script(client, "other", "blue", b"def init():\n    pass\n\ndef run(raw):\n    return 1\n")
    replica = _deploy_script(client, "probe", "blue", ATTEMPTS)
    assert replica.handle["warm"] is (start == "warm")
    assert replica.handle["isolation"] == "sandboxed"

    home = Path(django_settings.STUDIO_HOME)
    # Studio's secrets and database live in its home, 0600 like these.
    for name in ("secret_key", "gateway_secret", "signing_key", "studio.db"):
        (home / name).write_text("a secret of Studio's")
        (home / name).chmod(0o600)
    other_code = Path(other.handle["code_dir"]) if "code_dir" in other.handle else None
    other_cwd = Path(f"/proc/{other.handle['pid']}/cwd").resolve()
    own_code = Path(f"/proc/{replica.handle['pid']}/cwd").resolve()
    asked = {
        "read": [
            *(str(home / name) for name in ("secret_key", "gateway_secret", "signing_key", "studio.db")),
            str(other_cwd / "score.py"),
            *([str(other_code)] if other_code else []),
            "/root/.bashrc",
            "/etc/shadow",
        ],
        "write": [
            str(own_code / "score.py"),
            str(home / "planted"),
            str(other_cwd / "score.py"),
            str(Path(django_settings.BASE_DIR) / "planted"),
            "/etc/planted",
            "/var/planted",
        ],
        "pids": [os.getpid(), *([warm.template_pid(template_socket())] if start == "warm" else [])],
        "secrets": [LEAKED, str(django_settings.SECRET_KEY)],
    }
    answer = score(replica.url, asked)
    assert answer.status_code == 200, answer.text
    seen = answer.json()

    assert seen["uid"] == django_settings.STUDIO_REPLICA_UID_BASE + replica.deployment.pk
    assert int(seen["capabilities"], 16) == 0, "no capability left"
    # Hidden paths do not exist in its view; the others are refused.
    assert set(seen["read"].values()) <= {"No such file or directory", "Permission denied"}, seen["read"]
    assert "done" not in seen["write"].values(), seen["write"]
    assert not (home / "planted").exists()
    assert (own_code / "score.py").read_bytes() == ATTEMPTS
    assert set(seen["signal"].values()) == {"Operation not permitted"}, seen["signal"]
    assert set(seen["ptrace"].values()) == {"Operation not permitted"}, seen["ptrace"]
    assert set(seen["their_environ"].values()) == {"Permission denied"}, seen["their_environ"]
    assert seen["environ_leaks"] == [], "Studio's environment is not in the replica's"
    assert seen["scratch"] == "done", "its private /tmp is writable"

    # Nobody else sees what it wrote there: the scratch folder is its own.
    assert not Path("/tmp/scratch").exists()


def test_two_replicas_of_different_deployments_run_as_different_users(team, start):
    client = team.contributor.client()
    register(client, "notes", zip_bytes({"model/notes.txt": b"nothing to load"}))
    script = b"import os\n\ndef init():\n    pass\n\ndef run(raw):\n    return os.getuid()\n"
    first = _deploy_script(client, "first", "blue", script)
    second = _deploy_script(client, "second", "blue", script)
    uids = {score(first.url, {}).json(), score(second.url, {}).json()}
    assert len(uids) == 2 and 0 not in uids


def test_the_api_and_page_say_how_a_deployment_is_isolated(team, start):
    client = team.contributor.client()
    register(client, "notes", zip_bytes({"model/notes.txt": b"nothing to load"}))
    _deploy_script(client, "shown", "blue", b"def init():\n    pass\n\ndef run(raw):\n    return 1\n")
    shown = client.get(f"{ENDPOINTS}shown/deployments/blue/").json()
    assert shown["isolation"] == "sandboxed"
    page = signed_in(team.contributor.user).get("/endpoints/shown/details/")
    assert "sandboxed" in page.content.decode()


def test_where_isolation_is_off_the_replica_runs_unsandboxed_and_says_so(team, settings, tmp_path):
    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_WARM_START = False
    settings.STUDIO_LOCAL_ISOLATION = "off"
    client = team.contributor.client()
    register(client, "notes", zip_bytes({"model/notes.txt": b"nothing to load"}))
    script = b"import os\n\ndef init():\n    pass\n\ndef run(raw):\n    return os.getuid()\n"
    replica = _deploy_script(client, "open", "blue", script)
    assert score(replica.url, {}).json() == os.getuid()
    shown = client.get(f"{ENDPOINTS}open/deployments/blue/").json()
    assert shown["isolation"].startswith("off (STUDIO_LOCAL_ISOLATION=off)")
    assert "not isolated" in signed_in(team.contributor.user).get("/endpoints/open/details/").content.decode()


def test_a_host_that_cannot_sandbox_says_why():
    """Studio run as another user than root (here: inside a sandbox) learns, for real, why it cannot."""
    policy = sandbox.Policy(
        uid=65534,
        gid=65534,
        hide=[os.path.expanduser("~"), str(django_settings.BASE_DIR)],
        read_only=[str(Path(django_settings.BASE_DIR) / "serving"), sys.prefix, sys.base_prefix],
    )
    probe = [sys.executable, "-c", "from serving import sandbox; print(sandbox.check(65534))"]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(django_settings.BASE_DIR)}
    done = sandbox.spawn(policy, probe, env, "/", output=subprocess.PIPE)
    output, _ = done.communicate(timeout=60)
    assert done.returncode == 0, output
    assert b"does not run as root" in output


def test_the_launcher_runs_nothing_of_the_callers_as_root(tmp_path):
    """A cold replica's launcher starts as root in the deployment's folder with its environment: a
    `serving/sandbox.py` of the deployment's code, or a variable that makes Python load code, must not
    run before the sandbox is entered."""
    planted = tmp_path / "code"
    (planted / "serving").mkdir(parents=True)
    (planted / "serving" / "__init__.py").write_text("")
    marker = tmp_path / "ran-as-root"
    (planted / "serving" / "sandbox.py").write_text(f"open({str(marker)!r}, 'w').write('hijacked')\n")
    (planted / "user.pth").write_text(f"import os; open({str(marker)!r}, 'w').write(str(os.getuid()))\n")
    planted.chmod(0o755)
    tmp_path.chmod(0o755)
    policy = sandbox.Policy(
        uid=django_settings.STUDIO_REPLICA_UID_BASE + 999_999,
        gid=django_settings.STUDIO_REPLICA_UID_BASE,
        hide=[os.path.expanduser("~")],
        read_only=[sys.prefix, sys.base_prefix, str(planted)],
    )
    env = {
        "PYTHONPATH": str(planted),
        "PYTHONUSERBASE": str(planted),
        "PYTHONSTARTUP": str(planted / "user.pth"),
    }
    done = sandbox.spawn(policy, ["/usr/bin/id", "-u"], env, str(planted), output=subprocess.PIPE)
    output, _ = done.communicate(timeout=60)
    assert done.returncode == 0, output
    assert int(output) == policy.uid
    assert not marker.exists(), "code of the caller's ran as root"


@pytest.mark.parametrize("mode", ["required", None])
def test_where_isolation_is_required_but_unavailable_no_replica_starts(
    team, settings, tmp_path, monkeypatch, mode
):
    """Unset, the mode is `required` for a Studio run as root: a check that fails refuses, it does not
    quietly run replicas unsandboxed."""
    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_LOCAL_ISOLATION = mode
    monkeypatch.setattr(
        sandbox, "check", lambda uid: "this host does not allow it (unshare: Operation not permitted)"
    )
    client = team.contributor.client()
    register(client, "notes", zip_bytes({"model/notes.txt": b"nothing to load"}))
    body = _deploy_body(client, "refused", "blue", b"def init():\n    pass\n\ndef run(raw):\n    return 1\n")
    assert body["job"]["state"] == "failed"
    assert "STUDIO_LOCAL_ISOLATION=required" in body["job"]["error"]
    assert "unshare: Operation not permitted" in body["job"]["error"]
    assert not Replica.objects.filter(deployment__endpoint__name="refused").exclude(handle={}).exists()
    assert OnlineDeployment.objects.get(endpoint__name="refused").provisioning_state == "Failed"


def test_a_replica_sees_its_installation_removed_and_stops(team, start):
    client = team.contributor.client()
    register(client, "notes", zip_bytes({"model/notes.txt": b"nothing to load"}))
    replica = _deploy_script(
        client, "gone", "blue", b"def init():\n    pass\n\ndef run(raw):\n    return 1\n"
    )
    installation_marker().unlink()
    assert until(lambda: not _answers(replica.url), 60), "a sandboxed replica outlived its installation"


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/health/live", timeout=1)
    except httpx.TransportError:
        return False
    return True
