"""The HTTP client: Bearer auth, the server's error envelope turned into messages, streamed transfers.

Commands import this module lazily (see `options.pass_client`) because httpx alone takes a third of a
second to import, and `studio --help` should not pay for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from studio.cli.config import Config, load_config
from studio.cli.errors import ApiError, CliError
from studio.cli.progress import transfer

API = "/api/v1"
PAGE_SIZE = 500
# Uploads and downloads of large models can pause for a long time while the server unpacks or zips.
TIMEOUT = httpx.Timeout(30.0, read=600.0, write=600.0)


def _error_message(response: httpx.Response) -> ApiError:
    """The server's `error.message`, or a description of a response that is not Studio's envelope."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return ApiError(error["message"], response.status_code, error.get("code"), error.get("details"))
    # A proxy's HTML error page would only clutter the terminal; short plain text may help.
    plain = response.headers.get("Content-Type", "").startswith("text/plain")
    text = response.text.strip()[:200] if plain else ""
    reason = f"{response.status_code} {response.reason_phrase}".strip()
    hint = f": {text}" if text else ""
    return ApiError(
        f"The server answered {reason}{hint}. Is {response.url} a Studio server?", response.status_code
    )


class _CountingStream(httpx.SyncByteStream):
    """Passes a request body through chunk by chunk, reporting each chunk's size as it is sent."""

    def __init__(self, inner: httpx.SyncByteStream, advance: Callable[[int], None]):
        self.inner = inner
        self.advance = advance

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            yield chunk
            self.advance(len(chunk))


class Client:
    """One server, one token. Every method raises `CliError` with a message the user can act on."""

    def __init__(self, config: Config | None = None, transport: httpx.BaseTransport | None = None):
        # Both are made on first use, so a command checks its own arguments before "not signed in".
        self._config = config
        self._transport = transport
        self._http: httpx.Client | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config()
        return self._config

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.config.url,
                headers={"Authorization": f"Bearer {self.config.token}", "Accept": "application/json"},
                timeout=TIMEOUT,
                transport=self._transport,
                follow_redirects=False,
            )
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Network failures become one clear message naming the server and what to check."""
        try:
            yield
        except httpx.TimeoutException:
            raise CliError(f"Studio at {self.config.url} did not answer in time. Try again later.") from None
        except httpx.TransportError as exc:
            raise CliError(
                f"Cannot reach Studio at {self.config.url} ({exc or type(exc).__name__}). Is the server "
                "running (`studio up`)? Check STUDIO_URL or run `studio login --url URL --token TOKEN`."
            ) from None

    def _checked(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        if response.is_redirect:
            raise ApiError(
                f"The server redirected to {response.headers.get('location')}; "
                "use that address as the Studio URL.",
                response.status_code,
            )
        raise _error_message(response)

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request under /api/v1 and return the answer, once it is known not to be an error."""
        with self._reaching():
            return self._checked(self.http.request(method, API + path, **kwargs))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request under /api/v1 and return its JSON body (None for an empty answer)."""
        response = self.send(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"The server's answer to {method} {path} is not JSON.") from None

    def get(self, path: str, params: Any = None) -> Any:
        return self.request("GET", path, params=params)

    def collect(self, path: str, params: list[tuple[str, str]] | None = None) -> list[dict]:
        """Every item of a paginated list, page after page."""
        items: list[dict] = []
        page = 1
        while True:
            query = [*(params or []), ("page_size", str(PAGE_SIZE)), ("page", str(page))]
            body = self.get(path, params=query)
            if isinstance(body, list):  # an unpaginated list
                return body
            items.extend(body.get("results", []))
            if not body.get("next"):
                return items
            page += 1

    def upload(self, path: str, fields: dict[str, str], field: str, source: Path, label: str) -> Any:
        """POST a multipart form whose file part is streamed from disk, with a progress bar."""
        with source.open("rb") as handle, self._reaching():
            files = {field: (source.name, handle, "application/octet-stream")}
            request = self.http.build_request("POST", API + path, data=fields, files=files)
            total = int(request.headers.get("Content-Length", 0)) or None
            with transfer(label, total) as advance:
                # httpx reads file parts in 64 KiB chunks; counting them as they leave keeps the bar true
                # without ever holding the file in memory.
                request.stream = _CountingStream(request.stream, advance)
                response = self.http.send(request)
            response = self._checked(response)
        return response.json()

    def download(self, path: str, target: BinaryIO, label: str) -> None:
        """Stream a GET's body into `target` with a progress bar."""
        with self._reaching(), self.http.stream("GET", API + path) as response:
            if not response.is_success:
                response.read()
                self._checked(response)
            total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
            with transfer(label, total) as advance:
                for chunk in response.iter_bytes(1024 * 1024):
                    target.write(chunk)
                    advance(len(chunk))
