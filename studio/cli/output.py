"""What commands print: a table for people, or for scripts the server's JSON in az's output formats.

Every verb declared with `output_option` takes az's global `-o/--output json|jsonc|yaml|tsv|table|none`
and `--query JMESPATH`. A verb sees `output_format` as "table" only when a person's table is wanted
(`-o table`, no query); for any other choice it sees "json" and hands its result to `emit_json`, which
applies the query and prints the result the way `az` prints it. So a verb written for table and json
gets every format and `--query` without knowing about them.
"""

import functools
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import click

FORMATS = ["table", "json", "jsonc", "yaml", "tsv", "none"]
# Where the invocation's choice of output is kept: on the click context, so it ends with the command.
_RENDERING = "studio.output"


class Column(NamedTuple):
    """A table column; only free-text columns wrap, so identifiers and dates stay on one line."""

    title: str
    get: Callable[[dict], Any]
    wrap: bool = False


class Rendering(NamedTuple):
    """How this invocation prints its result: az's output format and the compiled `--query`, if any."""

    format: str
    query: Any = None


def _compile_query(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.compile(value)
    except (JMESPathError, KeyError) as exc:
        raise click.BadParameter(
            f"{value!r} is not a JMESPath expression ({exc}). Examples: provisioning_state, "
            "\"[?provisioning_state=='Succeeded'].name\"; see https://jmespath.org."
        ) from None


def rendering() -> Rendering:
    """The current invocation's output choice; JSON without a query outside a command."""
    ctx = click.get_current_context(silent=True)
    found = ctx.find_root().meta.get(_RENDERING) if ctx is not None else None
    return found or Rendering("json")


def remember(output_format: str | None, query: Any) -> str:
    """Keep `-o`/`--query` for `emit_json`; what the verb itself should see ("table" or "json").

    With a query and no `-o`, the result is JSON, as `az` prints by default.
    """
    chosen = (output_format or ("json" if query is not None else "table")).lower()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.find_root().meta[_RENDERING] = Rendering(chosen, query)
    return "table" if chosen == "table" and query is None else "json"


_OUTPUT_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("-o", "--output", "output_format"),
        {
            "type": click.Choice(FORMATS, case_sensitive=False),
            "default": None,
            "help": "table (the default) for people; json, jsonc, yaml or tsv for scripts, printed as az "
            "prints them; none prints nothing.",
        },
    ),
    (
        ("--query",),
        {
            "callback": _compile_query,
            "metavar": "JMESPATH",
            "help": "A JMESPath query on the result, as az's --query: e.g. --query scoring_uri -o tsv.",
        },
    ),
]


def output_params() -> list[click.Option]:
    """az's `-o/--output` and `--query`, as options to add to any command."""
    return [click.Option(list(decls), **attrs) for decls, attrs in _OUTPUT_OPTIONS]


def output_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command `-o/--output` and `--query`; it is called with `output_format` "table" or "json"."""

    @functools.wraps(command)
    def wrapper(*args: Any, output_format: str | None = None, query: Any = None, **kwargs: Any) -> Any:
        return command(*args, output_format=remember(output_format, query), **kwargs)

    for decls, attrs in reversed(_OUTPUT_OPTIONS):
        wrapper = click.option(*decls, **attrs)(wrapper)
    return wrapper


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


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def _tsv_cell(value: Any) -> str:
    # Inside a row, az writes a list as its length, an object as nothing, anything else as Python's str
    # (so True, False and None).
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        return ""
    return value if isinstance(value, str) else str(value)


def tsv_text(result: Any) -> str:
    """`result` as az's `-o tsv` prints it: one line per list item (or one for a single value); an
    object's values tab-separated, in key order unless the query built it (then in the query's order);
    a value of its own: true/false in lower case, as az does."""
    lines = []
    for row in result if isinstance(result, list) else [result]:
        if isinstance(row, OrderedDict):
            values = list(row.values())
        elif isinstance(row, dict):
            values = [value for _, value in sorted(row.items())]
        elif isinstance(row, list):
            values = row
        else:
            lines.append(str(row).lower() if isinstance(row, bool) else _tsv_cell(row))
            continue
        lines.append("\t".join(_tsv_cell(value) for value in values))
    return "".join(f"{line}\n" for line in lines)


def _table_text(result: Any) -> str:
    """A query's result as az's automatic table: scalar fields as columns (id, type, etag left out),
    headers with a capital first letter, columns left-aligned under a line of dashes."""
    rows: list[dict[str, str]] = []
    for item in result if isinstance(result, list) else [result]:
        row: dict[str, str] = {}
        if isinstance(item, dict):
            for key, value in item.items():
                if (
                    key not in ("id", "type", "etag")
                    and value is not None
                    and not isinstance(value, (list, dict))
                ):
                    row[key[:1].upper() + key[1:]] = str(value)
        elif isinstance(item, list):
            row = {f"Column{number}": str(value) for number, value in enumerate(item, 1)}
        else:
            row = {"Result": str(item)}
        rows.append(row)
    headers = list(dict.fromkeys(key for row in rows for key in row))
    if not headers:
        return ""
    widths = [max(len(header), *(len(row.get(header, "")) for row in rows)) for header in headers]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    text = [line(headers), line(["-" * width for width in widths])]
    text.extend(line([row.get(header, "") for header in headers]) for row in rows)
    return "".join(f"{row}\n" for row in text)


def emit_json(data: Any) -> None:
    """The command's result, for scripts: `--query` applied, printed in the `-o` format chosen (JSON
    when none was). A result that is null prints nothing, as with az."""
    chosen = rendering()
    result = data
    if chosen.query is not None:
        from jmespath import Options

        result = chosen.query.search(data, Options(dict_cls=OrderedDict))
    if result is None or chosen.format == "none":
        return
    if chosen.format == "tsv":
        click.echo(tsv_text(result), nl=False)
    elif chosen.format == "yaml":
        import yaml

        # Through JSON first: the query's ordered mappings are plain mappings to a YAML dumper.
        plain = json.loads(json.dumps(result))
        click.echo(yaml.safe_dump(plain, default_flow_style=False, allow_unicode=True), nl=False)
    elif chosen.format == "table":
        click.echo(_table_text(result), nl=False)
    elif chosen.format == "jsonc" and sys.stdout.isatty():
        _console().print_json(_json_text(result))
    else:
        click.echo(_json_text(result))


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
    """`emit_json` for scripts (the verb was given "json"), else what `show` prints for people."""
    if output == "json":
        emit_json(data)
    else:
        show(data)


def note(message: str) -> None:
    """A message for people on stderr, so stdout stays the command's result."""
    click.echo(message, err=True)
