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
