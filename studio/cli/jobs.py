"""Following the server's jobs (create, update, scale, delete): a progress bar and the job's events."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from studio.cli import output
from studio.cli.errors import CliError
from studio.cli.progress import job_progress

if TYPE_CHECKING:
    from studio.cli.client import Client

# (seconds since following began, poll interval from then on): a deploy on a warm replica ends within
# a second, a cold one within seconds; a long job (an environment build) need not be asked so often.
POLL_INTERVALS_S = ((0.0, 0.05), (1.0, 0.25), (60.0, 1.0))
FINISHED = {"succeeded", "failed"}


def event_line(event: dict) -> str:
    """A job event as one line: the time of day, the level when not info, the message."""
    # The time of day is what a person watching needs; the date is the same for the whole job.
    when = str(event.get("t", ""))[11:19]
    level = event.get("level", "info")
    marker = "" if level == "info" else f"{level.upper()}: "
    return f"{when} {marker}{event.get('message', '')}".strip()


def follow(client: Client, job: dict, label: str, *, wait: bool = True) -> dict:
    """Wait for `job` to finish, showing its progress and each new event; the finished job.

    Without `wait`, says how to find the job and returns it at once. A failed job raises `CliError`
    with the job's error, which names what to fix (and ends with the replica's log when there is one).
    """
    if not wait:
        output.note(f"{label}: started job {job['id']}; not waiting for it (--no-wait).")
        return job
    seen: set[tuple[str, str, str]] = set()
    following = time.monotonic()
    with job_progress(label) as report:
        while True:
            fresh = []
            # The server keeps the newest events only, so an event is known by its content, not by its
            # position in the list.
            for event in job.get("events") or []:
                key = (str(event.get("t")), str(event.get("level")), str(event.get("message")))
                if key in seen:
                    continue
                seen.add(key)
                # A failed job's error (with its log tail) is printed once, as the command's error.
                if job.get("state") != "failed" or event.get("message") != job.get("error"):
                    fresh.append(event_line(event))
            report(int(job.get("progress") or 0), fresh)
            if job.get("state") in FINISHED:
                break
            elapsed = time.monotonic() - following
            time.sleep(next(interval for since, interval in reversed(POLL_INTERVALS_S) if elapsed >= since))
            job = client.get(f"/jobs/{job['id']}/")
    if job["state"] == "failed":
        raise CliError(f"{label} failed (job {job['id']}): {job.get('error') or 'no reason was given.'}")
    return job


def model_job(
    client: Client,
    name: str,
    version: str,
    action: str,
    body: dict,
    request_file: Path | None,
    *,
    label: str,
    wait: bool,
    output_format: str,
    show: Callable[[dict], None],
) -> dict:
    """Start a model version's job (`action`: optimize, profile) with `body`, the request file's text as
    its `request`; follow it as `label` and print it: the job as JSON, or `show(job)` once it succeeded."""
    if request_file is not None:
        try:
            # Sent as written: the server says what is wrong with it, as it would for any client.
            body = {**body, "request": request_file.read_text()}
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"Cannot read {request_file}: {exc}.") from None
    path = f"/models/{quote(name, safe='')}/versions/{quote(version, safe='')}/{action}/"
    accepted = client.request("POST", path, json=body)
    job = follow(client, accepted["job"], f"{label} {accepted[action]}", wait=wait)
    if output_format == "json":
        output.emit_json(job)
    elif job.get("state") == "succeeded":
        show(job)
    return job
