"""The one error type commands raise: click prints its message on stderr and exits non-zero."""

import click


class CliError(click.ClickException):
    """A failure the user can act on; the message says what happened and what to do."""

    exit_code = 1


class ApiError(CliError):
    """The server refused a request; the message is the server's own (`error.message`)."""

    def __init__(self, message: str, status: int, code: str | None = None, details=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details
