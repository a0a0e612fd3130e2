"""Errors that become HTTP answers. Each carries the status and a message safe to show a caller."""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """Base class: an answer other than 200, with a JSON body `{"error": {"code", "message"}}`."""

    status: int = 500
    code: str = "InternalServerError"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class BadInput(ServingError):
    """The request body does not parse or does not fit the model's schema."""

    status = 400
    code = "BadRequest"


class ModelFailed(ServingError):
    """User code or the model raised; the message is generic and the traceback goes to the log only."""

    status = 500
    code = "ModelError"


class NotReady(ServingError):
    status = 503
    code = "ServiceUnavailable"


class TooLarge(ServingError):
    status = 413
    code = "PayloadTooLarge"


class TimedOut(ServingError):
    status = 408
    code = "RequestTimeout"


class LoadError(Exception):
    """The model or scoring script cannot be loaded; the message says what is wrong and how to fix it."""
