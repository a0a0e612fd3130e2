"""Where the CLI finds its server and token: environment variables first, then the file `login` writes."""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from studio.cli.errors import CliError

NOT_SIGNED_IN = (
    "Studio does not know which server to use: run `studio login --url URL --token TOKEN`, "
    "or set STUDIO_URL and STUDIO_TOKEN."
)


@dataclass(frozen=True)
class Config:
    url: str
    token: str


def config_path() -> Path:
    """`$STUDIO_CONFIG`, else `~/.config/studio/config.json` (honouring `$XDG_CONFIG_HOME`)."""
    explicit = os.environ.get("STUDIO_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "studio" / "config.json"


def normalize_url(url: str) -> str:
    """The server's base URL without a trailing slash; refuses anything but http(s)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"The Studio URL {url!r} must start with http:// or https://.")
    return url


def _read_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise CliError(
            f"Cannot read the configuration file {path}: {exc}. Run `studio login` again."
        ) from None
    if not isinstance(data, dict):
        raise CliError(f"The configuration file {path} is not a JSON object. Run `studio login` again.")
    return data


def load_config() -> Config:
    """The URL and token to use; STUDIO_URL and STUDIO_TOKEN override the configuration file."""
    stored = _read_file(config_path())
    url = os.environ.get("STUDIO_URL") or stored.get("url")
    token = os.environ.get("STUDIO_TOKEN") or stored.get("token")
    if not url or not token:
        raise CliError(NOT_SIGNED_IN)
    return Config(url=normalize_url(url), token=token)


def save_config(config: Config) -> Path:
    """Write the configuration readable by its owner only (0600), replacing any earlier one atomically."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp creates the file 0600 before any secret is written into it, so it is never world-readable.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump({"url": config.url, "token": config.token}, out, indent=2)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
