"""Refusing URLs that hold text no database stores, before any view looks anything up with them.

A NUL character (`%00`) or a lone surrogate in a path or a query string can name no model, endpoint or
filter value, and PostgreSQL refuses it in a query: unguarded, `/api/v1/models/%00/` would be a 500
there and a 404 on SQLite. Every request is checked here, so both databases answer the same 400, in the
API's error envelope under /api/ and as plain text for pages.
"""

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from studio.api.errors import envelope
from studio.api.parsers import unstorable


def url_problem(request: HttpRequest) -> str | None:
    """Why the request's path or query string cannot be used, or None."""
    problem = unstorable(request.path, "the URL path")
    for key, values in request.GET.lists():
        for text in (key, *values):
            problem = problem or unstorable(text, f"the query parameter {key!r}")
    return problem


class UnstorableURLMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        problem = url_problem(request)
        if problem is None:
            return self.get_response(request)
        if request.path.startswith("/api/"):
            return JsonResponse(envelope("invalid", problem), status=400)
        return HttpResponseBadRequest(problem, content_type="text/plain; charset=utf-8")
