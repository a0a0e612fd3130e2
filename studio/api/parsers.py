"""The request body parsers of the REST API: JSON, YAML and URL-encoded forms, each bounded.

A body is read only up to `DATA_UPLOAD_MAX_MEMORY_SIZE` bytes (the `STUDIO_MAX_BODY_BYTES` setting), the
same bound Django puts on form fields: a larger body is answered 413 before it is parsed, whatever its
Content-Length claims. Multipart bodies keep Django's parser, whose file parts are bounded by
`STUDIO_MAX_UPLOAD_BYTES` as they stream in and whose other fields by the same body limit. Parse errors
are 400s that say what is wrong; nothing a sender writes reaches a view as anything but JSON values.
"""

import io
import re

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from studio import plainyaml

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value, path: str = "", depth: int = 0) -> str | None:
    """What in `value` (JSON values) no database column stores, or None if nothing is.

    PostgreSQL refuses NUL characters in text and JSON, no encoder takes a lone UTF-16 surrogate (JSON's
    "\\ud800"), and nesting past MAX_DEPTH levels is no spec Studio reads but can exhaust the stack of
    whatever stores or renders it. None of these belongs in a name, a tag or a spec, so they are refused
    where they arrive.
    """
    if depth > plainyaml.MAX_DEPTH:
        return f"The value at {path} nests more than {plainyaml.MAX_DEPTH} levels deep."
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found is None:
            return None
        what = "a NUL character" if found.group() == "\x00" else "a lone surrogate"
        return f"The text at {path or 'the top'} holds {what} (\\u{ord(found.group()):04x}); remove it."
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            problem = unstorable(key, f"a key of {path}" if path else "a top-level key")
            problem = problem or unstorable(item, where, depth + 1)
            if problem:
                return problem
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = unstorable(item, f"{path}[{index}]", depth + 1)
            if problem:
                return problem
    return None


def _storable(data):
    problem = unstorable(data)
    if problem:
        raise ParseError(problem)
    return data


def _declared_length(parser_context) -> int:
    request = (parser_context or {}).get("request")
    meta = getattr(request, "META", {})
    try:
        return int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def read_body(stream, parser_context) -> bytes:
    """The whole body, or a 413 as soon as it is known to pass the body limit."""
    # Imported here: errors imports DRF's views, which read the settings that name this module.
    from studio.api.errors import body_too_large

    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None:
        return stream.read()
    if _declared_length(parser_context) > limit:
        raise body_too_large()
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise body_too_large()
    return body


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser on a bounded body; nesting too deep for Python is a 400, not a crash."""

    def parse(self, stream, media_type=None, parser_context=None):
        body = read_body(stream, parser_context)
        try:
            return _storable(super().parse(io.BytesIO(body), media_type, parser_context))
        except RecursionError:
            raise ParseError("The JSON body nests too deeply to be read.") from None


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        return super().parse(io.BytesIO(read_body(stream, parser_context)), media_type, parser_context)


class YAMLParser(parsers.BaseParser):
    """Request bodies in YAML, so a file written for `az ml` can be sent as it is."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None):
        body = read_body(stream, parser_context)
        try:
            data = plainyaml.load(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise ParseError("The YAML body is not UTF-8 text.") from None
        except plainyaml.YAMLRefused as exc:
            raise ParseError(str(exc)) from None
        if not isinstance(data, dict):
            raise ParseError("The YAML body must be a mapping of fields.")
        return _storable(data)


# Multipart needs no wrapper: Django's own parser enforces the limits (see the module docstring).
MultiPartParser = parsers.MultiPartParser
