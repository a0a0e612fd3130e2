"""The JSON error envelope every API error uses: {"error": {"code", "message", "details"}}."""

import logging

from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from studio.errors import Refused
from studio.notfound import describe

logger = logging.getLogger(__name__)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The upload is too large."


def body_too_large() -> PayloadTooLarge:
    """The 413 for a body (or a form's fields) over DATA_UPLOAD_MAX_MEMORY_SIZE."""
    return PayloadTooLarge(
        f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes; send a smaller "
        "body (upload files as multipart file parts) or ask an admin to raise STUDIO_MAX_BODY_BYTES."
    )


def _django_refusal(exc: Exception) -> exceptions.APIException | None:
    """Django's own limits on a request, raised while DRF parses it, as the API answers them."""
    if isinstance(exc, RequestDataTooBig):
        return body_too_large()
    if isinstance(exc, TooManyFieldsSent):
        return exceptions.ParseError(
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields; send fewer."
        )
    if isinstance(exc, TooManyFilesSent):
        return exceptions.ParseError(
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files; send the folder as "
            "one .zip or .tar.gz archive, or ask an admin to raise STUDIO_MAX_ARCHIVE_FILES."
        )
    return None


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "service_unavailable"
    default_detail = "A service Studio needs does not answer."


def _message(detail) -> str:
    if isinstance(detail, list):
        return " ".join(_message(item) for item in detail)
    if isinstance(detail, dict):
        parts = []
        for field, value in detail.items():
            text = _message(value)
            parts.append(text if field in ("non_field_errors", "detail") else f"{field}: {text}")
        return " ".join(parts)
    return str(detail)


def envelope(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def exception_handler(exc, context):
    if isinstance(exc, Refused):
        details = {key or "non_field_errors": texts for key, texts in exc.errors.items()}
        return Response(envelope(exc.code, exc.message, details), status=exc.status)
    exc = _django_refusal(exc) or exc
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(describe(str(exc), context.get("kwargs")) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error in %s", context.get("view"), exc_info=exc)
        return Response(
            envelope("server_error", "Studio hit an unexpected error; it has been logged."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    detail = exc.detail if isinstance(exc, exceptions.APIException) else response.data
    code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    if not isinstance(code, str):
        code = (
            "invalid"
            if isinstance(exc, exceptions.ValidationError)
            else getattr(exc, "default_code", "error")
        )
    details = detail if isinstance(detail, (dict, list)) else None
    response.data = envelope(code, _message(detail), details)
    return response


def json_error_view(status_code: int, code: str, message: str):
    """Django-level handlers (404/500 outside DRF views) for API paths answer in the envelope too."""

    def view(request, exception=None):
        return JsonResponse(envelope(code, message), status=status_code)

    return view
