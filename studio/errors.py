"""Domain errors: what services raise when a rule refuses a change.

Services speak neither HTTP nor HTML. A refusal carries its messages by the input they concern (None for
the request as a whole) and the HTTP status that fits it; the API's exception handler turns it into the
JSON error envelope, and pages put the messages on the form fields they concern.
"""


class Refused(Exception):
    """A change refused by a rule; the messages say what to fix."""

    status = 400
    code = "invalid"

    def __init__(self, errors: str | dict[str | None, str | list[str]], field: str | None = None):
        if isinstance(errors, str):
            errors = {field: errors}
        self.errors: dict[str | None, list[str]] = {
            key: [value] if isinstance(value, str) else list(value) for key, value in errors.items()
        }
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The refusal as one text, each message prefixed by the input it concerns."""
        parts = []
        for key, texts in self.errors.items():
            text = " ".join(texts)
            parts.append(text if key is None else f"{key}: {text}")
        return " ".join(parts)


class Invalid(Refused):
    """The request itself is wrong (400)."""


class StateConflict(Refused):
    """The request is fine but the current state does not allow it (409)."""

    status = 409
    code = "conflict"


class NotFound(Refused):
    status = 404
    code = "not_found"
