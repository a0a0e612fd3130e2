"""`studio data ...`: register, find, download and archive data asset versions (`az ml data`)."""

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
from studio.cli.options import parse_pairs, pass_client
from studio.cli.specs import load_spec

if TYPE_CHECKING:
    from studio.cli.client import Client

DATA_TYPES = ["uri_file", "uri_folder", "mltable"]
SPEC_FIELDS = {"name", "version", "type", "path", "description", "tags", "properties"}
# Paths the server resolves in its artifact store; anything else is a local file or folder to upload.
REMOTE_PREFIXES = ("s3://", "azureml://")

VERSION_COLUMNS: list[output.Column] = [
    output.Column("Version", lambda v: v["version"]),
    output.Column("Type", lambda v: v["type"]),
    output.Column("Tags", lambda v: output.tags_text(v.get("tags")), wrap=True),
    output.Column("Files", lambda v: v.get("file_count")),
    output.Column("Size", lambda v: output.size_text(v.get("size"))),
    output.Column("Created", lambda v: output.when((v.get("creation_context") or {}).get("created_at"))),
    output.Column("Status", lambda v: "archived" if v.get("archived") else "active"),
]
ASSET_COLUMNS: list[output.Column] = [
    output.Column("Name", lambda a: a["name"]),
    output.Column("Latest version", lambda a: a.get("latest_version")),
    output.Column("Type", lambda a: a.get("latest_type")),
    output.Column("Versions", lambda a: a.get("version_count")),
    output.Column("Updated", lambda a: output.when(a.get("updated_at"))),
]


def _version_path(name: str, version: str) -> str:
    return f"/data/{quote(name, safe='')}/versions/{quote(version, safe='')}/"


def show_version(version: dict) -> None:
    """A data version as a person wants to read it: identity, where it is, then its files."""
    files = version.get("files") or []
    count = version.get("file_count", len(files))
    listed = ", ".join(item["path"] for item in files[:5]) + (f" (+{count - 5} more)" if count > 5 else "")
    context = version.get("creation_context") or {}
    output.emit_record(
        [
            ("Name", version["name"]),
            ("Version", version["version"]),
            ("Type", version["type"]),
            ("Status", "archived" if version.get("archived") else "active"),
            ("Path", version.get("path")),
            ("Description", version.get("description")),
            ("Tags", output.tags_text(version.get("tags"))),
            ("Properties", output.tags_text(version.get("properties"))),
            ("Created by", context.get("created_by")),
            ("Created", output.when(context.get("created_at"))),
            ("Size", output.size_text(version.get("size"))),
            ("Files", listed),
            ("Digest", f"sha256:{version['digest']}" if version.get("digest") else None),
            ("Id", version.get("id")),
        ]
    )


def _emit_version(version: dict, out: str) -> None:
    output.emit(version, out, show_version)


@click.group()
def data() -> None:
    """Register, find, download and archive data assets: files and folders for batch scoring."""


def _registration(
    spec_file: Path | None, cli: dict[str, Any], tags: dict[str, str]
) -> tuple[dict[str, Any], str | Path]:
    """The fields to register and the content: a local path, or a store location (s3://, azureml://)
    as text. The YAML's fields, overridden by options given."""
    fields: dict[str, Any] = {"tags": {}, "properties": {}}
    content: str | Path | None = None
    if spec_file is not None:
        spec = load_spec(spec_file, SPEC_FIELDS)
        for key in ("name", "version", "type", "description"):
            if spec.get(key) is not None:
                fields[key] = str(spec.get(key))
        fields["tags"] = spec.text_map("tags")
        fields["properties"] = spec.text_map("properties")
        raw = spec.get("path")
        remote = isinstance(raw, str) and raw.startswith(REMOTE_PREFIXES)
        content = raw if remote else spec.local_path("path")
    fields.update({key: value for key, value in cli.items() if value is not None and key != "path"})
    fields["tags"] = {**fields["tags"], **tags}
    if cli["path"]:
        given = cli["path"]
        content = given if given.startswith(REMOTE_PREFIXES) else Path(given).expanduser()
    if not fields.get("name"):
        raise click.UsageError("Give the data asset a name: --name, or `name:` in the YAML file.")
    if content is None:
        raise click.UsageError(
            "Say what to register: --path FILE_FOLDER_OR_S3_URI, or `path:` in the YAML file."
        )
    if isinstance(content, Path) and not content.exists():
        raise CliError(f"{content} does not exist.")
    return fields, content


def register(client: Client, fields: dict[str, Any], content: str | Path) -> dict:
    """Register the data: a reference is sent as its path; a file is uploaded as it is; a folder is
    zipped (its content at the top of the zip, as Azure keeps a uri_folder) and uploaded."""
    form = {key: value for key, value in fields.items() if key not in ("tags", "properties")}
    if isinstance(content, str):
        return client.request(
            "POST",
            "/data/",
            json={**form, "path": content, "tags": fields["tags"], "properties": fields["properties"]},
        )
    form["tags"] = json.dumps(fields["tags"])
    form["properties"] = json.dumps(fields["properties"])
    if content.is_dir():
        if fields.get("type") == "uri_file":
            raise CliError(
                f"{content} is a folder, and a uri_file is one file: give a file, or --type uri_folder."
            )
        # Imported here: only folder uploads need zipfile.
        from studio.cli.archives import zipped_folder

        # Zipping a large folder takes a while: find out first that the server is there and takes the token.
        client.get("/data/", params={"page_size": 1})
        with zipped_folder(content, keep_top=False) as archive:
            return client.upload(
                "/data/", form, "archive", archive, f"Uploading {content.name or archive.stem}"
            )
    return client.upload("/data/", form, "file", content, f"Uploading {content.name}")


@data.command()
@click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML data YAML (name, version, type, path, description, tags); a local path is relative to "
    "the YAML file. Options given on the command line override it.",
)
@click.option("-n", "--name", help="The data asset's name; its versions share it.")
@click.option("-v", "--version", help="The version to create. Default: the next number.")
@click.option("-t", "--type", "type_", type=click.Choice(DATA_TYPES), help="Default: what the path is.")
@click.option(
    "-p",
    "--path",
    help="A local file or folder (uploaded), or files already in the artifact store: s3://bucket/folder/ "
    "or azureml://datastores/workspaceblobstore/paths/folder/.",
)
@click.option("-d", "--description")
@click.option("--tag", "--tags", "tags", multiple=True, callback=parse_pairs, help="key=value; repeatable.")
@output.output_option
@pass_client
def create(
    client: Client,
    spec_file: Path | None,
    name: str | None,
    version: str | None,
    type_: str | None,
    path: str | None,
    description: str | None,
    tags: dict[str, str],
    output_format: str,
) -> None:
    """Register a new data version from a file, a folder, or a location in the artifact store.

    A uri_file is one file; a uri_folder a folder; an mltable a folder with an MLTable file at its top.
    A reference to the store is listed by the server and never copied. Prints the new version.
    """
    cli = {"name": name, "version": version, "type": type_, "path": path, "description": description}
    fields, content = _registration(spec_file, cli, tags)
    created = register(client, fields, content)
    if output_format == "table":
        output.note(f"Registered {created['name']} version {created['version']} ({created['id']}).")
    _emit_version(created, output_format)


@data.command("list")
@click.option("-n", "--name", help="List this data asset's versions instead of the assets.")
@click.option("--tag", "tags", multiple=True, help="Only with tag key=value; repeat to require several.")
@click.option("--type", "type_", type=click.Choice(DATA_TYPES), help="Only versions of this type.")
@click.option("-q", "--search", "search", help="Free text: name, description, version, path or tags.")
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
    """List data assets, or with --name the versions of one (archived ones included).

    Filters combine: every --tag must hold. With -o json, prints a JSON array of every item."""
    columns = (ASSET_COLUMNS, VERSION_COLUMNS)
    empty = "No data asset matches. Register one with `studio data create`."
    assets.emit_list(
        client, "/data", name, assets.filters(tags, type_, search), output_format, columns, empty
    )


name_option = click.option("-n", "--name", required=True, help="The data asset's name.")
version_option = click.option(
    "-v", "--version", required=True, help="The version, or `latest` (newest active one)."
)


@data.command()
@name_option
@click.option("-v", "--version", help="The version, or `latest` (newest active one).")
@click.option("-l", "--label", type=click.Choice(["latest"]), help="As az ml's --label: latest.")
@output.output_option
@pass_client
def show(client: Client, name: str, version: str | None, label: str | None, output_format: str) -> None:
    """Show one data version: type, path, tags, files and digest."""
    if bool(version) == bool(label):
        raise click.UsageError("Say which version: --version V or --label latest.")
    _emit_version(client.get(_version_path(name, version or "latest")), output_format)


def _set_archived(client: Client, name: str, version: str, archived: bool, output_format: str) -> None:
    updated = client.request("PATCH", _version_path(name, version), json={"archived": archived})
    if output_format == "table":
        output.note(
            f"{'Archived' if archived else 'Restored'} {updated['name']} version {updated['version']}."
        )
    _emit_version(updated, output_format)


@data.command()
@name_option
@version_option
@output.output_option
@pass_client
def archive(client: Client, name: str, version: str, output_format: str) -> None:
    """Archive a version: `latest` skips it; jobs that name it explicitly still read it."""
    _set_archived(client, name, version, True, output_format)


@data.command()
@name_option
@click.option("-v", "--version", required=True, help="The version to restore.")
@output.output_option
@pass_client
def restore(client: Client, name: str, version: str, output_format: str) -> None:
    """Restore an archived version, making it active again."""
    _set_archived(client, name, version, False, output_format)


@data.command()
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
@pass_client
def download(client: Client, name: str, version: str, download_path: Path) -> None:
    """Download a version's files into DOWNLOAD_PATH/NAME/, as Azure ML does.

    Streamed as a zip to disk and unpacked safely (paths outside the target and links are refused); an
    existing target must be empty, and a failed download leaves nothing behind."""
    # Imported here: only downloads need zipfile.
    from studio.cli.archives import unpack

    current = client.get(_version_path(name, version))
    target = download_path / current["name"]
    if target.exists() and any(target.iterdir()):
        raise CliError(f"{target} exists already; remove it or choose another --download-path.")
    download_path.mkdir(parents=True, exist_ok=True)
    source = _version_path(name, current["version"]) + "download"
    handle, temporary = tempfile.mkstemp(prefix=".studio-download-", suffix=".zip", dir=download_path)
    try:
        with os.fdopen(handle, "wb") as out:
            client.download(source, out, f"Downloading {current['name']} version {current['version']}")
        if target.exists():
            target.rmdir()  # empty, checked above: unpack moves a complete folder into its place
        files = unpack(Path(temporary), target)
        output.note(f"Downloaded {len(files)} file(s) to {target}.")
    finally:
        Path(temporary).unlink(missing_ok=True)
