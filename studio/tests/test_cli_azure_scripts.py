"""Azure ML's deployment scripts, with `az ml` replaced by `studio`, run unchanged against a live Studio.

The scripts are the files users read in docs/samples/azure; bash runs them with the installed `studio`
console script first on PATH, against a live server whose jobs run when their request commits, and a
real gateway for the scoring calls (curl included).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from studio.cli.main import cli
from studio.testkit import GATEWAY_SECRET
from studio.tests.test_cli_endpoints import make_model

BIN = Path(sys.executable).parent
SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"
AZURE_ONLY_WARNING = "for Azure and ignored"

Run = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def server(live_server, transactional_db, eager_jobs, cleanup_endpoints, settings, monkeypatch, tmp_path):
    """The live server running jobs in-process, with its own STUDIO_HOME; every replica stopped at the end."""
    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_HOME.mkdir()
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    return live_server


@pytest.fixture
def samples(tmp_path) -> Path:
    """A copy of docs/samples with the online sample's model made (no pickle is committed)."""
    root = tmp_path / "samples"
    shutil.copytree(SAMPLES, root)
    make_model(root / "online" / "model-1" / "model")
    return root


@pytest.fixture
def shell(server, team, tmp_path, samples) -> Run:
    """Run a command line in bash from the samples folder, as a user's terminal does."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STUDIO_")} | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "STUDIO_URL": server.url,
        "STUDIO_TOKEN": team.contributor.token,
        "STUDIO_CONFIG": str(tmp_path / "config.json"),
        "COLUMNS": "200",
    }

    def run(command: str, *, fails: bool = False) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["bash", "-c", command], cwd=samples, env=env, capture_output=True, text=True, timeout=600
        )
        if fails:
            assert done.returncode != 0, done.stdout + done.stderr
        else:
            assert done.returncode == 0, f"{command}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        return done

    return run


@pytest.fixture
def studio(server, team, tmp_path, samples, monkeypatch) -> Run:
    """Run `studio` with a command line as a shell splits it, in-process (quicker than a new process)
    from the samples folder; a non-zero exit is expected only with `fails=True`."""
    monkeypatch.setenv("STUDIO_CONFIG", str(tmp_path / "config.json"))
    monkeypatch.chdir(samples)

    def run(command: str, *, fails: bool = False) -> Result:
        env = {"STUDIO_URL": server.url, "STUDIO_TOKEN": team.contributor.token}
        args = shlex.split(command)
        assert args[0] == "studio"
        result = CliRunner(env=env).invoke(cli, args[1:], catch_exceptions=False)
        if fails:
            assert result.exit_code != 0, result.output
        else:
            assert result.exit_code == 0, f"{command}\n{result.output}"
        return result

    return run


# The sample scripts, as they are in docs/samples/azure


def test_the_managed_online_endpoint_script_runs_unchanged(gateway, shell):
    done = shell("bash azure/deploy-managed-online-endpoint.sh")
    out = done.stdout
    assert "Endpoint created successfully" in out
    assert "Deployment completed successfully" in out
    # invoke, then curl to the scoring URI with the key from get-credentials: y = sum(x) for both rows.
    # curl prints the body with no newline after it, so answers are found in the text, not by line.
    answers = [json.loads(found) for found in re.findall(r"\[\d+\.\d+, ?\d+\.\d+\]", out)]
    assert len(answers) >= 2, "invoke and curl"
    for answer in answers:
        assert answer == pytest.approx([55.0, 55.0], abs=0.01)
    assert "Init complete" in out, "the replica's log"
    assert "Fetching model" in out, "the storage initializer's log: how the model was fetched"
    assert "Updating deployment" in done.stderr and "blue" in done.stderr
    assert "not waiting for it (--no-wait)" in done.stderr
    assert shell("studio online-endpoint list --query 'length(@)' -o tsv").stdout == "0\n"


def test_the_safe_rollout_script_with_workspace_flags_runs_unchanged(gateway, shell):
    done = shell("bash azure/deploy-safe-rollout.sh")
    assert "green: Succeeded" in done.stdout
    assert "green traffic: 10" in done.stdout
    assert "deployments: green" in done.stdout
    # Each command given -g and -w says once that they are ignored.
    warnings = [line for line in done.stderr.splitlines() if AZURE_ONLY_WARNING in line]
    assert len(warnings) >= 5, "create endpoint, create blue, invoke, create green, show green"
    assert set(warnings) == {
        (
            "Warning: --resource-group and --workspace-name are for Azure and ignored: Studio is one "
            "workspace, the server of STUDIO_URL or `studio login`."
        )
    }


def test_the_model_and_environment_script_runs_unchanged(shell):
    done = shell("bash azure/register-model-and-environment.sh")
    assert "latest version: 3" in done.stdout
    assert "versions: 1 3 " in done.stdout
    assert "production\tRidge regression\n" in done.stdout
    assert "environment version: 1" in done.stdout
    assert "name: docker-image-plus-conda-example" in done.stdout
    shown = json.loads(
        shell("studio environment show -n docker-image-plus-conda-example -v 1 -o json").stdout
    )
    assert shown["image"] == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"
    assert shown["conda_file"]["dependencies"][2] == {"pip": ["scikit-learn==1.9.1", "joblib"]}


# Output as az prints it


def test_tsv_prints_as_az_does(studio):
    studio("studio online-endpoint create -n tsv-ep --set tags.team=ml --set tags.stage=prod")
    # An object: its values in key order, tab-separated; a list is its length, a mapping nothing.
    keys = json.loads(studio("studio online-endpoint get-credentials -n tsv-ep -o json").stdout)
    assert studio("studio online-endpoint get-credentials -n tsv-ep -o tsv").stdout == (
        f"{keys['primaryKey']}\t{keys['secondaryKey']}\n"
    )
    assert studio("studio online-endpoint show -n tsv-ep --query tags -o tsv").stdout == "prod\tml\n"
    # A query's own object keeps the query's order; lists print one item a line.
    picked = studio(
        "studio online-endpoint show -n tsv-ep --query '{n: name, d: deployments, t: tags}' -o tsv"
    )
    assert picked.stdout == "tsv-ep\t0\t\n"
    assert studio("studio online-endpoint list --query '[].name' -o tsv").stdout == "tsv-ep\n"
    # Booleans: lower case on their own, Python's True/False inside a row, as az prints them.
    studio("studio model create -n flags --path online/sample/sample-request.json")
    assert studio("studio model show -n flags -v 1 --query archived -o tsv").stdout == "false\n"
    assert (
        studio("studio model show -n flags -v 1 --query '[name, archived]' -o tsv").stdout == "flags\nfalse\n"
    )
    assert (
        studio("studio model show -n flags -v 1 --query '[[name, archived]]' -o tsv").stdout
        == "flags\tFalse\n"
    )
    # Null prints nothing at all; inside a row it is None.
    assert studio("studio model show -n flags -v 1 --query no_such_field -o tsv").stdout == ""
    assert studio("studio model show -n flags -v 1 --query '[[name, no_such_field]]' -o tsv").stdout == (
        "flags\tNone\n"
    )


def test_json_yaml_table_and_none(studio):
    studio("studio online-endpoint create -n out-ep")
    assert json.loads(studio("studio online-endpoint show -n out-ep --query auth_mode").stdout) == "key"
    shown = json.loads(studio("studio online-endpoint show -n out-ep -o jsonc").stdout)
    assert shown["scoring_uri"].endswith("/endpoints/out-ep/score")
    yaml_text = studio(
        "studio online-endpoint show -n out-ep --query '{name: name, auth: auth_mode}' -o yaml"
    )
    assert yaml_text.stdout == "auth: key\nname: out-ep\n"
    table = studio(
        "studio online-endpoint list --query '[].{name: name, auth: auth_mode, tags: tags}' -o table"
    )
    assert table.stdout.splitlines() == ["Name    Auth", "------  ----", "out-ep  key"]
    assert studio("studio online-endpoint show -n out-ep -o none").stdout == ""
    # The people's table is still the default.
    assert "Scoring URI" in studio("studio online-endpoint show -n out-ep").stdout


def test_a_bad_query_or_format_is_refused_before_anything_is_sent(studio):
    bad = studio("studio online-endpoint create -n never --query '[?name==' -o tsv", fails=True)
    assert "--query" in bad.stderr and "is not a JMESPath expression" in bad.stderr
    wrong = studio("studio online-endpoint list -o csv", fails=True)
    assert "'csv' is not one of" in wrong.stderr
    assert studio("studio online-endpoint list --query '[].name' -o tsv").stdout == ""


# Generic update arguments


def test_set_add_and_remove_change_an_endpoint_and_a_model(studio):
    created = studio(
        "studio online-endpoint create -f online/sample/endpoint.yml --name gen-ep "
        '--set description=\'"first"\' --set tags=\'{"a": "1", "b": "2"}\' '
        "--add cors_origins https://one.example https://two.example -o json"
    )
    endpoint = json.loads(created.stdout)
    assert endpoint["description"] == "first"
    assert endpoint["tags"] == {"a": "1", "b": "2"}
    assert endpoint["cors_origins"] == ["https://one.example", "https://two.example"]

    updated = studio(
        "studio online-endpoint update -n gen-ep --set tags.c=three --remove tags.a --remove cors_origins 0 -o json"
    )
    endpoint = json.loads(updated.stdout)
    assert endpoint["tags"] == {"b": "2", "c": "three"}
    assert endpoint["cors_origins"] == ["https://two.example"]

    studio("studio model create -n gen-model --path online/sample/sample-request.json --set version=7")
    studio("studio model update -n gen-model -v 7 --set tags.stage=prod --set description=Ridge")
    shown = json.loads(studio("studio model show -n gen-model -v 7 -o json").stdout)
    assert (shown["version"], shown["tags"], shown["description"]) == ("7", {"stage": "prod"}, "Ridge")


def test_a_set_that_does_not_fit_says_what_to_fix_and_changes_nothing(studio):
    studio("studio online-endpoint create -n fit-ep --set tags.a=x")
    for command, message in [
        ("--set tags", "--set 'tags' is not of the form path=value"),
        ("--set tags.a.b=1", "tags.a is not a mapping, so it has no 'b'."),
        ("--remove cors_origins 3", "cors_origins has 0 item(s); index 3 is out of range."),
        ("--remove nothing.here", "has no 'nothing'"),
        ("--set tags..a=1", "is not a property path"),
    ]:
        refused = studio(f"studio online-endpoint update -n fit-ep {command}", fails=True)
        assert message in refused.stderr, (command, refused.stderr)
    shown = json.loads(studio("studio online-endpoint show -n fit-ep -o json").stdout)
    assert shown["tags"] == {"a": "x"} and shown["cors_origins"] == []


# Azure's flags


def test_azure_workspace_flags_are_accepted_on_every_verb_with_one_warning(studio):
    listed = studio("studio online-endpoint list -g rg -w ws --subscription 0000 -o json")
    assert json.loads(listed.stdout) == []
    assert listed.stderr.count(AZURE_ONLY_WARNING) == 1
    assert "--resource-group, --workspace-name and --subscription are for Azure" in listed.stderr
    models = studio("studio model list --resource-group rg --query 'length(@)' -o tsv")
    assert models.stdout == "0\n" and "Warning: --resource-group is for Azure and ignored" in models.stderr
    refused = studio("studio online-endpoint delete -n nowhere --yes -g rg", fails=True)
    assert AZURE_ONLY_WARNING in refused.stderr and "nowhere" in refused.stderr


def test_local_finds_only_deployments_in_docker(studio):
    studio("studio online-endpoint create -n local-ep --local")
    studio(
        "studio online-deployment create -n blue -e local-ep -f online/sample/blue-deployment.yml "
        "--set instance_count=1"
    )
    assert (
        studio("studio online-deployment list --endpoint local-ep --query '[].name' -o tsv").stdout
        == "blue\n"
    )
    assert (
        studio("studio online-deployment list --endpoint local-ep --local --query '[].name' -o tsv").stdout
        == ""
    )
    refused = studio("studio online-deployment show -n blue --endpoint-name local-ep --local", fails=True)
    assert "runs on the local target, not in local Docker; drop --local" in refused.stderr
    refused = studio("studio online-deployment get-logs -n blue -e local-ep --local", fails=True)
    assert "drop --local" in refused.stderr
    same = studio("studio online-deployment update -n blue -e local-ep --set instance_count=1")
    assert "has these values already; nothing to change" in same.stderr
    studio("studio online-endpoint delete -n local-ep --yes --local")
