"""Environment builds and packaging run no one's code on Studio's workers, and see nothing of Studio.

Requirements are refused, naming the line, unless they are released packages by name; what is accepted is
installed from wheels only; build processes get a private HOME and none of Studio's settings or secrets;
packaging is a job that Contributors start, and the Dockerfile it writes takes every value as one value.
"""

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from django.conf import settings as django_settings

from endpoints.environments import BUILD_ENVIRONMENT
from endpoints.models import Job, OnlineDeployment
from endpoints.tests.support import ENDPOINTS, register, upload_code
from registry.models import EnvironmentVersion
from studio.cli.main import cli
from studio.testkit import process_stat

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("eager_jobs", "cleanup_endpoints", "shared_wheels", "own_home"),
]

ENVIRONMENTS = "/api/v1/environments/"
ALLOWED_INDEX = "https://packages.example.com/simple"
REFUSED = [
    ("studio-probe @ file:///srv/studio-probe-1.0.tar.gz", "is a direct reference to file:///srv/"),
    ("studio-probe @ https://example.com/studio-probe-1.0.tar.gz", "is a direct reference to https://"),
    ("git+https://github.com/example/studio-probe.git", "installs from version control"),
    ("hg+https://example.com/studio-probe", "installs from version control"),
    ("svn+svn://example.com/studio-probe/trunk", "installs from version control"),
    ("bzr+lp:studio-probe", "installs from version control"),
    ("./studio-probe", "is a local path or file"),
    ("/srv/packages/studio-probe", "is a local path or file"),
    ("file:///srv/packages/studio-probe", "is a local path or file"),
    ("studio_probe-1.0-py3-none-any.whl", "is a local path or file"),
    ("https://example.com/studio_probe-1.0-py3-none-any.whl", "is a URL"),
    ("--index-url https://evil.example.com/simple", "an Admin has not allowed"),
    ("--extra-index-url https://evil.example.com/simple", "an Admin has not allowed"),
    ("-i https://evil.example.com/simple", "an Admin has not allowed"),
    ("--find-links https://evil.example.com/links", "is the pip option --find-links"),
    ("-f /srv/wheels", "is the pip option -f"),
    ("--trusted-host evil.example.com", "trusts the host evil.example.com"),
    ("-e git+https://github.com/example/studio-probe.git#egg=studio-probe", "is an editable install"),
    ("-e .", "is an editable install"),
    ("-r more-requirements.txt", "is the pip option -r"),
    ("-c constraints.txt", "is the pip option -c"),
    ("studio-probe==1.0 --hash=sha256:" + "0" * 64, "carries pip options"),
    ("studio-probe==${PROBE_VERSION}", "uses an environment variable"),
]


@pytest.fixture
def own_home(settings, tmp_path):
    """STUDIO_HOME of the test's own: the environments, build folders and caches it makes."""
    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_HOME.mkdir()
    return settings.STUDIO_HOME


def _message(response) -> str:
    return response.json()["error"]["message"]


def _probe_sdist(folder: Path, marker: Path) -> Path:
    """An sdist whose setup.py writes `marker` (and the environment it ran with) when anything runs it."""
    setup = (
        "import os, pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text(repr(dict(os.environ)))\n"
        "from setuptools import setup\n"
        "setup(name='studio-probe', version='1.0', py_modules=[])\n"
    ).encode()
    folder.mkdir(parents=True, exist_ok=True)
    sdist = folder / "studio-probe-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("studio-probe-1.0/setup.py")
        info.size = len(setup)
        tar.addfile(info, io.BytesIO(setup))
    return sdist


def _with_file(archive: bytes, name: str, data: bytes) -> bytes:
    buffer = io.BytesIO(archive)
    with zipfile.ZipFile(buffer, "a") as out:
        out.writestr(name, data)
    return buffer.getvalue()


def _with_requirements(model_zip: bytes, extra: str) -> bytes:
    """The MLflow model of `model_zip` with a line added to its requirements.txt."""
    source, buffer = zipfile.ZipFile(io.BytesIO(model_zip)), io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("/requirements.txt"):
                data += f"\n{extra}\n".encode()
            out.writestr(item, data)
    return buffer.getvalue()


@dataclass
class ProbeIndex:
    """A package index on loopback offering studio-probe as an sdist only; it notes the environment of
    every build process (a child of this one running pip or uv) that asks it for anything."""

    url: str
    marker: Path
    environments: list[tuple[str, dict, int]] = field(default_factory=list)


def _asking_builds() -> list[tuple[str, dict, int]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (process_stat(int(entry.name)) or [None, None])[1] != str(os.getpid()):
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
            uid = int((entry / "status").read_text().split("\nUid:")[1].split()[0])
        except OSError:
            continue
        words = [word.decode(errors="replace") for word in command]
        if "install" in words or "download" in words:
            pairs = (item.decode(errors="replace").partition("=") for item in environ if item)
            found.append((" ".join(words), {name: value for name, _, value in pairs}, uid))
    return found


@pytest.fixture
def probe_index(tmp_path, settings) -> ProbeIndex:
    marker = tmp_path / "setup-py-ran"
    sdist = _probe_sdist(tmp_path / "dist", marker)
    index = ProbeIndex("", marker)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            index.environments.extend(_asking_builds())
            if self.path.rstrip("/") == "/simple/studio-probe":
                body, kind = (
                    b'<a href="/files/studio-probe-1.0.tar.gz">studio-probe-1.0.tar.gz</a>',
                    "text/html",
                )
            elif self.path == "/files/studio-probe-1.0.tar.gz":
                body, kind = sdist.read_bytes(), "application/gzip"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index.url = f"http://127.0.0.1:{server.server_port}/simple"
    settings.STUDIO_ALLOWED_PACKAGE_INDEXES = [index.url]
    yield index
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("line", "reason"), REFUSED)
def test_an_environment_asking_for_anything_but_a_released_package_is_refused_naming_the_line(
    team, line, reason
):
    client = team.contributor.client()
    answer = client.post(
        ENVIRONMENTS, {"name": "probe", "pip_requirements": f"joblib==1.4.2\n{line}\n"}, format="json"
    )
    assert answer.status_code == 400, answer.json()
    message = _message(answer)
    assert f"pip_requirements line 2 {line!r}" in message and reason in message
    assert "line 1" not in message and "joblib" not in message, "only the refused line is named"
    assert not EnvironmentVersion.objects.exists()


def test_a_conda_file_follows_the_same_rules_in_its_pip_section_channels_and_packages(team):
    client = team.contributor.client()
    conda = (
        "name: probe\n"
        "channels: [conda-forge, 'https://conda.example.com/channel']\n"
        "dependencies:\n"
        "  - python=3.11\n"
        "  - numpy>=1.26\n"
        "  - https://conda.example.com/studio-probe-1.0.tar.bz2\n"
        "  - pip:\n"
        "    - scikit-learn==1.9.1\n"
        "    - git+https://github.com/example/studio-probe.git\n"
    )
    answer = client.post(ENVIRONMENTS, {"name": "probe", "conda_file": conda}, format="json")
    assert answer.status_code == 400
    details = answer.json()["error"]["details"]["conda_file"]
    assert any("channel 'https://conda.example.com/channel' is a URL or a path" in text for text in details)
    assert any(
        "dependency 'https://conda.example.com/studio-probe-1.0.tar.bz2' is a URL" in text for text in details
    )
    assert any(
        "pip section line 2 'git+https://github.com/example/studio-probe.git'" in text for text in details
    )
    assert len(details) == 3, "every problem at once, and nothing else"

    fine = conda.replace(", 'https://conda.example.com/channel'", "").replace(
        "  - https://conda.example.com/studio-probe-1.0.tar.bz2\n", ""
    )
    fine = fine.replace("    - git+https://github.com/example/studio-probe.git\n", "")
    assert client.post(ENVIRONMENTS, {"name": "probe", "conda_file": fine}, format="json").status_code == 201


def test_an_index_an_admin_allowed_may_be_named_and_no_other(team, settings):
    settings.STUDIO_ALLOWED_PACKAGE_INDEXES = [ALLOWED_INDEX]
    client = team.contributor.client()
    allowed = f"--extra-index-url {ALLOWED_INDEX}/\n--trusted-host packages.example.com\nstudio-probe==1.0\n"
    created = client.post(ENVIRONMENTS, {"name": "probe", "pip_requirements": allowed}, format="json")
    assert created.status_code == 201, created.json()
    other = client.post(
        ENVIRONMENTS,
        {
            "name": "probe",
            "pip_requirements": "--index-url https://packages.example.org/simple\nstudio-probe",
        },
        format="json",
    )
    assert other.status_code == 400
    assert "ask an Admin to add the index to STUDIO_ALLOWED_PACKAGE_INDEXES" in _message(other)


def test_a_direct_reference_to_a_local_sdist_is_refused_at_deploy_and_package_time_and_never_run(
    team, mlflow_model_zip, azure_sample_zips, tmp_path
):
    marker = tmp_path / "setup-py-ran"
    line = f"studio-probe @ {_probe_sdist(tmp_path / 'dist', marker).as_uri()}"
    # The probe is live: pip itself, given such a line, runs the sdist's setup.py despite --only-binary.
    listing = tmp_path / "requirements.txt"
    listing.write_text(line + "\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        "--no-deps",
        "-d",
        str(tmp_path),
    ]
    subprocess.run([*command, "-r", str(listing)], capture_output=True, timeout=120)
    assert marker.exists(), "pip download --only-binary=:all: builds a direct reference"
    marker.unlink()

    client = team.contributor.client()
    register(client, "clf", _with_requirements(mlflow_model_zip, line), "mlflow_model")
    client.post(ENDPOINTS, {"name": "probe"}, format="json")
    deployed = client.post(
        f"{ENDPOINTS}probe/deployments/", {"name": "blue", "model": "azureml:clf:1"}, format="json"
    )
    assert deployed.status_code == 400
    assert "model: the model's requirements.txt line" in _message(deployed)
    assert f"{line!r} is a direct reference" in _message(deployed)
    assert not OnlineDeployment.objects.exists()
    packaged = client.post("/api/v1/models/clf/versions/1/package")
    assert packaged.status_code == 400 and f"{line!r} is a direct reference" in _message(packaged)

    register(client, "regression", azure_sample_zips[0])
    inline = client.post(
        f"{ENDPOINTS}probe/deployments/",
        {
            "name": "green",
            "model": "azureml:regression:1",
            "code_configuration": {
                "code": upload_code(client, azure_sample_zips[1]),
                "scoring_script": "s.py",
            },
            "environment": {"pip_requirements": line},
        },
        format="json",
    )
    assert inline.status_code == 400 and f"environment: pip_requirements line 1 {line!r}" in _message(inline)
    assert not Job.objects.exists(), "nothing refused started a job"
    assert not marker.exists(), "no setup.py ran"


def test_a_build_from_an_allowed_index_installs_wheels_only_and_sees_nothing_of_studio(
    team, azure_sample_zips, probe_index, own_home, monkeypatch
):
    monkeypatch.setenv("STUDIO_PROBE_SECRET", "not-for-builds")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-builds")
    client = team.contributor.client()
    requirements = f"--extra-index-url {probe_index.url}\nstudio-probe==1.0\n"
    created = client.post(ENVIRONMENTS, {"name": "probe", "pip_requirements": requirements}, format="json")
    assert created.status_code == 201, created.json()
    register(client, "regression", azure_sample_zips[0])
    client.post(ENDPOINTS, {"name": "probe"}, format="json")
    spec = {
        "name": "blue",
        "model": "azureml:regression:1",
        "code_configuration": {
            "code": upload_code(client, azure_sample_zips[1]),
            "scoring_script": "onlinescoring/score.py",
        },
        "environment": "azureml:probe:1",
    }
    deployed = client.post(f"{ENDPOINTS}probe/deployments/", spec, format="json")
    assert deployed.status_code == 202
    job = deployed.json()["job"]
    assert job["state"] == "failed" and "could not be installed" in job["error"]
    assert "studio-probe" in job["error"], "uv's own words: no wheel, and building is disabled"

    packaged = client.post(f"{ENDPOINTS}probe/deployments/blue/package/", {"mode": "online"}, format="json")
    assert packaged.status_code == 202
    job = client.get(packaged["Location"]).json()
    assert job["state"] == "failed" and "could not be resolved to wheels" in job["error"]
    assert not probe_index.marker.exists(), "the sdist's setup.py never ran"

    asked = {
        ("uv" if "uv" in Path(command.split()[0]).name else "pip"): env
        for command, env, _uid in probe_index.environments
    }
    if os.geteuid() == 0:  # where replicas are sandboxed, so are builds: as the builder, not as Studio
        assert {uid for *_, uid in probe_index.environments} == {django_settings.STUDIO_REPLICA_UID_BASE}
    assert set(asked) == {"uv", "pip"}, "both the environment build and the wheel fetch asked the index"
    for tool, env in asked.items():
        assert env["HOME"].startswith(str(own_home / "tmp")) and env["HOME"] != os.environ["HOME"], tool
        assert env["TMPDIR"] == env["HOME"]
        leaked = sorted(name for name in env if name.startswith("STUDIO_") or "SECRET" in name)
        assert leaked == [] and "DATABASE_URL" not in env and "DJANGO_SETTINGS_MODULE" not in env, tool
        extra = set(env) - set(BUILD_ENVIRONMENT) - {"HOME", "TMPDIR", "PYTHONNOUSERSITE"}
        assert all(name.startswith(("UV_", "PIP_")) for name in extra), (tool, sorted(extra))
    assert not Path(asked["uv"]["HOME"]).exists(), "a build's HOME goes with it"


def _no_docker(monkeypatch) -> None:
    from endpoints.targets import docker

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setattr(docker, "_engine", None)


def test_packaging_is_a_job_contributors_start_and_that_needs_docker_only_to_build_an_image(
    team, mlflow_model_zip, monkeypatch
):
    _no_docker(monkeypatch)
    register(team.contributor.client(), "clf", mlflow_model_zip, "mlflow_model")
    url = "/api/v1/models/clf/versions/1/package"
    refused = team.reader.client().post(url, {"mode": "online"}, format="json")
    assert refused.status_code == 403 and "Contributor role" in _message(refused)
    assert not Job.objects.exists()

    client = team.contributor.client()
    started = client.post(url, {"mode": "online"}, format="json")
    assert started.status_code == 202
    job = client.get(started["Location"]).json()
    assert (job["kind"], job["state"]) == ("package", "succeeded"), job
    download = team.reader.client().get(f"/api/v1/jobs/{job['id']}/download")
    assert download.status_code == 200, "a Reader downloads what a Contributor packaged"
    manifest = json.loads(_member(download, "studio-context.json"))
    assert "assumed" in manifest["platform"]["source"], "no engine to ask: the base image's name tells"

    image = client.post(url, {"mode": "image"}, format="json")
    assert image.status_code == 202
    failed = client.get(image["Location"]).json()
    assert failed["state"] == "failed"
    assert failed["error"].startswith("Building an image needs a Docker engine where Studio's workers run")
    assert "package with mode offline" in failed["error"]
    nothing = client.get(f"/api/v1/jobs/{failed['id']}/download")
    assert nothing.status_code == 409 and "can be downloaded once it has succeeded" in _message(nothing)


def _member(download, name: str) -> bytes:
    """One file of a downloaded build context."""
    assert download.status_code == 200, download.content[:300]
    with tarfile.open(fileobj=io.BytesIO(b"".join(download.streaming_content))) as tar:
        return tar.extractfile(next(n for n in tar.getnames() if n.endswith(f"/{name}"))).read()


def _docker_words(text: str) -> list[str]:
    """Words as Docker's ENV reads them: split at blanks outside double quotes, `\\` taking the next
    character as it is, inside quotes or out."""
    words, word, quoted, escaped, started = [], "", False, False, False
    for character in text:
        if escaped:
            word, escaped, started = word + character, False, True
        elif character == "\\":
            escaped = True
        elif character == '"':
            quoted, started = not quoted, True
        elif character.isspace() and not quoted:
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + character, True
    return [*words, word] if started else words


def _dockerfile_environment(dockerfile: str) -> dict[str, str]:
    """The variables the ENV instruction sets, read as Docker reads it."""
    instruction = dockerfile.split("\nENV ", 1)[1].split("\nWORKDIR", 1)[0].replace("\\\n", " ")
    return dict(word.split("=", 1) for word in _docker_words(instruction))


def test_a_scoring_script_cannot_add_variables_or_instructions_to_the_dockerfile(team, azure_sample_zips):
    client = team.contributor.client()
    register(client, "regression", azure_sample_zips[0])
    client.post(ENDPOINTS, {"name": "inject"}, format="json")
    # A file of the uploaded code, so the deployment is a real one; its name is the injection attempt.
    script = 'onlinescoring/score.py PYTHONPATH=/tmp/evil" AZUREML_MODEL_DIR=$HOME'
    code = upload_code(client, _with_file(azure_sample_zips[1], script, b"def init(): pass\n"))
    spec = {"name": "blue", "model": "azureml:regression:1", "code_configuration": {"code": code}}
    multiline = client.post(
        f"{ENDPOINTS}inject/deployments/",
        {**spec, "code_configuration": {"code": code, "scoring_script": "score.py\nRUN touch /owned"}},
        format="json",
    )
    assert multiline.status_code == 400, "a line break never reaches a Dockerfile"
    created = client.post(
        f"{ENDPOINTS}inject/deployments/",
        {**spec, "code_configuration": {"code": code, "scoring_script": script}},
        format="json",
    )
    assert created.status_code == 202, created.json()
    started = client.post(f"{ENDPOINTS}inject/deployments/blue/package/", {"mode": "online"}, format="json")
    job = client.get(started["Location"]).json()
    assert job["state"] == "succeeded", job["error"]
    dockerfile = _member(client.get(f"/api/v1/jobs/{job['id']}/download"), "Dockerfile").decode()
    environment = _dockerfile_environment(dockerfile)
    assert environment["AZUREML_ENTRY_SCRIPT"] == script, "the whole value, as one value"
    assert environment["PYTHONPATH"] == "/opt/studio/server"
    assert environment["AZUREML_MODEL_DIR"] == "/var/azureml-app/azureml-models/regression/1"
    assert "AZUREML_MODEL_DIR=\\$HOME" in dockerfile, "no variable is expanded in it"


def _studio(server, token: str, *args: str):
    env = {"STUDIO_URL": server.url, "STUDIO_TOKEN": token}
    return CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)


def test_the_cli_packages_through_a_job_and_says_why_it_cannot(
    live_server, team, mlflow_model_zip, monkeypatch, tmp_path
):
    monkeypatch.setenv("STUDIO_CONFIG", str(tmp_path / "config.json"))
    _no_docker(monkeypatch)
    register(team.contributor.client(), "clf", mlflow_model_zip, "mlflow_model")
    arguments = ("online-deployment", "package", "--model", "azureml:clf:1")
    reader = _studio(live_server, team.reader.token, *arguments, "--mode", "online")
    assert reader.exit_code != 0 and "Ask a team Admin for the Contributor role" in reader.stderr
    archive = tmp_path / "clf.tar.gz"
    made = _studio(
        live_server, team.contributor.token, *arguments, "--mode", "online", "--output-path", str(archive)
    )
    assert made.exit_code == 0, made.output
    assert "Packaging model clf:1" in made.stderr and tarfile.is_tarfile(archive)
    image = _studio(live_server, team.contributor.token, *arguments, "--mode", "image")
    assert image.exit_code != 0
    assert "Building an image needs a Docker engine where Studio's workers run" in image.stderr
    assert Job.objects.filter(kind="package", created_by=team.contributor.user).count() == 2


def test_an_allowed_index_that_is_not_a_url_stops_the_start_naming_the_setting(tmp_path):
    env = {
        **os.environ,
        "STUDIO_HOME": str(tmp_path / "home"),
        "STUDIO_ALLOWED_PACKAGE_INDEXES": "pypi.example.com",
    }
    started = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode != 0
    assert "STUDIO_ALLOWED_PACKAGE_INDEXES: 'pypi.example.com' is not a supported URL" in started.stderr
