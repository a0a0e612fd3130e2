"""`studio batch-endpoint`, `studio batch-deployment` and `studio job` against a live Studio whose batch
jobs run on a real Celery worker, as `az ml` scripts drive them.

The sample script of docs/samples/azure/batch runs in bash with the installed `studio` console script;
the other tests run the CLI in-process (quicker) against the same live server and worker.
"""

import csv
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from endpoints.tests.support import WorkerProcess, broker_of_its_own
from serving import warm
from studio.cli.main import cli
from studio.testkit import until

BIN = Path(sys.executable).parent
SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "azure" / "batch"

Run = Callable[..., Result]


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory) -> Path:
    """The sample's MLflow model, made once by the sample's own script (no model is committed)."""
    target = tmp_path_factory.mktemp("batch-model") / "model"
    runpy.run_path(str(SAMPLE / "make-model.py"))["make_model"](target)
    return target


@pytest.fixture
def samples(tmp_path, model_folder) -> Path:
    """A docs/samples folder holding a copy of azure/batch with its model made."""
    root = tmp_path / "samples"
    shutil.copytree(SAMPLE, root / "azure" / "batch")
    shutil.copytree(model_folder, root / "azure" / "batch" / "model")
    return root


@pytest.fixture
def server(live_server, transactional_db, settings, tmp_path):
    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_HOME.mkdir()
    return live_server


@pytest.fixture
def worker(server, settings, tmp_path, monkeypatch):
    """A real Celery worker with two pool processes (two batch slots), its beat, and a broker of its own,
    so no other test's worker takes its messages; this process sends its tasks there."""
    # The worker's settings put the broker's folders under its STUDIO_HOME, the server's.
    with broker_of_its_own(settings.STUDIO_HOME, monkeypatch):
        process = WorkerProcess(settings, CELERY_BROKER_URL="filesystem://", STUDIO_BATCH_LEASE_S="2")
        process.argv[process.argv.index("--concurrency") + 1] = "2"
        # With its beat, as `studio up` runs one: the batch tick finishes jobs and re-queues lapsed claims.
        process.argv += ["--beat", "--schedule", str(tmp_path / "celerybeat-schedule")]
        process.start(tmp_path / "worker.log")
        yield process
        process.kill()  # its broker is thrown away with it: nothing to finish gracefully
        warm.stop_template(warm.socket_path(settings.STUDIO_HOME))  # a runner's template outlives its worker


@pytest.fixture
def studio(server, team, tmp_path, samples, monkeypatch) -> Run:
    """Run `studio` with a command line as a shell splits it, in-process, from the samples folder; a
    non-zero exit is expected only with `fails=True`."""
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


@pytest.fixture
def shell(server, team, tmp_path, samples) -> Callable[[str], subprocess.CompletedProcess]:
    """Run a command line in bash from the samples folder with the installed `studio` first on PATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STUDIO_")} | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "STUDIO_URL": server.url,
        "STUDIO_TOKEN": team.contributor.token,
        "STUDIO_CONFIG": str(tmp_path / "config.json"),
        "COLUMNS": "200",
    }

    def run(command: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["bash", "-c", command], cwd=samples, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{command}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        return done

    return run


def model_predictions(model: Path, data: Path) -> list[tuple[str, int, float]]:
    """(file, row, prediction) for every row of every CSV file, from the model itself."""
    import mlflow.pyfunc
    import pandas as pd

    loaded = mlflow.pyfunc.load_model(str(model))
    found = []
    for path in sorted(data.glob("*.csv")):
        for row, value in enumerate(loaded.predict(pd.read_csv(path))):
            found.append((path.name, row, float(value)))
    return found


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# The sample script, as it is in docs/samples/azure/batch


def test_the_batch_scoring_script_runs_unchanged_and_scores_as_the_model_does(worker, shell, samples):
    done = shell("bash azure/batch/batch-score.sh")
    out = done.stdout
    assert "default deployment: linear-mlflow" in out
    assert "Job completed" in out
    assert "default deployment: linear-custom" in out
    assert re.search(r"^Jobs of linear-batch-\d+: 2$", out, re.MULTILINE)
    assert "Execution Summary" in out

    # The no-code deployment: every row of every file, in file order, equal to the model's own prediction.
    (first, second) = sorted(samples.glob("outputs-*"), key=lambda folder: folder.stat().st_mtime)
    predictions = read_rows(first / "named-outputs" / "score" / "predictions.csv")
    expected = model_predictions(samples / "azure" / "batch" / "model", samples / "azure" / "batch" / "data")
    assert [(row["file"], int(row["row"])) for row in predictions] == [(f, r) for f, r, _ in expected]
    assert [float(row["prediction"]) for row in predictions] == pytest.approx([p for _, _, p in expected])
    summary = json.loads((first / "named-outputs" / "score" / "summary.json").read_text())
    assert summary["status"] == "Completed"
    assert (summary["items"], summary["items_failed"], summary["rows"]) == (3, 0, 12)
    assert summary["mini_batches"] == 2, "3 files in mini-batches of 2"

    # The scoring script's deployment: one row per file, under the file name the invocation set.
    totals = read_rows(second / "named-outputs" / "score" / "file-totals.csv")
    assert [row["file"] for row in totals] == ["part-1.csv", "part-2.csv", "part-3.csv"]
    for row in totals:
        rows_of_file = [p for f, _, p in expected if f == row["file"]]
        assert int(row["rows"]) == len(rows_of_file)
        assert float(row["total"]) == pytest.approx(sum(rows_of_file), abs=1e-5)
    assert "run method start: 2 file(s)" in out, "the scoring script's output, streamed"


# Verbs one by one, in-process


def test_invoke_prints_the_job_for_scripts_and_the_job_verbs_follow_it(worker, studio, samples):
    studio("studio batch-endpoint create --name files-ep --set tags.team=ml")
    studio(
        "studio batch-deployment create -f azure/batch/deployment.yml -e files-ep "
        "--set settings.mini_batch_size=3 --set resources.instance_count=1"
    )
    token = json.loads(studio("studio batch-endpoint get-credentials -n files-ep -o json").stdout)
    assert token["tokenType"] == "Bearer" and token["accessToken"], "aml_token, a batch endpoint's default"
    shown = json.loads(studio("studio batch-endpoint show -n files-ep -o json").stdout)
    assert shown["defaults"]["deployment_name"] == "linear-mlflow", "an endpoint's first deployment"
    assert shown["tags"] == {"team": "ml"}
    assert (
        studio(
            "studio batch-deployment show -n linear-mlflow -e files-ep --query settings.mini_batch_size -o tsv"
        )
    ).stdout == "3\n"

    # One file, as uri_file; the job's name alone on stdout, as Azure scripts read it.
    invoked = studio(
        "studio batch-endpoint invoke -n files-ep --input azure/batch/data/part-3.csv "
        "--output-file-name part-3-scores.csv --query name -o tsv"
    )
    name = invoked.stdout.strip()
    assert len(name) == 36 and invoked.stdout.count("\n") == 1
    streamed = studio(f"studio job stream --name {name}")
    assert streamed.stdout.startswith(f"RunId: {name}\n")
    assert "Completed" in streamed.stdout
    assert studio(f"studio job show -n {name} --query status -o tsv").stdout == "Completed\n"
    job = json.loads(studio(f"studio job show -n {name} -o json").stdout)
    assert job["inputs"]["type"] == "uri_file"
    assert sorted(job["outputs"]["score"]["files"]) == ["part-3-scores.csv", "summary.json"]
    assert job["progress"]["rows"] == 5

    for listing in (
        "studio job list --endpoint-name files-ep --query '[].name' -o tsv",
        "studio batch-endpoint list-jobs -n files-ep --query '[].name' -o tsv",
        "studio batch-deployment list-jobs -n linear-mlflow -e files-ep --query '[].name' -o tsv",
        "studio job list --status Completed --query '[].name' -o tsv",
    ):
        assert studio(listing).stdout == f"{name}\n", listing
    assert studio("studio job list --status Failed --query 'length(@)' -o tsv").stdout == "0\n"

    studio(f"studio job download -n {name} -p downloads")
    rows = read_rows(samples / "downloads" / "named-outputs" / "score" / "part-3-scores.csv")
    assert [row["file"] for row in rows] == ["part-3.csv"] * 5
    again = studio(f"studio job download -n {name} -p downloads", fails=True)
    assert "exists already" in again.stderr
    # Cancelling a finished job changes nothing.
    cancelled = studio(f"studio job cancel -n {name}")
    assert "had already ended (Completed)" in cancelled.stderr

    # az's --mini-batch-size and --instance-count set this job's alone: one file per mini-batch here.
    files = len(list((samples / "azure" / "batch" / "data").glob("*.csv")))
    per_file = studio(
        "studio batch-endpoint invoke -n files-ep --input azure/batch/data --mini-batch-size 1 "
        "--instance-count 2 --query name -o tsv"
    ).stdout.strip()
    studio(f"studio job stream --name {per_file}")
    job = json.loads(studio(f"studio job show -n {per_file} -o json").stdout)
    assert (job["status"], job["progress"]["mini_batches"]) == ("Completed", files)
    assert (job["spec"]["mini_batch_size"], job["spec"]["instance_count"]) == (1, 2)
    assert (
        studio(
            "studio batch-deployment show -n linear-mlflow -e files-ep --query settings.mini_batch_size -o tsv"
        ).stdout
        == "3\n"
    ), "the deployment keeps its own"


def test_stream_exits_non_zero_on_a_failed_job_and_on_a_canceled_one(worker, studio, samples):
    batch = samples / "azure" / "batch"
    (batch / "code" / "batch_driver.py").write_text(
        textwrap.dedent(
            """\
            import os
            import time


            def init():
                print("init done")


            def run(mini_batch):
                if any("slow" in os.path.basename(path) for path in mini_batch):
                    print("scoring slowly", flush=True)
                    time.sleep(240)
                raise ValueError(f"cannot score {len(mini_batch)} file(s)")
            """
        )
    )
    studio("studio batch-endpoint create --name failing-ep")
    studio(
        "studio batch-deployment create -f azure/batch/deployment-custom.yml -e failing-ep "
        "--set settings.retry_settings.max_retries=0 --set settings.retry_settings.timeout=300 "
        "--set settings.mini_batch_size=3"
    )
    name = studio("studio batch-endpoint invoke -n failing-ep --input azure/batch/data --query name -o tsv")
    name = name.stdout.strip()
    streamed = studio(f"studio job stream -n {name}", fails=True)
    assert "cannot score 3 file(s)" in streamed.stdout, "the scoring code's traceback, streamed"
    assert f"Job {name} Failed:" in streamed.stderr
    assert studio(f"studio job show -n {name} --query status -o tsv").stdout == "Failed\n"

    shutil.copy(batch / "data" / "part-1.csv", batch / "slow.csv")
    slow = studio(
        "studio batch-endpoint invoke -n failing-ep --input azure/batch/slow.csv --query name -o tsv"
    )
    slow = slow.stdout.strip()
    # Its runner may take a while to start on a busy host; the mini-batch then sleeps for minutes.
    assert until(
        lambda: studio(f"studio job show -n {slow} --query progress.running -o tsv").stdout == "1\n", 180, 0.5
    ), studio(f"studio job show -n {slow} -o json").stdout[-3000:]
    asked = studio(f"studio job cancel -n {slow} --query status -o tsv")
    assert asked.stdout in ("CancelRequested\n", "Canceled\n"), asked.stdout
    canceled = studio(f"studio job stream -n {slow}", fails=True)
    assert f"Job {slow} was canceled." in canceled.stderr
    assert studio(f"studio job show -n {slow} --query status -o tsv").stdout == "Canceled\n"


def test_errors_exit_non_zero_with_the_servers_message(studio, samples):
    unknown = studio("studio batch-endpoint show -n nowhere", fails=True)
    assert "There is no batch endpoint named 'nowhere'" in unknown.stderr
    invoked = studio("studio batch-endpoint invoke -n nowhere --input azure/batch/data", fails=True)
    assert "There is no batch endpoint named 'nowhere'" in invoked.stderr
    missing = studio("studio batch-endpoint invoke -n nowhere --input ./no-such-folder", fails=True)
    assert "is neither a local file or folder nor a data asset" in missing.stderr

    studio("studio batch-endpoint create -f azure/batch/endpoint.yml")
    nothing = studio("studio batch-endpoint invoke -n linear-batch --input azure/batch/data", fails=True)
    assert "has no default deployment: name one with --deployment-name" in nothing.stderr
    assert "Uploading" not in nothing.stderr, "refused before the upload"
    wrong_type = studio(
        "studio batch-endpoint invoke -n linear-batch --input azure/batch/data --input-type uri_file",
        fails=True,
    )
    assert "is a folder, but --input-type is uri_file" in wrong_type.stderr
    setting = studio(
        "studio batch-endpoint invoke -n linear-batch --input azure/batch/data --set error_threshold=5",
        fails=True,
    )
    assert "not error_threshold" in setting.stderr and "batch-deployment update" in setting.stderr

    bad = samples / "azure" / "batch" / "bad-deployment.yml"
    bad.write_text(
        (samples / "azure" / "batch" / "deployment.yml")
        .read_text()
        .replace("mini_batch_size: 2", "mini_batch_size: 0")
    )
    refused = studio(f"studio batch-deployment create -f {bad}", fails=True)
    assert "mini_batch_size" in refused.stderr and "at least 1" in refused.stderr, refused.stderr
    bad.write_text("name: [unclosed\n")
    broken = studio(f"studio batch-deployment create -f {bad}", fails=True)
    assert "is not valid YAML" in broken.stderr
    no_deployment = studio("studio batch-deployment show -n ghost -e linear-batch", fails=True)
    assert "has no deployment 'ghost'" in no_deployment.stderr
    no_job = studio("studio job show -n 00000000-0000-0000-0000-000000000000", fails=True)
    assert "There is no job 00000000-0000-0000-0000-000000000000" in no_job.stderr
