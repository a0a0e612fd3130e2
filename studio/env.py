"""Strict readers for configuration from the environment.

Every setting is read once, at start; a value that does not parse stops the start with a message that
names the variable and says what it expected.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value is not None else None


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use true or false.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is too small: it must be at least {minimum}.")
    return number


def env_list(name: str, default: list[str], *, choices: tuple[str, ...] | None = None) -> list[str]:
    """A comma-separated list; with `choices`, every item must be one of them."""
    value = _raw(name)
    if value is None or value == "":
        return list(default)
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if choices is not None and item not in choices]
    if unknown:
        raise ImproperlyConfigured(
            f"{name}={value!r}: {', '.join(unknown)} is not one of: {', '.join(choices or ())}."
        )
    return items


def env_choice(name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
    """One of `choices`, or `default` when unset."""
    value = _raw(name)
    if value is None or value == "":
        return default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}.")
    return value


def env_secret(name: str) -> str | None:
    """The secret in NAME, or in the file that NAME_FILE points to (for Docker and Kubernetes secrets)."""
    value = _raw(name)
    if value:
        return value
    path = _raw(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc.strerror}.") from None


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    value = env_str(name, default)
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ImproperlyConfigured(f"{name}={value!r} is not a supported URL: it must start with {allowed}.")
    return value


def env_urls(name: str, *, schemes: tuple[str, ...]) -> list[str]:
    """A comma-separated list of URLs, each starting with one of `schemes`; empty when unset."""
    urls = env_list(name, [])
    allowed = ", ".join(f"{s}://" for s in schemes)
    for url in urls:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in schemes or not url.split("://", 1)[1]:
            raise ImproperlyConfigured(
                f"{name}: {url!r} is not a supported URL: it must start with {allowed}."
            )
    return urls
