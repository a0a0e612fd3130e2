"""The request a raw-mode scoring script receives and the response it may return.

They follow the shape of Azure ML's `AMLRequest` (a Flask request) and `AMLResponse`, so scripts written
for Azure work unchanged: `request.method`, `.headers`, `.args`, `.get_data()`, `.get_json()`, `.files`,
`.form`; `AMLResponse(message, status_code, response_headers, json_str)`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

import orjson

from serving.errors import BadInput


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive view of HTTP headers (the first value of a repeated header wins)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, str] = {}
        for name, value in items:
            self._items.setdefault(name.lower(), value)

    @classmethod
    def from_asgi(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        return cls((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._items.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class QueryArgs(Mapping[str, str]):
    """Query-string arguments: mapping access gives the first value, `getlist` gives all of them."""

    def __init__(self, query: str) -> None:
        self._pairs = parse_qsl(query, keep_blank_values=True)
        self._first: dict[str, str] = {}
        for key, value in self._pairs:
            self._first.setdefault(key, value)

    def getlist(self, key: str) -> list[str]:
        return [value for name, value in self._pairs if name == key]

    def __getitem__(self, key: str) -> str:
        return self._first[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)


class MultiDict(Mapping[str, Any]):
    """Form fields or files as Flask gives them to Azure's scripts: `[key]` and `get` give the first value,
    `getlist` every value sent under that name, in order."""

    def __init__(self, pairs: Iterable[tuple[str, Any]] = ()) -> None:
        self._pairs = list(pairs)
        self._first: dict[str, Any] = {}
        for key, value in self._pairs:
            self._first.setdefault(key, value)

    def getlist(self, key: str) -> list[Any]:
        return [value for name, value in self._pairs if name == key]

    def items(self, multi: bool = False):  # type: ignore[override]
        return list(self._pairs) if multi else list(self._first.items())

    def to_dict(self, flat: bool = True) -> dict[str, Any]:
        return dict(self._first) if flat else {key: self.getlist(key) for key in self._first}

    def __getitem__(self, key: str) -> Any:
        return self._first[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def __repr__(self) -> str:
        return f"MultiDict({self._pairs!r})"


class UploadedFile:
    """One file of a multipart/form-data request, shaped like werkzeug's FileStorage (what Azure's scripts
    get): a readable, seekable file object (so `PIL.Image.open(request.files["image"])` works) with
    `filename`, `name`, `content_type`, `mimetype` and `save()`."""

    def __init__(self, name: str, filename: str, content_type: str, data: bytes) -> None:
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.data = data
        self.stream = io.BytesIO(data)

    @property
    def mimetype(self) -> str:
        return self.content_type.split(";", 1)[0].strip().lower()

    @property
    def content_length(self) -> int:
        return len(self.data)

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)

    def save(self, destination: Any, buffer_size: int = 16384) -> None:
        """Write the file to a path or to an open binary file."""
        if hasattr(destination, "write"):
            destination.write(self.data)
            return
        with open(destination, "wb") as out:
            out.write(self.data)

    def __getattr__(self, name: str) -> Any:
        # seek, tell, readline, readinto, ...: the stream's own, as FileStorage does.
        if name == "stream":
            raise AttributeError(name)
        return getattr(self.stream, name)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.stream)

    def __bool__(self) -> bool:
        return bool(self.filename)

    def __repr__(self) -> str:
        return f"<UploadedFile {self.filename!r} ({self.content_type})>"


@dataclass
class ScoreRequest:
    """An HTTP request to /score, as a raw-mode `run(request)` sees it (Azure's AMLRequest)."""

    method: str
    path: str
    query_string: str
    headers: Headers
    data: bytes
    _form: tuple[MultiDict, MultiDict] | None = field(default=None, repr=False)

    @property
    def args(self) -> QueryArgs:
        return QueryArgs(self.query_string)

    @property
    def full_path(self) -> str:
        return f"{self.path}?{self.query_string}"

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def mimetype(self) -> str:
        return self.content_type.split(";", 1)[0].strip().lower()

    def get_data(self, as_text: bool = False) -> bytes | str:
        return self.data.decode("utf-8", errors="replace") if as_text else self.data

    @property
    def url(self) -> str:
        host = self.headers.get("host", "localhost")
        return f"http://{host}{self.path}" + (f"?{self.query_string}" if self.query_string else "")

    @property
    def host(self) -> str:
        return self.headers.get("host", "")

    @property
    def content_length(self) -> int:
        return len(self.data)

    @property
    def is_json(self) -> bool:
        return self.mimetype == "application/json" or self.mimetype.endswith("+json")

    @property
    def stream(self) -> io.BytesIO:
        return io.BytesIO(self.data)

    @property
    def values(self) -> MultiDict:
        """Query arguments and form fields together, as Flask's `request.values`."""
        return MultiDict([*self.args.items(), *self.form.items(multi=True)])

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """The body parsed as JSON (whatever its content type, as with Flask's `force=True`); a body that
        is not JSON raises BadInput (400) unless `silent`."""
        try:
            return orjson.loads(self.data)
        except orjson.JSONDecodeError as exc:
            if silent:
                return None
            raise BadInput(f"The request body is not valid JSON: {exc}") from None

    @property
    def json(self) -> Any:
        return self.get_json(silent=True)

    @property
    def form(self) -> MultiDict:
        """Form fields (urlencoded, or multipart parts without a file name)."""
        return self._multipart()[0]

    @property
    def files(self) -> MultiDict:
        """Uploaded files (multipart parts with a file name); `getlist` for a name sent several times."""
        return self._multipart()[1]

    def _multipart(self) -> tuple[MultiDict, MultiDict]:
        if self._form is None:
            self._form = _parse_form(self.content_type, self.data)
        return self._form


def _parse_form(content_type: str, body: bytes) -> tuple[MultiDict, MultiDict]:
    mimetype = content_type.split(";", 1)[0].strip().lower()
    if mimetype == "application/x-www-form-urlencoded":
        return MultiDict(
            parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        ), MultiDict()
    if mimetype != "multipart/form-data":
        return MultiDict(), MultiDict()
    if "boundary=" not in content_type:
        raise BadInput("A multipart/form-data request needs a boundary in its Content-Type header.")
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    form: list[tuple[str, str]] = []
    files: list[tuple[str, UploadedFile]] = []
    if not message.is_multipart():
        return MultiDict(), MultiDict()
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is None:
            form.append((name, payload.decode(part.get_content_charset() or "utf-8", errors="replace")))
        else:
            files.append((name, UploadedFile(name, filename, part.get_content_type(), payload)))
    return MultiDict(form), MultiDict(files)


class AMLResponse:
    """A response a scoring script returns to choose the status, headers and body itself.

    `message` is sent as is when it is `bytes` or `str`, or serialised to JSON when `json_str` is true
    (or when it is neither bytes nor str).
    """

    def __init__(
        self,
        message: Any = b"",
        status_code: int = 200,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        *,
        content_type: str | None = None,
    ) -> None:
        self.status_code = int(status_code)
        self.headers: dict[str, str] = dict(response_headers or {})
        if json_str or not isinstance(message, bytes | str):
            self.data = orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)
            default_type = "application/json"
        elif isinstance(message, str):
            self.data = message.encode("utf-8")
            default_type = "text/plain; charset=utf-8"
        else:
            self.data = message
            default_type = "application/octet-stream"
        if content_type is not None:
            self.headers["Content-Type"] = content_type
        elif not any(name.lower() == "content-type" for name in self.headers):
            self.headers["Content-Type"] = default_type

    @property
    def status(self) -> int:
        return self.status_code
