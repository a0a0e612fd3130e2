"""`studio model ...`: register, find, tag, download, archive and delete model versions."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from studio.cli import assets, output
from studio.cli.errors import CliError
from studio.cli.generic_update import apply, changes, generic_update_options
from studio.cli.optimize import optimize
from studio.cli.options import parse_pairs, pass_client
from studio.cli.profile import profile
from studio.cli.specs import load_spec

if TYPE_CHECKING:
    from studio.cli.client import Client

MODEL_TYPES = ["custom_model", "mlflow_model"]
SPEC_FIELDS = {"name", "version", "path", "type", "description", "tags", "properties", "source"}

VERSION_COLUMNS: list[output.Column] = [
    output.Column("Version", lambda v: v["version"]),
    output.Column("Type", lambda v: v["type"]),
    output.Column("Tags", lambda v: output.tags_text(v.get("tags")), wrap=True),
    output.Column("Size", lambda v: output.size_text(v.get("size"))),
    output.Column("Created by", lambda v: v.get("created_by")),
    output.Column("Created", lambda v: output.when(v.get("created_at"))),
    output.Column("Status", lambda v: "archived" if v.get("archived") else "active"),
]
MODEL_COLUMNS: list[output.Column] = [
    output.Column("Name", lambda m: m["name"]),
    output.Column("Latest version", lambda m: m.get("latest_version")),
    output.Column("Versions", lambda m: m.get("version_count")),
    output.Column("Updated", lambda m: output.when(m.get("updated_at"))),
]


def _version_path(name: str, version: str) -> str:
    return f"/models/{quote(name, safe='')}/versions/{quote(version, safe='')}/"


def show_version(version: dict) -> None:
    """A version as a person wants to read it: identity first, then content, then where it is used."""
    files = version.get("files") or []
    listed = ", ".join(item["path"] for item in files[:5]) + (
        f" (+{len(files) - 5} more)" if len(files) > 5 else ""
    )
    mlflow = version.get("mlflow") or {}
    output.emit_record(
        [
            ("Name", version["name"]),
            ("Version", version["version"]),
            ("Type", version["type"]),
            ("Status", "archived" if version.get("archived") else "active"),
            ("Description", version.get("description")),
            ("Tags", output.tags_text(version.get("tags"))),
            ("Properties", output.tags_text(version.get("properties"))),
            ("Source", version.get("source")),
            ("Created by", version.get("created_by")),
            ("Created", output.when(version.get("created_at"))),
            ("Size", output.size_text(version.get("size"))),
            ("Files", listed),
            ("Digest", f"sha256:{version['digest']}" if version.get("digest") else None),
            ("MLflow flavors", ", ".join(mlflow.get("flavors") or {})),
            ("Asset id", version.get("asset_id")),
            ("Deployments", ", ".join(version.get("deployments") or [])),
        ]
    )


def _emit_version(version: dict, out: str) -> None:
    output.emit(version, out, show_version)


@click.group()
def model() -> None:
    """Register, find, tag, download, archive and delete model versions."""


model.add_command(profile)
model.add_command(optimize)


def _registration(
    spec_file: Path | None, cli: dict[str, Any], tags: dict[str, str], properties: dict[str, str]
) -> tuple[dict[str, Any], Path]:
    """The fields to register and the content's path: the YAML's fields, overridden by options given."""
    fields: dict[str, Any] = {}
    content: Path | None = None
    if spec_file is not None:
        spec = load_spec(spec_file, SPEC_FIELDS)
        for key in ("name", "version", "type", "description", "source"):
            if spec.get(key) is not None:
                fields[key] = str(spec.get(key))
        fields["tags"] = spec.text_map("tags")
        fields["properties"] = spec.text_map("properties")
        content = spec.local_path("path")
    fields.update({key: value for key, value in cli.items() if value is not None and key != "path"})
    fields["tags"] = {**fields.get("tags", {}), **tags}
    fields["properties"] = {**fields.get("properties", {}), **properties}
    content = cli["path"] or content
    if not fields.get("name"):
        raise click.UsageError("Give the model a name: --name, or `name:` in the YAML file.")
    if content is None:
        raise click.UsageError("Say what to register: --path FILE_OR_FOLDER, or `path:` in the YAML file.")
    if not content.exists():
        raise CliError(f"{content} does not exist.")
    return fields, content


def _with_generic_updates(
    fields: dict[str, Any], content: Path, generic: tuple[tuple[str, ...], ...]
) -> tuple[dict[str, Any], Path]:
    """The registration changed by --set/--add/--remove, as az applies them to the model's YAML."""
    if not any(generic):
        return fields, content
    changed = apply({**fields, "path": str(content)}, *generic)
    content = Path(str(changed.pop("path", content))).expanduser()
    if not content.exists():
        raise CliError(f"{content} does not exist.")
    for key in ("tags", "properties"):
        if not isinstance(changed.get(key, {}), dict):
            raise CliError(f"--set: {key} must be a mapping of key: value.")
        changed[key] = {str(k): "" if v is None else str(v) for k, v in (changed.get(key) or {}).items()}
    text = {key: str(value) for key, value in changed.items() if key not in ("tags", "properties")}
    return {**text, "tags": changed["tags"], "properties": changed["properties"]}, content


def _form(fields: dict[str, Any]) -> dict[str, str]:
    # Multipart fields are text: tags and properties travel as JSON strings, as the API expects.
    form = {key: value for key, value in fields.items() if key not in ("tags", "properties")}
    form["tags"] = json.dumps(fields["tags"])
    form["properties"] = json.dumps(fields["properties"])
    return form


def register(client: Client, fields: dict[str, Any], content: Path) -> dict:
    """Upload `content` (a file, or a folder zipped under its own name) as a new version; the server's answer.

    `fields` are the registration's name, type, tags... as `_registration` returns them.
    """
    form = _form({"tags": {}, "properties": {}, **fields})
    if content.is_dir():
        # Imported here: only folder uploads need zipfile.
        from studio.cli.archives import zipped_folder

        # Zipping a large folder takes a while: find out first that the server is there and takes the token.
        client.get("/models/", params={"page_size": 1})

        with zipped_folder(content) as archive:
            return client.upload("/models/", form, "archive", archive, f"Uploading {archive.stem}")
    return client.upload("/models/", form, "file", content, f"Uploading {content.name}")


@model.command()
@click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML model YAML (name, version, path, type, description, tags, properties); "
    "its path is relative to the YAML file. Options given on the command line override it.",
)
@click.option("-n", "--name", help="The model's name; versions of one model share it.")
@click.option("-v", "--version", help="The version to create. Default: the next number.")
@click.option(
    "-p",
    "--path",
    type=click.Path(exists=True, path_type=Path),
    help="A file, or a folder (uploaded as a zip, kept under the folder's own name).",
)
@click.option("--type", "type_", type=click.Choice(MODEL_TYPES), help="Default: custom_model.")
@click.option("--description")
@click.option("--tag", "tags", multiple=True, callback=parse_pairs, help="key=value; repeat for more.")
@click.option(
    "--property", "properties", multiple=True, callback=parse_pairs, help="key=value, immutable; repeatable."
)
@click.option("--source", help="Where the model came from, e.g. the URI of the run that trained it.")
@generic_update_options
@output.output_option
@pass_client
def create(
    client: Client,
    spec_file: Path | None,
    name: str | None,
    version: str | None,
    path: Path | None,
    type_: str | None,
    description: str | None,
    tags: dict[str, str],
    properties: dict[str, str],
    source: str | None,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Register a new model version from a file or a folder.

    A file is uploaded as it is. A folder is zipped into a temporary file, with the folder's own name as
    the top-level directory (as Azure ML does: a model registered from ./model is found at
    $AZUREML_MODEL_DIR/model/...), then uploaded with a progress bar. Folders holding symbolic links
    are refused. Prints the new version.
    """
    cli = {
        "name": name,
        "version": version,
        "path": path,
        "type": type_,
        "description": description,
        "source": source,
    }
    fields, content = _registration(spec_file, cli, tags, properties)
    fields, content = _with_generic_updates(fields, content, (sets, adds, removes))
    created = register(client, fields, content)
    if output_format == "table":
        output.note(f"Registered {created['name']} version {created['version']}.")
    _emit_version(created, output_format)


@model.command("list")
@click.option("-n", "--name", help="List this model's versions instead of the registered models.")
@click.option("--tag", "tags", multiple=True, help="Only with tag key=value; repeat to require several.")
@click.option("--type", "type_", type=click.Choice(MODEL_TYPES), help="Only versions of this type.")
# --query is az's JMESPath query on the result (see output_option); the free-text filter is --search.
@click.option("-q", "--search", "search", help="Free text: name, description, version or tags.")
@output.output_option
@pass_client
def list_(
    client: Client,
    name: str | None,
    tags: tuple[str, ...],
    type_: str | None,
    search: str | None,
    output_format: str,
) -> None:
    """List registered models, or with --name the versions of one model (archived ones included).

    Filters combine: every --tag must hold. With -o json, prints a JSON array of the server's items
    (all pages).
    """
    columns = (MODEL_COLUMNS, VERSION_COLUMNS)
    empty = "No registered model matches. Register one with `studio model create`."
    assets.emit_list(
        client, "/models", name, assets.filters(tags, type_, search), output_format, columns, empty
    )


name_option = click.option("-n", "--name", required=True, help="The model's name.")
version_option = click.option(
    "-v", "--version", required=True, help="The version, or `latest` (newest active one)."
)


@model.command()
@name_option
@click.option("-v", "--version", help="The version, or `latest` (newest active one).")
@click.option(
    "-l",
    "--label",
    type=click.Choice(["latest"]),
    help="As az ml's --label: latest, the newest active version.",
)
@output.output_option
@pass_client
def show(client: Client, name: str, version: str | None, label: str | None, output_format: str) -> None:
    """Show one model version: tags, properties, files, digest, MLflow flavors and deployments."""
    if bool(version) == bool(label):
        raise click.UsageError("Say which version: --version V or --label latest.")
    _emit_version(client.get(_version_path(name, version or "latest")), output_format)


@model.command()
@name_option
@version_option
@click.option("--set-tag", "set_tags", multiple=True, callback=parse_pairs, help="key=value; repeatable.")
@click.option("--remove-tag", "remove_tags", multiple=True, help="A tag key to remove; repeatable.")
@click.option("--description", help="The new description.")
@generic_update_options
@output.output_option
@pass_client
def update(
    client: Client,
    name: str,
    version: str,
    set_tags: dict[str, str],
    remove_tags: tuple[str, ...],
    description: str | None,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Change a version's tags or description; its content and properties never change.

    Tags not named are kept. A tag both set and removed is removed. az's --set/--add/--remove work on
    the version as `show -o json` prints it: --set tags.stage=prod, --set description="...".
    """
    generic = sets or adds or removes
    if not set_tags and not remove_tags and description is None and not generic:
        raise click.UsageError(
            "Nothing to change: give --set-tag, --remove-tag, --description or --set/--add/--remove."
        )
    current = client.get(_version_path(name, version))
    patch: dict[str, Any] = changes(current, apply(current, sets, adds, removes)) if generic else {}
    if set_tags or remove_tags:
        tags_now = patch.get("tags", current["tags"])
        missing = [key for key in remove_tags if key not in tags_now and key not in set_tags]
        if missing:
            output.note(f"Warning: {name} version {current['version']} has no tag {', '.join(missing)}.")
        tags = {**tags_now, **set_tags}
        patch["tags"] = {key: value for key, value in tags.items() if key not in remove_tags}
    if description is not None:
        patch["description"] = description
    # The concrete version, not `latest`: the change must land on the version just read.
    updated = client.request("PATCH", _version_path(name, current["version"]), json=patch)
    _emit_version(updated, output_format)


def _set_archived(client: Client, name: str, version: str, archived: bool, output_format: str) -> None:
    updated = client.request("PATCH", _version_path(name, version), json={"archived": archived})
    if output_format == "table":
        state = "Archived" if archived else "Restored"
        output.note(f"{state} {updated['name']} version {updated['version']}.")
    _emit_version(updated, output_format)


@model.command()
@name_option
@version_option
@output.output_option
@pass_client
def archive(client: Client, name: str, version: str, output_format: str) -> None:
    """Archive a version: `latest` skips it; deployments that use it keep working."""
    _set_archived(client, name, version, True, output_format)


@model.command()
@name_option
@click.option("-v", "--version", required=True, help="The version to restore.")
@output.output_option
@pass_client
def restore(client: Client, name: str, version: str, output_format: str) -> None:
    """Restore an archived version, making it active again."""
    _set_archived(client, name, version, False, output_format)


@model.command()
@name_option
@version_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_client
def delete(client: Client, name: str, version: str, yes: bool) -> None:
    """Delete a version and its files, for good. Refused while a deployment uses it (archive it instead)."""
    current = client.get(_version_path(name, version))
    label = f"{current['name']} version {current['version']}"
    if not yes:
        click.confirm(f"Delete {label} and its files? This cannot be undone", abort=True, err=True)
    client.request("DELETE", _version_path(name, current["version"]))
    output.note(f"Deleted {label}.")


@model.command()
@name_option
@version_option
@click.option(
    "-p",
    "--download-path",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The folder to download into.",
)
@click.option(
    "--keep-zip", is_flag=True, help="Save the zip as DOWNLOAD_PATH/NAME-VERSION.zip; do not unpack it."
)
@pass_client
def download(client: Client, name: str, version: str, download_path: Path, keep_zip: bool) -> None:
    """Download a version's files into DOWNLOAD_PATH/NAME/, as Azure ML does.

    The version is streamed as a zip to disk (never held in memory) and unpacked safely: paths outside
    the target and links are refused, and a failed download leaves nothing behind. An existing target
    must be empty: nothing is overwritten. With --keep-zip the zip is saved instead of unpacked.
    """
    # Imported here: only downloads need zipfile.
    from studio.cli.archives import unpack

    current = client.get(_version_path(name, version))
    concrete = current["version"]
    target = download_path / (f"{current['name']}-{concrete}.zip" if keep_zip else current["name"])
    if target.exists() and (keep_zip or any(target.iterdir())):
        raise CliError(f"{target} exists already; remove it or choose another --download-path.")
    download_path.mkdir(parents=True, exist_ok=True)
    label = f"Downloading {current['name']} version {concrete}"
    source = _version_path(name, concrete) + "download"
    handle, temporary = tempfile.mkstemp(prefix=".studio-download-", suffix=".zip", dir=download_path)
    try:
        with os.fdopen(handle, "wb") as out:
            client.download(source, out, label)
        if keep_zip:
            os.replace(temporary, target)
            output.note(f"Saved {target}.")
            return
        if target.exists():
            target.rmdir()  # empty, checked above: unpack moves a complete folder into its place
        files = unpack(Path(temporary), target)
        output.note(f"Downloaded {len(files)} file(s) to {target}.")
    finally:
        Path(temporary).unlink(missing_ok=True)
