"""`studio online-endpoint compare` and `studio online-deployment replay`: how a deployment's answers
compare with the live ones, from mirrored traffic or from a replay of collected traffic."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from studio.cli import output
from studio.cli.endpoint import endpoint_path
from studio.cli.errors import CliError
from studio.cli.options import pass_client

if TYPE_CHECKING:
    from studio.cli.client import Client

# Replays take from seconds to hours: asked often at first, then every few seconds.
POLL_INTERVALS_S = ((0.0, 0.2), (10.0, 1.0), (120.0, 5.0))
FINISHED = {"succeeded", "failed"}


def _time(value: str | None) -> str | None:
    """An ISO 8601 time as given (UTC when it has no offset), or a duration before now: 15m, 2h, 1d."""
    if value is None:
        return None
    text = value.strip()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text[:-1].isdigit() and text[-1:] in units:
        moment = datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
        return moment.isoformat()
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO 8601 time (2026-11-30T14:00:00Z) nor a duration before now "
            "(15m, 2h, 1d)."
        ) from None
    return text


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


def show_report(report: dict) -> None:
    """The figures as label/value lines, then the sampled disagreements as a table."""
    agreement = report.get("agreement_pct")
    output.emit_record(
        [
            ("Compared", report.get("compared", 0)),
            ("Agreement", "-" if agreement is None else f"{agreement:g}%"),
            ("Live errors", report.get("live_errors", 0)),
            ("Shadow errors", report.get("shadow_errors", 0)),
            ("Dropped", report.get("dropped") or None),
            (
                "p50 live / shadow",
                f"{_ms(report['latency_p50_ms']['live'])} / {_ms(report['latency_p50_ms']['shadow'])}",
            ),
            (
                "p99 live / shadow",
                f"{_ms(report['latency_p99_ms']['live'])} / {_ms(report['latency_p99_ms']['shadow'])}",
            ),
        ]
    )
    disagreements = report.get("disagreements") or []
    if disagreements:
        click.echo()
        output.emit_table(
            disagreements,
            [
                output.Column("Time", lambda d: (d.get("time") or "")[:19]),
                output.Column("Request", lambda d: d.get("request_id")),
                output.Column("Live", lambda d: d.get("live_status")),
                output.Column("Shadow", lambda d: d.get("shadow_status")),
                output.Column("Reason", lambda d: d.get("reason"), wrap=True),
                output.Column("Input", lambda d: d.get("input") or "(not collected)", wrap=True),
            ],
            empty="",
        )


@click.command()
@click.option("-n", "--name", required=True, help="The endpoint.")
@click.option(
    "-d",
    "--deployment",
    help="The mirror deployment compared with the live answers. Default: the one the endpoint mirrors to.",
)
@click.option(
    "--start", help="ISO 8601 (UTC without an offset) or a duration before now (15m, 2h). Default: 1h."
)
@click.option("--end", help="ISO 8601 or a duration before now. Default: now.")
@click.option(
    "--sample", type=click.IntRange(0, 200), default=20, show_default=True, help="Disagreements listed."
)
@output.output_option
@pass_client
def compare(
    client: Client,
    name: str,
    deployment: str | None,
    start: str | None,
    end: str | None,
    sample: int,
    output_format: str,
) -> None:
    """Compare a mirror deployment's answers with the live ones over a time window: agreement,
    errors of each side, latency percentiles, and a sample of the disagreements (with their input
    where the deployments' data collection takes it)."""
    params = {"deployment": deployment, "start": _time(start), "end": _time(end), "sample": sample}
    report = client.get(
        f"{endpoint_path(name)}comparison/", params={k: v for k, v in params.items() if v is not None}
    )
    output.emit(report, output_format, show_report)


def _follow(client: Client, replay: dict) -> dict:
    started = time.monotonic()
    shown = -1
    while replay["state"] not in FINISHED:
        elapsed = time.monotonic() - started
        interval = next(step for since, step in reversed(POLL_INTERVALS_S) if elapsed >= since)
        time.sleep(interval)  # polling the server's row: the replay runs there
        replay = client.get(replay["url"].split("/api/v1", 1)[-1])
        if replay["sent"] != shown and replay["total"]:
            shown = replay["sent"]
            output.note(f"Replay {replay['id']}: {replay['sent']}/{replay['total']} requests sent.")
    return replay


@click.command()
@click.option(
    "-e", "--endpoint-name", required=True, help="The endpoint whose collected traffic is replayed."
)
@click.option("-n", "--name", required=True, help="The deployment the requests are sent to.")
@click.option("--start", required=True, help="Start of the window: ISO 8601 (UTC without an offset) or 2h.")
@click.option("--end", required=True, help="End of the window: ISO 8601 or a duration before now.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Requests per second at most.")
@click.option("--no-wait", is_flag=True, help="Return once the replay is queued.")
@output.output_option
@pass_client
def replay(
    client: Client,
    endpoint_name: str,
    name: str,
    start: str,
    end: str,
    rate: float | None,
    no_wait: bool,
    output_format: str,
) -> None:
    """Send the requests that data collection archived for an endpoint between START and END to one
    deployment (straight to its replicas: no client sees the answers), and compare its answers with
    the recorded ones. Prints the comparison report when it finishes."""
    body = {"deployment": name, "start": _time(start), "end": _time(end)}
    if rate is not None:
        body["rate"] = rate
    created = client.request("POST", f"{endpoint_path(endpoint_name)}replays/", json=body)
    if no_wait:
        output.emit(
            created, output_format, lambda item: output.note(f"Replay {item['id']} is {item['state']}.")
        )
        return
    finished = _follow(client, created)
    if finished["state"] == "failed":
        raise CliError(f"Replay {finished['id']} failed: {finished['error']}")
    output.emit(finished, output_format, lambda item: show_report(item["report"]))
