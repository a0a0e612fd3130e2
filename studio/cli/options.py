"""Options and decorators shared by the command groups."""

import functools
from collections.abc import Callable
from typing import Any

import click


def pass_client(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give the command a `Client` for the configured server as its first argument, closed afterwards."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Imported on use, not at start: httpx is the slowest import of the CLI.
        from studio.cli.client import Client

        client = Client()
        try:
            return command(client, *args, **kwargs)
        finally:
            client.close()

    return wrapper


def parse_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """`key=value` options into a dict; the value may itself contain '='."""
    pairs: dict[str, str] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{text!r} is not of the form key=value, for example stage=prod.")
        pairs[key] = value
    return pairs


# az ml's arguments that choose an Azure workspace. A Studio server is one workspace, so scripts that
# pass them run unchanged: they are accepted on every verb and ignored with one warning line.
AZURE_ONLY_OPTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("azure_resource_group", ("-g", "--resource-group")),
    ("azure_workspace_name", ("-w", "--workspace-name")),
    ("azure_subscription", ("--subscription",)),
]


def _taken(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def adopt(command: click.Command) -> None:
    """Give a verb (or every verb of a group) az ml's global arguments, once.

    Every verb takes `-g/--resource-group`, `-w/--workspace-name` and `--subscription` (ignored, with a
    warning), and `-o/--output` and `--query` when it has no `output_option` of its own (a verb with no
    result prints nothing whatever the format). Options a verb already uses for something else keep
    their meaning there.
    """
    if isinstance(command, click.Group):
        for child in command.commands.values():
            adopt(child)
        return
    if getattr(command, "studio_adopted", False) or command.callback is None:
        return
    command.studio_adopted = True  # type: ignore[attr-defined]
    from studio.cli import output

    names = {param.name for param in command.params}
    taken = _taken(command)
    accepts_output = "output_format" not in names and not taken & {"-o", "--output", "--query"}
    if accepts_output:
        command.params.extend(output.output_params())
    ignored: dict[str, str] = {}
    for name, opts in AZURE_ONLY_OPTIONS:
        free = [opt for opt in opts if opt not in taken]
        if name in names or not any(opt.startswith("--") for opt in free):
            continue
        ignored[name] = next(opt for opt in free if opt.startswith("--"))
        command.params.append(
            click.Option([*free, name], metavar="TEXT", help="Azure only: accepted and ignored.", hidden=True)
        )
    callback = command.callback

    @functools.wraps(callback)
    def with_azure_arguments(*args: Any, **kwargs: Any) -> Any:
        given = [flag for name, flag in ignored.items() if kwargs.pop(name, None) is not None]
        if given:
            flags = given[0] if len(given) == 1 else f"{', '.join(given[:-1])} and {given[-1]}"
            output.note(
                f"Warning: {flags} {'is' if len(given) == 1 else 'are'} for Azure and ignored: "
                "Studio is one workspace, the server of STUDIO_URL or `studio login`."
            )
        if accepts_output:
            output.remember(kwargs.pop("output_format", None), kwargs.pop("query", None))
        return callback(*args, **kwargs)

    command.callback = with_azure_arguments


class StudioGroup(click.Group):
    """The `studio` command: az's argument forms understood, az ml's global arguments on every verb."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from studio.cli.generic_update import expand_arguments

        return super().parse_args(ctx, expand_arguments(args))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            adopt(command)
        return name, command, rest
