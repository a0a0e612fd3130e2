"""`studio environment ...`: the runtimes (image, conda file) that deployments run models in."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from studio.cli import output
from studio.cli.errors import CliError
from studio.cli.generic_update import apply, generic_update_options
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
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML environment YAML: name, version, image, conda_file (a path relative to the YAML), "
    "description, tags. Options given on the command line override it.",
)
@click.option("-n", "--name", help="The environment's name (overrides the YAML's).")
@click.option("-v", "--version", help="The version (overrides the YAML's). Default: the next number.")
@click.option(
    "--conda-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A conda file (name, channels, dependencies), read here and sent with the environment.",
)
@click.option("--image", help="The base image, e.g. mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04.")
@click.option("--description")
@generic_update_options
@output.output_option
@pass_client
def create(
    client: Client,
    spec_file: Path | None,
    name: str | None,
    version: str | None,
    conda_file: Path | None,
    image: str | None,
    description: str | None,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Create an environment version from an Azure ML environment YAML file, or from options.

    The conda file is read here and sent as an object. Fields Studio cannot use (such as `build`) are
    reported as warnings.
    """
    spec = load_spec(spec_file, SPEC_FIELDS) if spec_file else Spec(Path.cwd() / "environment.yml", {})
    given = {"conda_file": str(conda_file.resolve()) if conda_file else None, "image": image}
    given["description"] = description
    fields = {**spec.fields, **{key: value for key, value in given.items() if value is not None}}
    if not fields.get("image") and not fields.get("conda_file") and not spec_file:
        raise click.UsageError("Give -f env.yml, or --image and/or --conda-file.")
    body = _body(Spec(spec.path, apply(fields, sets, adds, removes)), name, version)
    created = client.request("POST", "/environments/", json=body)
    if output_format == "table":
        output.note(f"Created environment {created['name']} version {created['version']}.")
    output.emit(created, output_format, show_environment)


@environment.command("list")
@click.option("-n", "--name", help="Only the versions of this environment.")
# --query is az's JMESPath query on the result (see output_option); the free-text filter is --search.
@click.option("-q", "--search", "search", help="Only environments whose name contains this text.")
@output.output_option
@pass_client
def list_(client: Client, name: str | None, search: str | None, output_format: str) -> None:
    """List environment versions, newest first. With -o json, a JSON array of the server's items."""
    params = [("name", name)] if name else []
    if search:
        params.append(("q", search))
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
@click.option("-n", "--name", required=True, help="The environment's name.")
@click.option("-v", "--version", help="The version, or `latest`.")
@click.option("-l", "--label", type=click.Choice(["latest"]), help="As az ml's --label: latest.")
@output.output_option
@pass_client
def show(client: Client, name: str, version: str | None, label: str | None, output_format: str) -> None:
    """Show one environment version, with its conda dependencies."""
    if bool(version) == bool(label):
        raise click.UsageError("Say which version: --version V or --label latest.")
    version = version or "latest"
    found = client.get(f"/environments/{quote(name, safe='')}/versions/{quote(version, safe='')}/")
    output.emit(found, output_format, show_environment)
