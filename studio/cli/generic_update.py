"""az's generic update arguments: `--set`, `--add` and `--remove` on a resource's document.

They change the YAML's fields (or, for an update without a file, the resource as the server shows it)
before anything is sent, with az's path syntax: `a.b=c`, `list[0].x=y`, `list[name=blue].x=y`; values
are JSON when they parse as JSON (`--set instance_count=2` is a number, `--set tags='{"a": "b"}'` a
mapping), text otherwise. The document is changed only when every argument applies: a bad path leaves
it as it was.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import click

# az lets the values of one flag follow it: `--set a=1 b=2`, `--add list x y`, `--remove list 0`.
# `expand_arguments` folds them into one flag per value (--set) or one token per flag (--add, --remove),
# joined with this separator, which no shell argument a person types contains.
SEPARATOR = "\x1f"
_FLAGS = ("--set", "--add", "--remove")
_STEP = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


class GenericUpdateError(click.UsageError):
    """A `--set`, `--add` or `--remove` that does not fit the document; the message names the path."""


def expand_arguments(args: list[str]) -> list[str]:
    """The command line with az's multi-value forms of --set/--add/--remove made into click's.

    Tokens after one of these flags belong to it until the next token that starts with '-'; Studio's
    verbs take no positional arguments, so nothing else is taken by mistake.
    """
    expanded: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        if token == "--":  # noqa: S105 (the end of options, not a secret)
            expanded.extend(args[index:])
            break
        if token not in _FLAGS:
            expanded.append(token)
            index += 1
            continue
        values = []
        index += 1
        # The first value is the flag's own, whatever it looks like; later ones end at the next flag.
        while index < len(args) and (not values or not args[index].startswith("-")):
            values.append(args[index])
            index += 1
        if token == "--set":  # noqa: S105 (a flag, not a secret)
            for value in values or [""]:
                expanded.extend(["--set", value])
        else:
            expanded.extend([token, SEPARATOR.join(values)])
    return expanded


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _steps(path: str) -> list[Any]:
    """`a.b[0].c` into ["a", "b", 0, "c"]; `[name=blue]` becomes ("name", "blue")."""
    steps: list[Any] = []
    position = 0
    for match in _STEP.finditer(path):
        if match.start() != position and path[position : match.start()] != ".":
            raise GenericUpdateError(
                f"{path!r} is not a property path such as a.b, list[0].x or list[name=x]."
            )
        position = match.end()
        key, bracket = match.groups()
        if key is not None:
            steps.append(key)
        elif bracket.lstrip("-").isdigit():
            steps.append(int(bracket))
        elif "=" in bracket:
            field, _, wanted = bracket.partition("=")
            steps.append((field, wanted))
        else:
            raise GenericUpdateError(
                f"{path!r}: [{bracket}] must be an index such as [0] or a match such as [name=x]."
            )
    if not steps or position != len(path):
        raise GenericUpdateError(f"{path!r} is not a property path such as a.b, list[0].x or list[name=x].")
    return steps


def _shown(steps: list[Any]) -> str:
    text = ""
    for step in steps:
        if isinstance(step, int):
            text += f"[{step}]"
        elif isinstance(step, tuple):
            text += f"[{step[0]}={step[1]}]"
        else:
            text += f".{step}" if text else step
    return text or "the document"


def _child(parent: Any, step: Any, walked: list[Any], create: bool) -> Any:
    """The value under `step`; with `create`, a missing mapping is made on the way."""
    where = _shown(walked)
    if isinstance(step, str):
        if not isinstance(parent, dict):
            raise GenericUpdateError(f"{where} is not a mapping, so it has no {step!r}.")
        if step not in parent:
            if not create:
                raise GenericUpdateError(
                    f"{where} has no {step!r} (it has: {', '.join(map(str, parent)) or 'nothing'})."
                )
            parent[step] = {}
        return parent[step]
    if not isinstance(parent, list):
        raise GenericUpdateError(f"{where} is not a list, so it cannot be indexed.")
    return parent[_index(parent, step, walked)]


def _index(items: list, step: Any, walked: list[Any]) -> int:
    where = _shown(walked)
    if isinstance(step, int):
        if not -len(items) <= step < len(items):
            raise GenericUpdateError(f"{where} has {len(items)} item(s); index {step} is out of range.")
        return step
    field, wanted = step
    for position, item in enumerate(items):
        if isinstance(item, dict) and str(item.get(field)) == wanted:
            return position
    raise GenericUpdateError(f"{where} has no item whose {field} is {wanted!r}.")


def _parent(document: dict, steps: list[Any], create: bool) -> Any:
    node: Any = document
    for number, step in enumerate(steps[:-1]):
        node = _child(node, step, steps[:number], create)
    return node


def _split_assignment(text: str) -> tuple[str, str, str]:
    """`path=value` split at the first '=' outside brackets (`list[name=x].y=1`)."""
    depth = 0
    for position, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "=" and depth == 0:
            return text[:position], "=", text[position + 1 :]
    return text, "", ""


def _set(document: dict, text: str) -> None:
    path, sep, raw = _split_assignment(text)
    if not sep or not path:
        raise GenericUpdateError(
            f"--set {text!r} is not of the form path=value, for example instance_count=2."
        )
    steps = _steps(path)
    parent = _parent(document, steps, create=True)
    last = steps[-1]
    if isinstance(last, str):
        if not isinstance(parent, dict):
            raise GenericUpdateError(f"{_shown(steps[:-1])} is not a mapping, so it has no {last!r}.")
        parent[last] = _value(raw)
    else:
        if not isinstance(parent, list):
            raise GenericUpdateError(f"{_shown(steps[:-1])} is not a list, so it cannot be indexed.")
        parent[_index(parent, last, steps[:-1])] = _value(raw)


def _add(document: dict, token: str) -> None:
    path, *values = token.split(SEPARATOR)
    if not path or not values:
        raise GenericUpdateError(
            "--add takes a list's path and what to add, e.g. --add tags_list x or --add items name=a size=2."
        )
    steps = _steps(path)
    parent = _parent(document, steps, create=True)
    last = steps[-1]
    if isinstance(last, str) and isinstance(parent, dict) and last not in parent:
        parent[last] = []
    target = _child(parent, last, steps[:-1], create=False)
    if not isinstance(target, list):
        raise GenericUpdateError(f"--add: {_shown(steps)} is not a list; use --set to change it.")
    # As az does: key=value words make one object together; other words are items of their own.
    entry: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if sep and key and not value.lstrip().startswith(("{", "[", '"')):
            entry[key] = _value(raw)
            continue
        if entry:
            target.append(entry)
            entry = {}
        target.append(_value(value))
    if entry:
        target.append(entry)


def _remove(document: dict, token: str) -> None:
    path, *rest = token.split(SEPARATOR)
    if not path or len(rest) > 1:
        raise GenericUpdateError(
            "--remove takes a property's path, or a list's path and an index: --remove tags.a, "
            "--remove items 0."
        )
    steps = _steps(path) + ([_steps(f"[{rest[0]}]")[0]] if rest else [])
    parent = _parent(document, steps, create=False)
    last = steps[-1]
    if isinstance(last, str):
        if not isinstance(parent, dict) or last not in parent:
            raise GenericUpdateError(f"--remove: {_shown(steps)} does not exist.")
        del parent[last]
    else:
        if not isinstance(parent, list):
            raise GenericUpdateError(f"--remove: {_shown(steps[:-1])} is not a list.")
        del parent[_index(parent, last, steps[:-1])]


def apply(
    document: dict, sets: tuple[str, ...] = (), adds: tuple[str, ...] = (), removes: tuple[str, ...] = ()
) -> dict:
    """A copy of `document` with the arguments applied in az's order: --set, then --add, then --remove."""
    changed = copy.deepcopy(document)
    for text in sets:
        _set(changed, text)
    for token in adds:
        _add(changed, token)
    for token in removes:
        _remove(changed, token)
    return changed


def changes(before: dict, after: dict) -> dict:
    """The top-level fields whose values differ: what to PATCH; a removed field is sent as null."""
    found = {key: value for key, value in after.items() if before.get(key) != value or key not in before}
    found.update({key: None for key in before if key not in after})
    return found


def generic_update_options(command):
    """`--set`, `--add` and `--remove`, passed to the command as `sets`, `adds`, `removes`."""
    options = [
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="PATH=VALUE",
            help="Set a field before sending, as az does: --set instance_count=2, --set tags.stage=prod, "
            "--set list[0].x=y. Values are JSON when they parse as JSON.",
        ),
        click.option(
            "--add",
            "adds",
            multiple=True,
            metavar="PATH VALUE...",
            help="Append to a list field: --add list value, or --add list key=value key2=value2 "
            "(one object).",
        ),
        click.option(
            "--remove",
            "removes",
            multiple=True,
            metavar="PATH [INDEX]",
            help="Remove a field (--remove tags.stage) or a list's item (--remove list 0).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
