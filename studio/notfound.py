"""What a 404 says: the thing that was not found, in the words of the address that asked for it.

`get_object_or_404` (Django's and the REST framework's) says "No OnlineDeployment matches the given
query.", which names a class, not what the person asked for. Pages and API views keep using it; this module
rewords that one message, from the model it names and the arguments of the URL that was resolved: "Endpoint
'fraud' has no deployment named 'blue'." Any other message (already in words) passes through unchanged.
"""

import re

from django.apps import apps
from django.http import HttpRequest, HttpResponseNotFound
from django.template import loader
from django.views.decorators.csrf import requires_csrf_token

GENERIC = re.compile(r"^No (?P<model>\w+) matches the given query\.?$")

# Per model, the phrases tried in order: the first whose URL arguments are all there is said. The API's
# routes name arguments differently from the pages' (endpoint_name, model_name), hence several.
PHRASES = {
    "RegisteredModel": ["There is no model named {model_name!r}.", "There is no model named {name!r}."],
    "ModelVersion": [
        "Model {model_name!r} has no version {version!r}.",
        "Model {name!r} has no version {version!r}.",
    ],
    "OnlineEndpoint": ["There is no online endpoint named {name!r}."],
    "OnlineDeployment": [
        "Endpoint {endpoint_name!r} has no deployment named {name!r}.",
        "Endpoint {name!r} has no deployment named {deployment!r}.",
    ],
    "Job": ["There is no job {pk}."],
    "AlertRule": ["Endpoint {name!r} has no alert rule {pk}."],
    "AccessToken": ["You have no access token {pk}."],
    "WebhookSubscription": ["There is no webhook {pk!r}."],
    "Environment": ["There is no environment named {env_name!r}.", "There is no environment named {name!r}."],
}


def _verbose_name(object_name: str) -> str:
    for model in apps.get_models():
        if model.__name__ == object_name:
            return str(model._meta.verbose_name)
    return object_name


def describe(message: str, arguments: dict | None) -> str:
    """The message for a 404, in words when it is the generic one and the URL says what was asked for."""
    match = GENERIC.match(message or "")
    if not match:
        return message
    model = match["model"]
    arguments = arguments or {}
    for phrase in PHRASES.get(model, []):
        try:
            return phrase.format(**arguments)
        except (KeyError, IndexError):
            continue
    shown = ", ".join(f"{key} {value!r}" for key, value in arguments.items())
    return f"There is no {_verbose_name(model)}{' with ' + shown if shown else ' at this address'}."


@requires_csrf_token
def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponseNotFound:
    """The 404 page (templates/404.html), saying what was not found where the URL tells."""
    message = ""
    if exception is not None and exception.__class__.__name__ != "Resolver404":
        text = exception.args[0] if exception.args and isinstance(exception.args[0], str) else ""
        match = getattr(request, "resolver_match", None)
        message = describe(text, match.kwargs if match else {})
    body = loader.get_template("404.html").render({"message": message, "request_path": request.path}, request)
    return HttpResponseNotFound(body)
