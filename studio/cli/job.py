"""`studio job ...`: Studio's jobs as `az ml job` shows them, batch scoring jobs first of all.

A batch job is named by its id, as Azure names jobs: `studio batch-endpoint invoke ... --query name -o tsv`
gives the name every verb here takes. `stream` follows a job to its end and exits non-zero unless it
completed, so a script can chain `invoke`, `stream` and `download` with `set -e`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import click

from studio.cli import output
from studio.cli.errors import CliError
from studio.cli.options import pass_client

if TYPE_CHECKING:
    from studio.cli.client import Client

# Azure's job statuses that end a job, and those of them that are not a success.
FINISHED = {"Completed", "Failed", "Canceled"}
UNSUCCESSFUL = {"Failed", "Canceled"}
# A batch job has one named output, Azure's `score`.
OUTPUT_NAMES = ["score"]
# How many of the newest log lines one poll asks for: more than a busy job writes between two polls.
LOG_WINDOW = 2000
# (seconds since streaming began, poll interval from then on): a small job ends within seconds; a long
# one need not be asked twice a second for hours.
STREAM_INTERVALS_S = ((0.0, 0.25), (10.0, 1.0), (300.0, 3.0))


def job_path(name: str) -> str:
    return f"/jobs/{quote(name, safe='')}/"


def is_batch(job: dict) -> bool:
    """A batch scoring job (Azure's statuses in `status`), not a deployment's job (`state`, `kind`)."""
    return job.get("type") == "batch"


def progress_text(job: dict) -> str:
    """`4/10 mini-batches, 35/100 items (2 failed), 350 rows`, from the job's `progress`."""
    progress = job.get("progress")
    if not isinstance(progress, dict):
        return f"{progress}%" if progress is not None else ""
    done = (progress.get("succeeded") or 0) + (progress.get("failed") or 0)
    items_done = (progress.get("items_succeeded") or 0) + (progress.get("items_failed") or 0)
    mini_batches, items = progress.get("mini_batches") or 0, progress.get("items") or 0
    text = f"{done}/{mini_batches} mini-batches, {items_done}/{items} items"
    if progress.get("items_failed"):
        text += f" ({progress['items_failed']} failed)"
    text += f", {progress.get('rows') or 0} rows"
    if job.get("status") not in FINISHED and progress.get("eta_s") is not None:
        text += f", about {round(progress['eta_s'])}s left"
    return text


def input_text(job: dict) -> str:
    inputs = job.get("inputs") or {}
    # Azure's shape holds the input under its name; Studio's batch jobs have one.
    found = inputs.get("input", inputs) if isinstance(inputs, dict) else {}
    if not isinstance(found, dict):
        return str(found)
    return " ".join(str(part) for part in (found.get("type"), found.get("path")) if part)


JOB_COLUMNS: list[output.Column] = [
    output.Column("Name", lambda j: j.get("name") or j.get("id")),
    output.Column("Status", lambda j: j.get("status") or j.get("state")),
    output.Column("Endpoint", lambda j: j.get("endpoint_name")),
    output.Column("Deployment", lambda j: j.get("deployment_name")),
    output.Column("Progress", progress_text, wrap=True),
    output.Column("Created", lambda j: output.when((j.get("creation_context") or {}).get("created_at"))),
]


def show_job(job: dict) -> None:
    """A job as label/value lines: a batch job's input, progress and output, or a deployment's job."""
    if not is_batch(job):
        output.emit_record(
            [
                ("Id", job.get("id")),
                ("Kind", job.get("kind")),
                ("State", job.get("state")),
                ("Endpoint", job.get("endpoint_name")),
                ("Deployment", job.get("deployment_name")),
                ("Progress", progress_text(job)),
                ("Error", job.get("error")),
                ("Created", output.when(job.get("created_at"))),
                ("Finished", output.when(job.get("finished_at"))),
            ]
        )
        return
    score = (job.get("outputs") or {}).get("score") or {}
    output.emit_record(
        [
            ("Name", job.get("name")),
            ("Status", job.get("status")),
            ("Endpoint", job.get("endpoint_name")),
            ("Deployment", job.get("deployment_name")),
            ("Input", input_text(job)),
            ("Progress", progress_text(job)),
            ("Output", score.get("path")),
            ("Output files", ", ".join(score.get("files") or [])),
            ("Error", job.get("error")),
            ("Created", output.when((job.get("creation_context") or {}).get("created_at"))),
            ("Started", output.when(job.get("start_time"))),
            ("Ended", output.when(job.get("end_time"))),
        ]
    )


def emit_jobs(jobs: list[dict], output_format: str, empty: str) -> None:
    output.emit(jobs, output_format, lambda rows: output.emit_table(rows, JOB_COLUMNS, empty=empty))


def list_jobs(client: Client, endpoint_name: str | None = None, status: str | None = None) -> list[dict]:
    """Batch jobs, newest first: all of them, or one endpoint's, or those in one status."""
    params = [("type", "batch")]
    if endpoint_name:
        params.append(("endpoint", endpoint_name))
    if status:
        params.append(("status", status))
    return client.collect("/jobs/", params)


def new_lines(printed: list[str], tail: list[str]) -> list[str]:
    """The lines of `tail` (the log's newest lines now) that come after those `printed` so far.

    The tail overlaps the end of what was printed: the longest end of `printed` that starts `tail` is
    skipped. When nothing overlaps, the whole tail is new (the log grew past the window between polls).
    """
    for overlap in range(min(len(printed), len(tail)), 0, -1):
        if printed[len(printed) - overlap :] == tail[:overlap]:
            return tail[overlap:]
    return tail


def stream_batch_job(client: Client, job: dict) -> dict:
    """Print a batch job's log as it grows (stdout) and its progress when it changes (stderr) until the
    job ends; the finished job."""
    name = job["name"]
    click.echo(f"RunId: {name}")
    printed: list[str] = []
    shown_progress = ""
    started = time.monotonic()
    while True:
        # The job first, then its log: a log read after the job was seen finished holds its last lines.
        finished = job.get("status") in FINISHED
        response = client.send("GET", job_path(name) + "logs/", params={"lines": LOG_WINDOW})
        fresh = new_lines(printed, response.text.splitlines())
        for line in fresh:
            click.echo(line)
        printed = (printed + fresh)[-LOG_WINDOW:]
        progress = progress_text(job)
        if progress and progress != shown_progress and not finished:
            output.note(f"{job.get('status')}: {progress}")
            shown_progress = progress
        if finished:
            return job
        elapsed = time.monotonic() - started
        time.sleep(next(interval for since, interval in reversed(STREAM_INTERVALS_S) if elapsed >= since))
        job = client.get(job_path(name))


def _unpack_download(client: Client, source: str, target: Path, label: str) -> list[str]:
    """Stream the zip at `source` to disk beside `target` and unpack it there; the files written."""
    import os
    import tempfile

    from studio.cli.archives import unpack

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".studio-download-", suffix=".zip", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            client.download(source, out, label)
        return unpack(Path(temporary), target)
    finally:
        Path(temporary).unlink(missing_ok=True)


name_option = click.option(
    "-n", "--name", required=True, help="The job's name (its id, as `invoke --query name -o tsv` prints it)."
)


@click.group("job")
def job() -> None:
    """Follow, cancel and download Studio's jobs: batch scoring jobs and the jobs that change deployments."""


@job.command()
@name_option
@output.output_option
@pass_client
def show(client: Client, name: str, output_format: str) -> None:
    """Show a job: its status, input, progress, output and error."""
    output.emit(client.get(job_path(name)), output_format, show_job)


@job.command("list")
@click.option("-e", "--endpoint-name", "--endpoint", "endpoint_name", help="Only this batch endpoint's jobs.")
@click.option(
    "--status",
    type=click.Choice(sorted(FINISHED | {"Queued", "Preparing", "Running", "Finalizing", "CancelRequested"})),
    help="Only jobs in this status.",
)
@click.option("-r", "--max-results", type=click.IntRange(1), help="At most this many jobs, the newest.")
@click.option("--all-results", is_flag=True, help="Every job (the default: Studio lists them all).")
@output.output_option
@pass_client
def list_(
    client: Client,
    endpoint_name: str | None,
    status: str | None,
    max_results: int | None,
    all_results: bool,
    output_format: str,
) -> None:
    """List batch jobs, newest first. With -o json, a JSON array of the server's jobs."""
    jobs = list_jobs(client, endpoint_name, status)
    if max_results is not None and not all_results:
        jobs = jobs[:max_results]
    emit_jobs(jobs, output_format, "No batch job yet. Start one with `studio batch-endpoint invoke`.")


@job.command()
@name_option
@pass_client
def stream(client: Client, name: str) -> None:
    """Print a job's log as it runs, until it ends: the job's events and what the scoring code prints.

    Exits 0 when the job completed, non-zero with its error when it failed or was canceled.
    """
    found = client.get(job_path(name))
    if not is_batch(found):
        # Imported here: only a deployment's job is followed with a progress bar.
        from studio.cli.jobs import follow

        follow(client, found, f"Job {name} ({found.get('kind')})")
        return
    finished = stream_batch_job(client, found)
    status = finished.get("status")
    if status == "Canceled":
        raise CliError(f"Job {name} was canceled.")
    if status in UNSUCCESSFUL:
        raise CliError(f"Job {name} {status}: {finished.get('error') or 'no reason was given.'}")
    output.note(f"Job {name} {status}: {progress_text(finished)}.")
    click.echo(f"\nExecution Summary\n=================\nRunId: {name}\nStatus: {status}")


@job.command()
@name_option
@output.output_option
@pass_client
def cancel(client: Client, name: str, output_format: str) -> None:
    """Ask a batch job to stop: no further mini-batch starts, the one in flight is stopped.

    A finished job is left as it is. The job ends Canceled; `studio job stream` waits for that.
    """
    found = client.request("POST", job_path(name) + "cancel/")
    if output_format == "table":
        if found.get("status") in FINISHED:
            output.note(f"Job {name} had already ended ({found.get('status')}); nothing to cancel.")
        else:
            output.note(f"Asked job {name} to stop ({found.get('status')}).")
    output.emit(found, output_format, show_job)


@job.command()
@name_option
@click.option(
    "--output-name",
    type=click.Choice(OUTPUT_NAMES),
    default="score",
    show_default=True,
    help="The output to download; a batch job's is score.",
)
@click.option(
    "-p",
    "--download-path",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The folder to download into: files land in DOWNLOAD_PATH/named-outputs/OUTPUT_NAME/, as az does.",
)
@pass_client
def download(client: Client, name: str, output_name: str, download_path: Path) -> None:
    """Download a batch job's output: the predictions file and summary.json.

    Into DOWNLOAD_PATH/named-outputs/score/, which must not exist yet or be empty: nothing is
    overwritten. The output is streamed to disk and unpacked safely; a failed download leaves nothing.
    """
    found = client.get(job_path(name))
    if not is_batch(found):
        raise CliError(f"Job {name} is a {found.get('kind')} job; only batch jobs have outputs to download.")
    target = download_path / "named-outputs" / output_name
    if target.exists() and any(target.iterdir()):
        raise CliError(f"{target} exists already; remove it or choose another --download-path.")
    if target.exists():
        target.rmdir()  # empty, checked above: unpack moves a complete folder into its place
    files = _unpack_download(
        client, job_path(name) + f"outputs/{output_name}/", target, f"Downloading the {output_name} of {name}"
    )
    output.note(f"Downloaded {len(files)} file(s) to {target}.")
