"""`studio data` against a live server, through the console script a user runs."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest

from studio.tests.test_cli import as_json, config_file, studio, tree_of, write_tree  # noqa: F401 -- fixtures

STUDIO = Path(sys.executable).with_name("studio")
CSV = b"sepal,petal,label\n5.1,1.4,setosa\n6.2,4.5,versicolor\n"
FOLDER = {"train/a.csv": CSV, "train/b.csv": CSV, "MLTable": b"paths:\n  - pattern: ./train/*.csv\n"}


def test_the_console_script_registers_a_folder_from_azure_yaml_and_downloads_it_back(
    live_server, team, tmp_path
):
    write_tree(tmp_path / "project" / "iris", FOLDER)
    spec = tmp_path / "project" / "data.yml"
    spec.write_text(
        textwrap.dedent(
            """\
            $schema: https://azuremlschemas.azureedge.net/latest/data.schema.json
            name: iris-table
            version: 1
            type: mltable
            path: ./iris
            description: Iris measurements
            tags:
              stage: raw
            """
        )
    )
    env = {
        **os.environ,
        "STUDIO_URL": live_server.url,
        "STUDIO_TOKEN": team.contributor.token,
        "STUDIO_CONFIG": str(tmp_path / "none.json"),
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([STUDIO, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done

    created = json.loads(run("data", "create", "-f", str(spec), "-o", "json").stdout)
    assert created["id"] == "azureml:iris-table:1"
    assert created["type"] == "mltable" and created["tags"] == {"stage": "raw"}
    # The folder's content is at the top, as Azure keeps a uri_folder: MLTable beside train/.
    assert [item["path"] for item in created["files"]] == ["MLTable", "train/a.csv", "train/b.csv"]

    shown = run("data", "show", "--name", "iris-table", "--label", "latest", "--query", "id", "-o", "tsv")
    assert shown.stdout.strip() == "azureml:iris-table:1"

    run(
        "data", "download", "--name", "iris-table", "--version", "1", "--download-path", str(tmp_path / "out")
    )
    assert tree_of(tmp_path / "out" / "iris-table") == FOLDER


def test_it_registers_files_lists_with_filters_and_archives(studio, tmp_path):  # noqa: F811
    (tmp_path / "day1.csv").write_bytes(CSV)
    (tmp_path / "day2.csv").write_bytes(CSV + b"7,7,x\n")
    first = as_json(
        studio("data", "create", "--name", "days", "--path", str(tmp_path / "day1.csv"), "-o", "json")
    )
    assert first["type"] == "uri_file" and first["version"] == "1"
    studio(
        "data", "create", "-n", "days", "-p", str(tmp_path / "day2.csv"), "--tag", "stage=prod", "-o", "json"
    )

    tagged = as_json(studio("data", "list", "--name", "days", "--tag", "stage=prod", "-o", "json"))
    assert [item["version"] for item in tagged] == ["2"]
    assert [item["name"] for item in as_json(studio("data", "list", "-o", "json"))] == ["days"]
    table = studio("data", "list", "--name", "days").stdout
    assert "uri_file" in table and "stage=prod" in table

    archived = studio("data", "archive", "--name", "days", "--version", "2")
    assert "Archived days version 2" in archived.stderr
    latest = as_json(studio("data", "show", "--name", "days", "--label", "latest", "-o", "json"))
    assert latest["version"] == "1"

    refused = studio("data", "list", "--name", "days", "--tag", "stage", fails=True)
    assert "key=value" in refused.stderr
    folder = studio("data", "create", "-n", "x", "-p", str(tmp_path), "--type", "uri_file", fails=True)
    assert "uri_file is one file" in folder.stderr


@pytest.mark.django_db(transaction=True)
def test_it_references_an_s3_folder_of_the_store_and_refuses_one_outside(
    studio,  # noqa: F811
    settings,
    s3_bucket,
    s3_server,
):
    settings.STUDIO_ARTIFACT_STORE = f"s3://{s3_bucket}/artifacts"
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for name, content in FOLDER.items():
        s3.put_object(Bucket=s3_bucket, Key=f"artifacts/landing/{name}", Body=content)
    created = as_json(
        studio("data", "create", "-n", "landing", "-p", f"s3://{s3_bucket}/artifacts/landing", "-o", "json")
    )
    assert created["file_count"] == 3 and created["path"] == f"s3://{s3_bucket}/artifacts/landing"

    outside = studio("data", "create", "-n", "leak", "-p", f"s3://{s3_bucket}/elsewhere/", fails=True)
    assert "outside Studio's artifact store" in outside.stderr
