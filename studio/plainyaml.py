"""YAML from other people, read into the values a JSON document could hold.

Request bodies and conda files arrive as YAML written by hand or for `az ml`. What comes out is only
mappings with string keys, lists, strings, finite numbers, booleans and null, so every later step
(validation, JSON fields, the database, the JSON responses) sees the same values whichever format was
sent; anything else is refused with a message that names the line or the value.

Anchors and aliases are refused: an alias repeats a node without repeating its bytes, so a few hundred
bytes can stand for megabytes of values once stored or rendered, and no Azure ML spec needs them. Dates
stay the text written (`since: 2024-01-01` is the string "2024-01-01"), as they would in JSON.
"""

import datetime
import json
import math
from typing import Any

import yaml

MAX_DEPTH = 64
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_KINDS = {bytes: "!!binary value", set: "!!set", datetime.date: "date", datetime.datetime: "timestamp"}


class YAMLRefused(ValueError):
    """The text is not YAML Studio accepts: `problem` says what to change, `line` (from 1) where."""

    def __init__(self, problem: str, line: int | None = None, column: int | None = None):
        self.problem, self.line, self.column = problem, line, column
        where = f" (line {line}, column {column})" if line else ""
        super().__init__(f"The YAML is not accepted{where}: {problem}.")


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader without anchors, aliases or implicit dates."""

    yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases are not supported; write each value out in full",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _key(key: Any, path: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool | int | type(None)) or (isinstance(key, float) and math.isfinite(key)):
        return json.dumps(key)  # what a JSON document would have said: 1, true, null
    raise YAMLRefused(f"the key {key!r} at {path or 'the top'} must be text")


def _plain(value: Any, path: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise YAMLRefused(f"it nests more than {MAX_DEPTH} levels deep at {path}")
    if isinstance(value, dict):
        plain = {}
        for key, item in value.items():
            name = _key(key, path)
            plain[name] = _plain(item, f"{path}.{name}" if path else name, depth + 1)
        return plain
    if isinstance(value, list):
        return [_plain(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise YAMLRefused(f"the value at {path or 'the top'} is {value}; use a finite number")
    if value is None or isinstance(value, str | bool | int | float):
        return value
    kind = _KINDS.get(type(value), type(value).__name__)
    raise YAMLRefused(
        f"the value at {path or 'the top'} is a {kind}; use text, a number, true/false, null, a list or "
        "a mapping"
    )


def load(text: str) -> Any:
    """The one YAML document in `text` as plain JSON values, or YAMLRefused saying what is wrong."""
    loader = None
    try:
        loader = _PlainLoader(text)  # reads the text at once: refuses control characters here
        document = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "it cannot be parsed"
        if mark is None:
            raise YAMLRefused(problem) from None
        raise YAMLRefused(problem, mark.line + 1, mark.column + 1) from None
    except RecursionError:
        raise YAMLRefused("it nests too deeply to be read") from None
    except ValueError:  # an integer with more digits than Python converts, `!!int abc`, ...
        raise YAMLRefused(
            "it holds a value that cannot be converted: a number with too many digits, or a value that "
            "does not fit its !!tag"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return _plain(document, "", 0)
