"""What commands print: a table for people, or with `-o json` the server's JSON unchanged, for scripts."""

import json
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import click


class Column(NamedTuple):
    """A table column; only free-text columns wrap, so identifiers and dates stay on one line."""

    title: str
    get: Callable[[dict], Any]
    wrap: bool = False


output_option = click.option(
    "-o",
    "--output",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people; json prints the server's JSON unchanged, for scripts.",
)


def tags_text(tags: dict | None) -> str:
    return ", ".join(f"{key}={value}" for key, value in (tags or {}).items())


def when(value: str | None) -> str:
    """An ISO timestamp shortened to the minute, which is what a person scanning a table needs."""
    if not value:
        return ""
    return value.replace("T", " ")[:16]


def size_text(count: int | None) -> str:
    if count is None:
        return ""
    amount = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{count} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GB"


def _console():
    # Imported here: rich costs a noticeable part of the start time, and --help does not need it.
    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped into grep or a log, a table is not limited by a screen: rich's default of 80 columns
        # would cut identifiers short.
        console.width = 200
    return console


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def emit_table(rows: Sequence[dict], columns: Sequence[Column], *, empty: str) -> None:
    """One row per item; `empty` says what to do when there is nothing to show."""
    from rich.table import Table

    console = _console()
    if not rows:
        console.print(empty, highlight=False)
        return
    table = Table(show_edge=False, header_style="bold")
    for column in columns:
        if column.wrap:
            table.add_column(column.title, overflow="fold", min_width=12)
        else:
            table.add_column(column.title, no_wrap=True, overflow="ellipsis")
    for row in rows:
        values = (column.get(row) for column in columns)
        table.add_row(*("" if value is None else str(value) for value in values))
    console.print(table)


def emit_record(fields: Sequence[tuple[str, Any]]) -> None:
    """One item as label/value lines; empty values are left out."""
    from rich.table import Table

    table = Table(show_header=False, show_edge=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in fields:
        if value not in (None, "", [], {}):
            table.add_row(label, str(value))
    _console().print(table)


def emit(data: Any, output: str, show: Callable[[Any], None]) -> None:
    """The JSON for `-o json`, else what `show` prints for people."""
    if output == "json":
        emit_json(data)
    else:
        show(data)


def note(message: str) -> None:
    """A message for people on stderr, so stdout stays the command's result."""
    click.echo(message, err=True)
