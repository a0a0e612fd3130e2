"""`studio model profile`: measure a model version under instance types' limits, and how to deploy it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from studio.cli import output
from studio.cli.jobs import model_job
from studio.cli.options import pass_client

if TYPE_CHECKING:
    from studio.cli.client import Client

FIGURE_COLUMNS: list[output.Column] = [
    output.Column("Instance type", lambda f: f["instance_type"]),
    output.Column("vCPUs", lambda f: f"{f['cpus']:g}" + ("" if f["cpus"] == f["cpus_nominal"] else "*")),
    output.Column("Requests/s", lambda f: f"{f['throughput_rps']:g}"),
    output.Column("p50 ms", lambda f: f.get("latency_p50_ms")),
    output.Column("p99 ms", lambda f: f.get("latency_p99_ms")),
    output.Column("Concurrency", lambda f: f["max_concurrent_requests_per_instance"]),
    output.Column("Peak memory", lambda f: output.size_text(f.get("peak_memory_bytes"))),
    output.Column("Limited by", lambda f: f["limits"]["method"]),
]


def show_profile(job: dict) -> None:
    """Each type's figures at its operating point, then the recommendation."""
    result = job.get("result") or {}
    output.emit_table(result.get("instance_types") or [], FIGURE_COLUMNS, empty="No figures were measured.")
    if any(f["cpus"] != f["cpus_nominal"] for f in result.get("instance_types") or []):
        output.note("* limited to this host's CPUs: a larger instance does better than measured here.")
    chosen = result.get("recommendation") or {}
    output.emit_record(
        [
            ("Instance type", chosen.get("instance_type")),
            ("Instance count", chosen.get("instance_count")),
            ("Max concurrent requests per instance", chosen.get("max_concurrent_requests_per_instance")),
            ("Why", chosen.get("reason")),
        ]
    )


@click.command()
@click.option("-n", "--name", required=True, help="The model's name.")
@click.option("-v", "--version", required=True, help="The version to profile (or `latest`).")
@click.option(
    "--instance-type",
    "instance_types",
    multiple=True,
    help="An Azure VM size to measure under (its vCPUs and memory); repeat for more. "
    "Default: Standard_DS1_v2, Standard_DS2_v2 and Standard_DS3_v2.",
)
@click.option(
    "--request-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The body of a scoring request to load the model with. Default: the model's input example, "
    "or one row built from its signature.",
)
@click.option("--duration", default="20s", show_default=True, help="How long each load level runs.")
@click.option("--target-rps", type=float, help="Requests per second to size the instance count for.")
@click.option("--no-wait", is_flag=True, help="Return once the job has started.")
@output.output_option
@pass_client
def profile(
    client: Client,
    name: str,
    version: str,
    instance_types: tuple[str, ...],
    request_file: Path | None,
    duration: str,
    target_rps: float | None,
    no_wait: bool,
    output_format: str,
) -> None:
    """Measure throughput, latency and memory under each instance type's limits; recommend a deployment.

    Studio runs the model as a local deployment's replica would run, limited to each instance type's
    vCPUs and memory, and loads it with 1, 2, 4, ... concurrent requests until throughput stops
    growing. The figures and the recommended instance_type, instance_count (for --target-rps) and
    max_concurrent_requests_per_instance are kept on the version.
    """
    body: dict = {"duration": duration}
    if instance_types:
        body["instance_types"] = list(instance_types)
    if target_rps is not None:
        body["target_rps"] = target_rps
    model_job(
        client,
        name,
        version,
        "profile",
        body,
        request_file,
        label="Profiling",
        wait=not no_wait,
        output_format=output_format,
        show=show_profile,
    )
