"""`studio model optimize`: a model version converted to ONNX, checked, registered as its next version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from studio.cli import output
from studio.cli.jobs import model_job
from studio.cli.options import pass_client

if TYPE_CHECKING:
    from studio.cli.client import Client


def show_result(job: dict) -> None:
    """What was made from what, and how much faster it answers."""
    result = job.get("result") or {}
    output.emit_record(
        [
            ("Optimized", result.get("source")),
            ("New version", f"{result.get('name')}:{result.get('version')}"),
            ("Speedup", f"{result.get('speedup'):g}x"),
            ("One-row predict", f"{result.get('original_us'):g} µs -> {result.get('onnx_us'):g} µs"),
            ("Rows checked", result.get("rows_checked")),
            ("Tolerance", f"{result.get('tolerance'):g}"),
            ("Deploy it as", f"model: azureml:{result.get('name')}:{result.get('version')}"),
        ]
    )


@click.command()
@click.option("-n", "--name", required=True, help="The model's name.")
@click.option("-v", "--version", required=True, help="The version to optimize (or `latest`).")
@click.option(
    "--to",
    "to",
    type=click.Choice(["onnx"]),
    default="onnx",
    show_default=True,
    help="The format to convert to.",
)
@click.option(
    "--request-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The body of a scoring request to check the conversion on. Default: the model's input example.",
)
@click.option(
    "--tolerance",
    type=float,
    help="How far a converted score may be from the original's: |onnx - original| <= tolerance x "
    "max(1, |original|). Labels must always be equal. Default: 1e-4.",
)
@click.option("--no-wait", is_flag=True, help="Return once the job has started.")
@output.output_option
@pass_client
def optimize(
    client: Client,
    name: str,
    version: str,
    to: str,
    request_file: Path | None,
    tolerance: float | None,
    no_wait: bool,
    output_format: str,
) -> None:
    """Convert a scikit-learn model version to ONNX and register it as the model's next version.

    Studio converts it in a job, checks that the converted model answers every row of the request (or
    the model's input example) as the original does, and only then registers it, served by onnxruntime,
    with `optimized_from` and the measured speedup in its properties. A conversion that answers
    differently is refused, saying which output, rows and by how much.
    """
    body: dict = {"to": to}
    if tolerance is not None:
        body["tolerance"] = tolerance
    model_job(
        client,
        name,
        version,
        "optimize",
        body,
        request_file,
        label="Optimizing",
        wait=not no_wait,
        output_format=output_format,
        show=show_result,
    )
