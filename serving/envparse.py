"""Strict parsing of numbers from flags and the environment, shared by the model server and the gateway."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it and says what to do."""


def whole_number(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number.") from None
    if number < minimum:
        raise ConfigError(f"{name}={number} is too small: it must be at least {minimum}.")
    return number


def number(name: str, value: str, minimum: float) -> float:
    try:
        parsed = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number.") from None
    if parsed < minimum:
        raise ConfigError(f"{name}={parsed} is too small: it must be at least {minimum}.")
    return parsed


def boolean(name: str, value: str) -> bool:
    """`true`/`false` (also 1/0, yes/no, on/off, any case), as the control plane reads its booleans."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean: use true or false.")
