"""`studio online-deployment rollout`: move live traffic to a deployment step by step, watched against an
SLO, rolled back by the server on a breach (docs/safe-rollout.md)."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import click

from studio.cli import output
from studio.cli.errors import CliError
from studio.cli.options import pass_client

if TYPE_CHECKING:
    from studio.cli.client import Client

POLL_S = 1.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_interval(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """`30s`, `2m`, `1.5`, `500ms` as seconds."""
    match = _DURATION.match(value)
    if match is None or float(match[1]) <= 0:
        raise click.BadParameter(f"{value!r} is not a duration; write e.g. 30s, 2m or 1h.")
    return float(match[1]) * _UNIT_S[match[2]]


def rollouts_path(endpoint_name: str) -> str:
    return f"/online-endpoints/{endpoint_name}/rollouts/"


def _figures_text(figures: dict) -> str:
    if "agreement_pct" in figures:
        return f"agreement {figures.get('agreement_pct')}% of {figures.get('compared')} compared"
    parts = [f"{figures.get('requests', 0)} requests", f"{figures.get('errors', 0)} errors"]
    if figures.get("error_rate_pct") is not None:
        parts.append(f"error rate {figures['error_rate_pct']:g}%")
    if figures.get("latency_p99_ms") is not None:
        parts.append(f"p99 {figures['latency_p99_ms']:g} ms")
    return ", ".join(parts)


def show_rollout(rollout: dict) -> None:
    output.emit_record(
        [
            ("Rollout", rollout["id"]),
            ("Endpoint", rollout["endpoint"]),
            ("Deployment", rollout["deployment"]),
            ("State", rollout["state"]),
            ("Steps", " -> ".join(rollout["step_names"])),
            ("Step", rollout["step"] if rollout["state"] == "running" else ""),
            ("Interval", f"{rollout['interval_s']:g}s"),
            ("SLO", " ".join(f"{k}={v}" for k, v in (rollout.get("slo") or {}).items())),
            ("Reason", rollout.get("reason")),
        ]
    )
    for figures in rollout.get("figures") or []:
        output.note(f"  step {figures['step']}: {_figures_text(figures)}")


def _follow(client: Client, rollout: dict) -> dict:
    """Poll the rollout until it ends, printing each judged step once."""
    path = f"{rollouts_path(rollout['endpoint'])}{rollout['id']}/"
    told, step = 0, None
    while True:
        figures = rollout.get("figures") or []
        for judged in figures[told:]:
            verdict = "breached the SLO" if judged.get("breaches") else "within the SLO"
            output.note(f"Step {judged['step']}: {_figures_text(judged)}: {verdict}.")
        told = len(figures)
        if rollout["state"] != "running":
            return rollout
        if rollout["step"] != step:
            step = rollout["step"]
            output.note(
                f"Step {step} of {' -> '.join(rollout['step_names'])}: watching {rollout['interval_s']:g}s."
            )
        time.sleep(POLL_S)
        rollout = client.get(path)


@click.command()
@click.option("-e", "--endpoint-name", required=True, help="The endpoint.")
@click.option("-n", "--name", required=True, help="The deployment to roll out.")
@click.option(
    "--steps",
    required=True,
    help="Shares of live traffic for the deployment, comma-separated, ending with 100, e.g. 10,50,100. "
    "Start with 'shadow' for a first step on mirrored requests only: shadow,10,50,100.",
)
@click.option(
    "--interval",
    "interval_s",
    default="30s",
    show_default=True,
    callback=parse_interval,
    help="How long each step is watched (30s, 2m, ...).",
)
@click.option("--max-error-rate", type=float, help="Percent of the deployment's requests that may fail.")
@click.option("--max-p99-ms", type=float, help="Highest p99 latency of the deployment's requests, in ms.")
@click.option("--min-agreement", type=float, help="Least percent of shadow answers agreeing with live ones.")
@click.option("--no-wait", is_flag=True, help="Return the rollout as started, without following it.")
@output.output_option
@pass_client
def rollout(
    client: Client,
    endpoint_name: str,
    name: str,
    steps: str,
    interval_s: float,
    max_error_rate: float | None,
    max_p99_ms: float | None,
    min_agreement: float | None,
    no_wait: bool,
    output_format: str,
) -> None:
    """Move live traffic of an endpoint to a deployment step by step, rolling back on an SLO breach.

    Each step gives the deployment that share of live traffic (the other deployments keep their
    proportions of the rest), watches its requests for the interval, and checks the SLO on them. A
    breach restores the traffic as it was at once. Exits 0 once the deployment takes all traffic,
    non-zero when the rollout was rolled back or aborted, saying why.
    """
    slo = {
        key: value
        for key, value in (
            ("max_error_rate_pct", max_error_rate),
            ("max_p99_ms", max_p99_ms),
            ("min_agreement_pct", min_agreement),
        )
        if value is not None
    }
    body = {
        "deployment": name,
        "steps": [part.strip() for part in steps.split(",") if part.strip()],
        "interval_s": interval_s,
        "slo": slo,
    }
    started = client.request("POST", rollouts_path(endpoint_name), json=body)
    if no_wait:
        output.emit(started, output_format, show_rollout)
        return
    if output_format == "table":
        output.note(f"Rollout {started['id']} of {name} on {endpoint_name} started.")
    ended = _follow(client, started)
    output.emit(ended, output_format, show_rollout)
    if ended["state"] != "succeeded":
        raise CliError(f"Rollout {ended['id']} {ended['state'].replace('_', ' ')}: {ended['reason']}")
