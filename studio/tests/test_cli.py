"""The `studio` CLI against a live server, through the doors a user uses: the entry point and a subprocess."""

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from studio.cli.client import Client
from studio.cli.config import Config
from studio.cli.main import cli
from studio.testkit import free_port

STUDIO = Path(sys.executable).with_name("studio")

Run = Callable[..., Result]


@pytest.fixture
def config_file(tmp_path) -> Path:
    return tmp_path / "home" / "studio" / "config.json"


@pytest.fixture
def studio(live_server, team, config_file, monkeypatch) -> Run:
    """Run `studio ARGS` in-process as a user whose STUDIO_URL/STUDIO_TOKEN point at the live server.

    `as_` picks the persona (contributor by default); a non-zero exit is expected only with `fails=True`.
    """
    monkeypatch.setenv("STUDIO_CONFIG", str(config_file))

    def run(*args: str, as_: str = "contributor", fails: bool = False, input: str | None = None) -> Result:
        env = {"STUDIO_URL": live_server.url, "STUDIO_TOKEN": getattr(team, as_).token}
        result = CliRunner(env=env).invoke(cli, list(args), input=input, catch_exceptions=False)
        if fails:
            assert result.exit_code != 0, result.output
        else:
            assert result.exit_code == 0, result.output
        return result

    return run


def as_json(result: Result):
    return json.loads(result.stdout)


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def tree_of(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


MODEL_FILES = {
    "model.pkl": bytes(range(256)) * 4096,
    "config/settings.json": b'{"threshold": 0.5}\n',
    "config/deep/vocab.txt": "naïve\ncafé\n".encode(),
    "empty.bin": b"",
}


# Login and configuration


def test_login_checks_the_token_and_writes_a_private_config(live_server, team, config_file, tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("STUDIO_URL", "STUDIO_TOKEN")} | {
        "STUDIO_CONFIG": str(config_file)
    }
    login = subprocess.run(
        [STUDIO, "login", "--url", live_server.url + "/", "--token", team.reader.token],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert login.returncode == 0, login.stderr
    assert "Signed in" in login.stderr
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert json.loads(config_file.read_text()) == {"url": live_server.url, "token": team.reader.token}

    listed = subprocess.run(
        [STUDIO, "model", "list", "-o", "json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_login_refuses_a_bad_token_and_saves_nothing(live_server, team, config_file, monkeypatch):
    monkeypatch.setenv("STUDIO_CONFIG", str(config_file))
    result = CliRunner().invoke(cli, ["login", "--url", live_server.url, "--token", "not-a-token"])
    assert result.exit_code == 1
    assert "The token is not valid" in result.stderr
    assert not config_file.exists()


def test_environment_variables_override_the_config_file(studio, team, config_file, live_server):
    config_file.parent.mkdir(parents=True)
    config_file.write_text(json.dumps({"url": "http://127.0.0.1:9", "token": "stale"}))
    assert as_json(studio("model", "list", "-o", "json")) == []


def test_it_says_how_to_sign_in_when_nothing_is_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_CONFIG", str(tmp_path / "missing.json"))
    monkeypatch.delenv("STUDIO_URL", raising=False)
    monkeypatch.delenv("STUDIO_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["model", "list"])
    assert result.exit_code == 1
    assert "studio login --url URL --token TOKEN" in result.stderr


def test_it_says_when_the_server_is_unreachable(tmp_path):
    env = {"STUDIO_URL": f"http://127.0.0.1:{free_port()}", "STUDIO_TOKEN": "t"}
    result = CliRunner(env=env).invoke(cli, ["model", "list"])
    assert result.exit_code == 1
    assert "Cannot reach Studio at http://127.0.0.1:" in result.stderr
    assert "studio up" in result.stderr


# Registering


def test_a_file_model_downloads_byte_for_byte(studio, tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(300_000))
    created = as_json(studio("model", "create", "--name", "clf", "--path", str(source), "-o", "json"))
    assert (created["name"], created["version"], created["content_kind"]) == ("clf", "1", "file")

    studio(
        "model", "download", "--name", "clf", "--version", "latest", "--download-path", str(tmp_path / "out")
    )
    assert tree_of(tmp_path / "out" / "clf") == {"weights.bin": source.read_bytes()}


def test_a_folder_keeps_its_own_name_and_downloads_byte_for_byte(studio, tmp_path):
    folder = write_tree(tmp_path / "src" / "model", MODEL_FILES)
    result = studio(
        "model",
        "create",
        "--name",
        "clf",
        "--path",
        str(folder),
        "--tag",
        "stage=dev",
        "--description",
        "first",
    )
    assert "Registered clf version 1." in result.stderr
    assert "Uploading model" in result.stderr

    shown = as_json(studio("model", "show", "--name", "clf", "--version", "1", "-o", "json"))
    assert sorted(item["path"] for item in shown["files"]) == sorted(f"model/{name}" for name in MODEL_FILES)

    studio("model", "download", "--name", "clf", "--version", "1", "--download-path", str(tmp_path / "out"))
    assert tree_of(tmp_path / "out" / "clf" / "model") == MODEL_FILES
    assert not list((tmp_path / "out").glob("*.zip")), "the temporary zip is removed"


def test_download_can_keep_the_zip_and_never_overwrites(studio, tmp_path):
    folder = write_tree(tmp_path / "model", {"a.txt": b"a"})
    studio("model", "create", "--name", "clf", "--path", str(folder))
    out = tmp_path / "out"
    studio("model", "download", "--name", "clf", "--version", "1", "--download-path", str(out), "--keep-zip")
    assert (out / "clf-1.zip").is_file()

    write_tree(out / "clf", {"mine.txt": b"keep me"})
    refused = studio(
        "model", "download", "--name", "clf", "--version", "1", "--download-path", str(out), fails=True
    )
    assert "exists already" in refused.stderr
    assert tree_of(out / "clf") == {"mine.txt": b"keep me"}


def test_it_refuses_a_folder_holding_a_symlink(studio, tmp_path):
    folder = write_tree(tmp_path / "model", {"real.txt": b"x"})
    (folder / "link.txt").symlink_to(folder / "real.txt")
    result = studio("model", "create", "--name", "clf", "--path", str(folder), fails=True)
    assert "link.txt is a symbolic link" in result.stderr
    assert as_json(studio("model", "list", "-o", "json")) == []


MLMODEL = """\
artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.skops
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    python_version: 3.11.9
  sklearn:
    code: null
    serialization_format: skops
    sklearn_version: 1.9.1
signature:
  inputs: '[{"type": "double", "name": "x", "required": true}]'
  outputs: '[{"type": "long", "required": true}]'
  params: null
"""


def test_an_mlflow_model_is_parsed_by_the_server(studio, tmp_path):
    folder = write_tree(
        tmp_path / "iris",
        {
            "MLmodel": MLMODEL.encode(),
            "model.skops": b"\x00weights",
            "requirements.txt": b"scikit-learn==1.9.1\n",
        },
    )
    created = as_json(
        studio(
            "model", "create", "--name", "iris", "--path", str(folder), "--type", "mlflow_model", "-o", "json"
        )
    )
    assert created["type"] == "mlflow_model"
    assert set(created["mlflow"]["flavors"]) == {"python_function", "sklearn"}
    assert created["mlflow"]["signature"]["inputs"][0]["name"] == "x"

    table = studio("model", "show", "--name", "iris", "--version", "latest").stdout
    assert "MLflow flavors" in table and "sklearn" in table


def test_an_mlflow_model_without_mlmodel_gets_the_servers_message(studio, tmp_path):
    folder = write_tree(tmp_path / "iris", {"model.pkl": b"x"})
    result = studio(
        "model", "create", "--name", "iris", "--path", str(folder), "--type", "mlflow_model", fails=True
    )
    assert "must contain an MLmodel file" in result.stderr


def test_it_registers_from_an_azure_model_yaml_with_a_relative_path(studio, tmp_path):
    write_tree(tmp_path / "specs" / "artifacts" / "model", {"w.bin": b"w"})
    spec = tmp_path / "specs" / "model.yml"
    spec.write_text(
        textwrap.dedent(
            """\
            $schema: https://azuremlschemas.azureedge.net/latest/model.schema.json
            name: churn
            version: 3
            path: artifacts/model
            type: custom_model
            description: Churn classifier
            tags: {stage: dev, accuracy: 0.93}
            properties: {framework: sklearn}
            stage: Production
            """
        )
    )
    result = studio("model", "create", "-f", str(spec), "--tag", "stage=prod", "-o", "json")
    created = as_json(result)
    assert (created["name"], created["version"], created["description"]) == ("churn", "3", "Churn classifier")
    assert created["tags"] == {"stage": "prod", "accuracy": "0.93"}
    assert created["properties"] == {"framework": "sklearn"}
    assert [item["path"] for item in created["files"]] == ["model/w.bin"]
    assert "field 'stage' is not supported" in result.stderr


def test_a_reader_cannot_register(studio, tmp_path):
    source = tmp_path / "m.bin"
    source.write_bytes(b"m")
    result = studio("model", "create", "--name", "clf", "--path", str(source), as_="reader", fails=True)
    assert "Your role does not allow this" in result.stderr


def test_an_existing_version_is_reused_with_its_content_and_refused_with_other_content(studio, tmp_path):
    source = tmp_path / "m.bin"
    source.write_bytes(b"m")
    studio("model", "create", "--name", "clf", "--version", "1", "--path", str(source))
    again = studio("model", "create", "--name", "clf", "--version", "1", "--path", str(source), "-o", "json")
    assert json.loads(again.stdout)["version"] == "1"
    source.write_bytes(b"other weights")
    result = studio("model", "create", "--name", "clf", "--version", "1", "--path", str(source), fails=True)
    assert "exists already with other content" in result.stderr and "versions are immutable" in result.stderr


# Finding


@pytest.fixture
def three_versions(studio, tmp_path):
    source = tmp_path / "m.bin"
    source.write_bytes(b"m")
    for tags in (["stage=prod", "team=a"], ["stage=prod", "team=b"], ["stage=dev", "team=a"]):
        studio("model", "create", "--name", "clf", "--path", str(source), *(f"--tag={tag}" for tag in tags))
    studio("model", "create", "--name", "other", "--path", str(source), "--tag", "stage=dev")


def test_list_filters_versions_by_every_tag(studio, three_versions):
    both = as_json(
        studio("model", "list", "--name", "clf", "--tag", "stage=prod", "--tag", "team=a", "-o", "json")
    )
    assert [version["version"] for version in both] == ["1"]
    prod = as_json(studio("model", "list", "--name", "clf", "--tag", "stage=prod", "-o", "json"))
    assert sorted(version["version"] for version in prod) == ["1", "2"]

    table = studio("model", "list", "--name", "clf", "--tag", "team=a").stdout
    assert "stage=prod" in table and "stage=dev" in table and "team=b" not in table


def test_list_of_models_filters_by_tag_and_text(studio, three_versions):
    names = [item["name"] for item in as_json(studio("model", "list", "--tag", "stage=prod", "-o", "json"))]
    assert names == ["clf"]
    assert "other" in studio("model", "list", "-q", "oth").stdout
    assert "No registered model matches" in studio("model", "list", "--tag", "stage=gone").stdout


def test_a_malformed_tag_filter_gets_the_servers_message(studio, three_versions):
    result = studio("model", "list", "--name", "clf", "--tag", "stageprod", fails=True)
    assert "is not of the form key=value" in result.stderr


def test_an_unknown_version_or_model_gets_the_servers_message(studio, three_versions):
    assert (
        "Model 'clf' has no version '99'."
        in studio("model", "show", "--name", "clf", "--version", "99", fails=True).stderr
    )
    assert "There is no model named 'nope'." in studio("model", "list", "--name", "nope", fails=True).stderr


def test_json_output_is_the_servers_json(studio, three_versions, live_server, team):
    shown = as_json(studio("model", "show", "--name", "clf", "--version", "2", "-o", "json"))
    direct = httpx.get(
        f"{live_server.url}/api/v1/models/clf/versions/2/",
        headers={"Authorization": f"Bearer {team.contributor.token}"},
    ).json()
    assert shown == direct


# Changing


def test_update_sets_and_removes_tags_and_keeps_the_others(studio, three_versions):
    updated = as_json(
        studio(
            "model",
            "update",
            "--name",
            "clf",
            "--version",
            "1",
            "--set-tag",
            "stage=staging",
            "--set-tag",
            "owner=ml",
            "--remove-tag",
            "team",
            "--description",
            "promoted",
            "-o",
            "json",
        )  # fmt: skip
    )
    assert updated["tags"] == {"stage": "staging", "owner": "ml"}
    assert updated["description"] == "promoted"


def test_update_by_a_reader_is_refused(studio, three_versions):
    result = studio(
        "model", "update", "--name", "clf", "--version", "1", "--set-tag", "x=y", as_="reader", fails=True
    )
    assert "Your role does not allow this" in result.stderr


def test_archive_takes_a_version_out_of_latest_and_restore_brings_it_back(studio, three_versions):
    assert "Archived clf version 3." in studio("model", "archive", "--name", "clf", "--version", "3").stderr
    assert (
        as_json(studio("model", "show", "--name", "clf", "--version", "latest", "-o", "json"))["version"]
        == "2"
    )
    listed = studio("model", "list", "--name", "clf").stdout
    assert "archived" in listed

    studio("model", "restore", "--name", "clf", "--version", "3")
    assert (
        as_json(studio("model", "show", "--name", "clf", "--version", "latest", "-o", "json"))["version"]
        == "3"
    )


def test_delete_asks_first_and_then_deletes(studio, three_versions):
    declined = studio("model", "delete", "--name", "clf", "--version", "2", input="n\n", fails=True)
    assert "Delete clf version 2" in declined.stderr
    studio("model", "show", "--name", "clf", "--version", "2")

    assert (
        "Deleted clf version 2."
        in studio("model", "delete", "--name", "clf", "--version", "2", "--yes").stderr
    )
    studio("model", "show", "--name", "clf", "--version", "2", fails=True)
    remaining = as_json(studio("model", "list", "--name", "clf", "-o", "json"))
    assert sorted(version["version"] for version in remaining) == ["1", "3"]


# Environments


def test_environment_from_an_azure_yaml_with_a_conda_file(studio, tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "conda.yml").write_text(
        textwrap.dedent(
            """\
            name: scoring
            channels: [conda-forge]
            dependencies:
              - python=3.11
              - pip
              - pip: [scikit-learn==1.9.1, pandas]
            """
        )
    )
    spec = tmp_path / "env.yml"
    spec.write_text(
        textwrap.dedent(
            """\
            $schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json
            name: sklearn-env
            image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest
            conda_file: env/conda.yml
            description: Scoring environment
            tags: {team: ml}
            """
        )
    )
    created = as_json(studio("environment", "create", "-f", str(spec), "-o", "json"))
    assert (created["name"], created["version"]) == ("sklearn-env", "1")
    assert created["conda_file"]["dependencies"][2] == {"pip": ["scikit-learn==1.9.1", "pandas"]}
    assert created["tags"] == {"team": "ml"}

    listed = as_json(studio("environment", "list", "-o", "json"))
    assert [(item["name"], item["version"]) for item in listed] == [("sklearn-env", "1")]
    shown = studio("environment", "show", "--name", "sklearn-env", "--version", "latest", as_="reader").stdout
    assert "scikit-learn==1.9.1" in shown and "openmpi" in shown


def test_an_environment_without_image_or_conda_gets_the_servers_message(studio, tmp_path):
    spec = tmp_path / "env.yml"
    spec.write_text("name: bare\nbuild:\n  path: docker\n")
    result = studio("environment", "create", "-f", str(spec), fails=True)
    assert "field 'build' is not supported" in result.stderr
    assert "needs an image, a conda_file or pip_requirements" in result.stderr


# The client itself and `studio up`


class _RecordingTransport(httpx.BaseTransport):
    """Receives a request body chunk by chunk, as a socket would, and remembers the chunk sizes."""

    def __init__(self):
        self.chunks: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for chunk in request.stream:
            self.chunks.append(len(chunk))
        return httpx.Response(201, json={"ok": True})


def test_uploads_are_streamed_in_small_chunks_not_read_whole(tmp_path):
    source = tmp_path / "big.bin"
    with source.open("wb") as out:
        out.truncate(8 * 1024 * 1024)
    transport = _RecordingTransport()
    client = Client(Config(url="http://studio.test", token="t"), transport=transport)
    assert client.upload("/models/", {"name": "big"}, "file", source, "Uploading") == {"ok": True}
    assert sum(transport.chunks) > 8 * 1024 * 1024
    assert max(transport.chunks) <= 1024 * 1024


def test_up_runs_the_supervisor_with_the_ports(monkeypatch):
    calls = []
    fake = type(sys)("studio.supervisor")
    fake.run = lambda port, gateway_port, keep_replicas: (
        calls.append((port, gateway_port, keep_replicas)) or 3
    )
    monkeypatch.setitem(sys.modules, "studio.supervisor", fake)
    result = CliRunner(env={"STUDIO_PORT": "9001", "STUDIO_GATEWAY_PORT": None}).invoke(cli, ["up"])
    assert result.exit_code == 3
    result = CliRunner().invoke(cli, ["up", "--port", "7000", "--gateway-port", "7080", "--keep-replicas"])
    assert calls == [(9001, 8080, None), (7000, 7080, True)]


def test_up_says_when_the_supervisor_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "studio.supervisor", None)
    result = CliRunner().invoke(cli, ["up"])
    assert result.exit_code == 1
    assert "studio.supervisor is missing" in result.stderr


def test_the_cli_does_not_set_up_django(tmp_path):
    probe = "import sys, studio.cli.main; print('django.db' in sys.modules, 'httpx' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"]
