"""`studio environment ...`: the runtimes (image, conda file) that deployments run models in."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from studio.cli import output
from studio.cli.errors import CliError
from studio.cli.options import pass_client
from studio.cli.specs import Spec, load_spec, read_yaml

if TYPE_CHECKING:
    from studio.cli.client import Client

# pip_requirements is Studio's own addition; the rest are Azure ML's environment YAML fields.
SPEC_FIELDS = {"name", "version", "description", "tags", "image", "conda_file", "pip_requirements"}

ENVIRONMENT_COLUMNS: list[output.Column] = [
    output.Column("Name", lambda e: e["name"]),
    output.Column("Version", lambda e: e["version"]),
    output.Column("Image", lambda e: e.get("image"), wrap=True),
    output.Column("Conda", lambda e: "yes" if e.get("conda_file") else ""),
    output.Column("Tags", lambda e: output.tags_text(e.get("tags")), wrap=True),
    output.Column("Created", lambda e: output.when(e.get("created_at"))),
]


def show_environment(environment: dict) -> None:
    conda = environment.get("conda_file") or {}
    output.emit_record(
        [
            ("Name", environment["name"]),
            ("Version", environment["version"]),
            ("Description", environment.get("description")),
            ("Tags", output.tags_text(environment.get("tags"))),
            ("Image", environment.get("image")),
            ("Conda dependencies", _dependencies(conda.get("dependencies"))),
            ("Pip requirements", environment.get("pip_requirements")),
            ("Created by", environment.get("created_by")),
            ("Created", output.when(environment.get("created_at"))),
            ("Asset id", environment.get("asset_id")),
        ]
    )


def _dependencies(items: Any) -> str:
    """Conda dependencies on one line; a nested `pip:` list is shown as pip(...)."""
    parts = []
    for item in items or []:
        if isinstance(item, dict):
            parts.extend(f"{key}({', '.join(map(str, value or []))})" for key, value in item.items())
        else:
            parts.append(str(item))
    return ", ".join(parts)


@click.group()
def environment() -> None:
    """Create and find environments: a base image and/or a conda file a model's code runs with."""


def read_conda(spec: Spec) -> dict | None:
    """The conda file as an object: a path relative to the YAML is read; an inline mapping is kept."""
    value = spec.get("conda_file")
    if value is None or isinstance(value, dict):
        return value
    path = spec.local_path("conda_file")
    conda = read_yaml(path, "the conda file")
    if not isinstance(conda, dict):
        raise CliError(f"The conda file {path} must be a mapping (name, channels, dependencies).")
    return conda


def _body(spec: Spec, name: str | None, version: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        key: str(spec.get(key))
        for key in ("name", "version", "description", "image")
        if spec.get(key) is not None
    }
    body["tags"] = spec.text_map("tags")
    pip = spec.get("pip_requirements")
    if pip is not None:
        body["pip_requirements"] = "\n".join(pip) if isinstance(pip, list) else str(pip)
    conda = read_conda(spec)
    if conda is not None:
        body["conda_file"] = conda
    if name:
        body["name"] = name
    if version:
        body["version"] = version
    if not body.get("name"):
        raise click.UsageError("Give the environment a name: `name:` in the YAML file, or --name.")
    return body


@environment.command()
@click.option(
    "-f",
    "--file",
    "spec_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML environment YAML: name, version, image, conda_file (a path relative to the YAML), "
    "description, tags.",
)
@click.option("--name", help="Overrides the YAML's name.")
@click.option("--version", help="Overrides the YAML's version. Default: the next number.")
@output.output_option
@pass_client
def create(
    client: Client, spec_file: Path, name: str | None, version: str | None, output_format: str
) -> None:
    """Create an environment version from an Azure ML environment YAML file.

    The conda file is read here and sent as an object. Fields Studio cannot use (such as `build`) are
    reported as warnings.
    """
    body = _body(load_spec(spec_file, SPEC_FIELDS), name, version)
    created = client.request("POST", "/environments/", json=body)
    if output_format == "table":
        output.note(f"Created environment {created['name']} version {created['version']}.")
    output.emit(created, output_format, show_environment)


@environment.command("list")
@click.option("--name", help="Only the versions of this environment.")
@click.option("-q", "--query", help="Only environments whose name contains this text.")
@output.output_option
@pass_client
def list_(client: Client, name: str | None, query: str | None, output_format: str) -> None:
    """List environment versions, newest first. With -o json, a JSON array of the server's items."""
    params = [("name", name)] if name else []
    if query:
        params.append(("q", query))
    environments = client.collect("/environments/", params)
    output.emit(
        environments,
        output_format,
        lambda rows: output.emit_table(
            rows,
            ENVIRONMENT_COLUMNS,
            empty="No environment matches. Create one with `studio environment create -f env.yml`.",
        ),
    )


@environment.command()
@click.option("--name", required=True, help="The environment's name.")
@click.option("--version", required=True, help="The version, or `latest`.")
@output.output_option
@pass_client
def show(client: Client, name: str, version: str, output_format: str) -> None:
    """Show one environment version, with its conda dependencies."""
    found = client.get(f"/environments/{quote(name, safe='')}/versions/{quote(version, safe='')}/")
    output.emit(found, output_format, show_environment)
