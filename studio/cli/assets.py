"""What the registry's CLI groups (models, data assets) share: their list filters and their listing."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from studio.cli import output

if TYPE_CHECKING:
    from studio.cli.client import Client


def filters(tags: tuple[str, ...], type_: str | None, query: str | None) -> list[tuple[str, str]]:
    """The list's query string: `tag` (repeated), `type`, `q`."""
    # Tag filters go to the server as typed: it owns the syntax and says what is wrong with a bad one.
    params = [("tag", tag) for tag in tags]
    if type_:
        params.append(("type", type_))
    if query:
        params.append(("q", query))
    return params


def emit_list(
    client: Client,
    base: str,
    name: str | None,
    params: list[tuple[str, str]],
    output_format: str,
    columns: tuple[list, list],
    empty: str,
) -> None:
    """Print every asset under `base` (`/models`, `/data`), or with `name` every version of one, all pages
    of them; `columns` are the table's (assets, versions), `empty` what a list with no asset says."""
    asset_columns, version_columns = columns
    if name:
        versions = client.collect(f"{base}/{quote(name, safe='')}/versions/", params)
        output.emit(
            versions,
            output_format,
            lambda rows: output.emit_table(rows, version_columns, empty=f"No version of {name} matches."),
        )
        return
    assets = client.collect(f"{base}/", params)
    output.emit(assets, output_format, lambda rows: output.emit_table(rows, asset_columns, empty=empty))
