"""A walk over every page of the control plane, in headless Chromium, on a phone and on a wide screen.

The pages are found in the URL conf, not listed by hand: every named route whose view answers GET is
visited with its arguments filled from the demo team (studio/demo.py), so a page added later is walked
without anyone remembering to add it. Routes that are not pages are skipped, each for a stated reason:
form actions (no GET), downloads and machine endpoints. On each page, at 390 px and at 1440 px: the
answer is 200, nothing is wider than the window, the console shows no error and every static asset loads.
"""

import re
import time
from dataclasses import dataclass

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from studio import demo as demo_team
from studio.testkit import PASSWORD

pytestmark = pytest.mark.browser

WIDTHS = (390, 1440)

# Routes that answer GET but are not pages a person reads, and why they are not walked.
NOT_PAGES = {
    "monitoring:onlineendpoint_collected": "a download of collected payloads (JSON lines), not a page",
    "admin:login": "the console's sign-in form; a signed-in Admin is sent on to the console's index",
    "admin:logout": "signs out (the console's logout is a POST form)",
    "admin:autocomplete": "JSON for the console's autocomplete widgets",
    "admin:jsi18n": "the console's JavaScript catalog",
    "admin:view_on_site": "a redirect to an object's own page",
    "prometheus-metrics": "Prometheus text for scrapers",
    "api-schema": "the OpenAPI document (YAML)",
}
# Pages that need a query to say what they show.
QUERIES = {"endpoints:onlineendpoint_request": "?request_id=3f2a9c1e-0000-4000-8000-000000000001"}
# Whole trees of machine routes: the REST API answers JSON, not pages.
NOT_PAGE_PREFIXES = {
    "api/v1/": "the REST API answers JSON (its docs page, /api/docs/, is walked)",
    "internal/": "the gateways' side of the control plane, for callers holding the shared secret",
}


@dataclass(frozen=True)
class Route:
    name: str  # namespaced URL name
    pattern: str  # the route as the URL conf spells it
    view: object  # the callback


def named_routes() -> list[Route]:
    """Every named route of the URL conf, with its namespace."""
    found = []

    def walk(patterns, prefix: str, namespace: str | None) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                inner = entry.namespace
                walk(
                    entry.url_patterns,
                    prefix + str(entry.pattern),
                    f"{namespace}:{inner}" if namespace and inner else inner or namespace,
                )
            elif isinstance(entry, URLPattern) and entry.name:
                name = f"{namespace}:{entry.name}" if namespace else entry.name
                found.append(Route(name, prefix + str(entry.pattern), entry.callback))

    walk(get_resolver().url_patterns, "", None)
    return found


def answers_get(view) -> bool:
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return True  # a function view (the console's): it says for itself
    return "get" in view_class.http_method_names and hasattr(view_class, "get")


def arguments(route: Route, team: demo_team.Demo) -> dict:
    """The route's URL arguments, taken from the demo team; fails naming any argument it cannot fill."""
    names = re.findall(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>", route.pattern)
    names = [a or b for a, b in names]
    endpoint, (blue, _green) = team.endpoint, team.deployments
    model_name, version = team.versions[1].model.name, team.versions[1].version
    values = {}
    data_route = route.name.startswith("registry:data")
    batch_route = route.name.startswith("endpoints:batch")
    for name in names:
        if name == "name" and batch_route:
            values[name] = team.batch_job.endpoint_name
        elif name == "deployment" and batch_route:
            values[name] = team.batch_job.deployment_name
        elif name == "pk" and batch_route:
            values[name] = team.batch_job.pk
        elif name == "step" and batch_route:
            values[name] = "endpoint"
        elif name == "name" and data_route:
            values[name] = team.data[0].asset.name
        elif name == "version" and data_route:
            values[name] = team.data[0].version
        elif name == "name":
            values[name] = model_name if route.name.startswith("registry:") else endpoint.name
        elif name == "version":
            values[name] = str(version)
        elif name == "deployment":
            values[name] = blue.name
        elif name == "step":
            from endpoints.views import STEP_SLUGS

            values[name] = STEP_SLUGS[0]
        elif name == "pk" and route.name == "endpoints:job":
            values[name] = team.job.pk
        elif name == "pk" and route.name.startswith("monitoring:alertrule"):
            values[name] = team.alert.pk
        elif name == "pk" and route.name.startswith("studio:token"):
            values[name] = team.token.pk
        elif name == "app_label":
            values[name] = "studio"
        elif name in ("object_id", "id") and route.name.startswith("admin:"):
            values[name] = admin_object(route.name)
        else:
            raise AssertionError(
                f"{route.name} ({route.pattern}) takes {name!r}, which the walk cannot fill yet: teach "
                "arguments() where to find one in the demo team, or list the route in NOT_PAGES with why."
            )
    return values


def admin_object(url_name: str) -> str:
    """The primary key of a row for a console route such as admin:studio_accesstoken_change."""
    label = url_name.removeprefix("admin:")
    if label == "auth_user_password_change":
        app_label, model_name = "auth", "user"
    else:
        app_label, model_name = label.rsplit("_", 1)[0].split("_", 1)
    row = apps.get_model(app_label, model_name).objects.order_by("pk").first()
    assert row is not None, f"the demo team has no {app_label}.{model_name} for {url_name} to show"
    return str(row.pk)


def refused_by_console(url_name: str, team: demo_team.Demo) -> bool:
    """Whether the console refuses adding or deleting rows of the route's model to everyone (audit
    events and webhook deliveries are records, never written by hand)."""
    from django.contrib import admin
    from django.test import RequestFactory

    action = url_name.rsplit("_", 1)[-1]
    if not url_name.startswith("admin:") or action not in ("add", "delete"):
        return False
    app_label, model_name = url_name.removeprefix("admin:").rsplit("_", 1)[0].split("_", 1)
    model_admin = admin.site._registry[apps.get_model(app_label, model_name)]
    request = RequestFactory().get("/")
    request.user = team.admin
    if action == "add":
        return not model_admin.has_add_permission(request)
    return not model_admin.has_delete_permission(request)


def pages(team: demo_team.Demo) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(url name, path) of every page to walk, and the routes skipped with the reason for each."""
    walked, skipped = [], {}
    for route in named_routes():
        prefix = next((p for p in NOT_PAGE_PREFIXES if route.pattern.startswith(p)), None)
        if prefix:
            skipped[route.name] = NOT_PAGE_PREFIXES[prefix]
        elif route.name in NOT_PAGES:
            skipped[route.name] = NOT_PAGES[route.name]
        elif not answers_get(route.view):
            skipped[route.name] = "a form's action: it answers POST only"
        elif refused_by_console(route.name, team):
            skipped[route.name] = "the console offers no such change for this kind of row (append-only)"
        else:
            path = reverse(route.name, kwargs=arguments(route, team)) + QUERIES.get(route.name, "")
            walked.append((route.name, path))
    return walked, skipped


def seed_batch(team: demo_team.Demo):
    """A batch endpoint and deployment of the demo's MLflow model, and a job that failed part-way (its
    mini-batches written as rows: the walk runs no worker), for the batch pages to show."""
    from endpoints import batch_execution, batch_services
    from endpoints.models import BatchJob, MiniBatch

    endpoint = batch_services.create_endpoint({"name": "nightly-fraud"}, team.contributor)
    version = team.versions[1]
    deployment = batch_services.create_deployment(
        endpoint,
        {"name": "scorer", "model": f"azureml:{version.model.name}:{version.version}"},
        team.contributor,
    )
    job = BatchJob.objects.create(
        endpoint=endpoint,
        endpoint_name=endpoint.name,
        deployment=deployment,
        deployment_name=deployment.name,
        state="Failed",
        inputs={"type": "uri_folder", "path": "azureml:payments-2026-11:1"},
        spec=batch_execution.spec_of(deployment),
        mini_batches=2,
        mini_batches_succeeded=1,
        mini_batches_failed=1,
        items=12,
        items_succeeded=10,
        items_failed=2,
        rows=300,
        error="2 files failed, more than the error threshold of 0.",
    )
    files = [{"path": f"payments-{n:02d}.csv", "key": "k", "size": 100} for n in range(12)]
    MiniBatch.objects.create(job=job, index=0, files=files[:10], state="succeeded", attempts=1)
    MiniBatch.objects.create(
        job=job, index=1, files=files[10:], state="failed", attempts=4, error="KeyError: 'amount'"
    )
    return job


@pytest.fixture
def team(transactional_db, settings, tmp_path):
    settings.STUDIO_GATEWAY_SPOOL_DIR = tmp_path / "spool"
    team = demo_team.seed(PASSWORD, minutes_of_traffic=20)
    team.batch_job = seed_batch(team)
    return team


def test_every_page_fits_a_phone_and_a_wide_screen(live_server, team, browser_page):
    from playwright.sync_api import Error as PlaywrightError

    page = browser_page.page
    walked, skipped = pages(team)
    names = {name for name, _ in walked}
    # The walk found the pages people use most, by discovery rather than by a list.
    for expected in (
        "studio:dashboard",
        "registry:modelversion",
        "endpoints:onlineendpoint_consume",
        "endpoints:batchjob",
        "monitoring:onlineendpoint_monitoring",
        "studio:token_list",
        "admin:index",
    ):
        assert expected in names
    assert set(NOT_PAGES) <= set(skipped), "a route listed as not a page is gone: drop it from NOT_PAGES"
    failed_assets = []
    page.on(
        "response",
        lambda response: (
            "/static/" in response.url
            and response.status >= 400
            and failed_assets.append(f"{response.status} {response.url}")
        ),
    )
    # A request the next navigation cancels (ERR_ABORTED) did not fail; one for a static file that failed did.
    page.on(
        "requestfailed",
        lambda request: (
            "/static/" in request.url
            and "ERR_ABORTED" not in (request.failure or "")
            and failed_assets.append(f"{request.failure} {request.url}")
        ),
    )

    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", team.admin.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    problems, took = [], {}
    files = set()  # routes that answered a file rather than a page (a download added later, say)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in walked:
            if name in files:
                continue
            before_errors, before_assets = len(browser_page.console_errors), len(failed_assets)
            started = time.monotonic()
            where = f"{width}px {path} ({name})"
            try:
                response = page.goto(f"{live_server.url}{path}", wait_until="load")
            except PlaywrightError as exc:
                if "Download is starting" not in str(exc):
                    raise
                files.add(name)
                skipped[name] = "answers a download, a file rather than a page"
                continue
            if response is None or response.status != 200:
                problems.append(f"{where}: status {response.status if response else 'none'}")
                continue
            kind = response.headers.get("content-type", "")
            if not kind.startswith("text/html"):
                files.add(name)
                skipped[name] = (
                    f"answers {kind.split(';')[0] or 'no content type'}, a file rather than a page"
                )
                continue
            # Parts htmx loads after the page (hx-trigger=load) and charts drawn on load are in place
            # once no htmx request is in flight and two frames have been laid out.
            page.wait_for_function("() => !document.querySelector('.htmx-request')")
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            wide = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
            if wide[0] > wide[1]:
                problems.append(f"{where}: {wide[0]} px wide in a {wide[1]} px window")
            if len(browser_page.console_errors) > before_errors:
                problems.append(f"{where}: console {browser_page.console_errors[before_errors:]}")
            if len(failed_assets) > before_assets:
                problems.append(f"{where}: assets {failed_assets[before_assets:]}")
            took[where] = time.monotonic() - started

    print(f"\nwalked {len(walked) - len(files)} pages at {WIDTHS} px; skipped {len(skipped)} routes:")
    for name, why in sorted(skipped.items()):
        print(f"  {name}: {why}")
    print(
        "slowest:",
        ", ".join(
            f"{where} {seconds:.1f}s" for where, seconds in sorted(took.items(), key=lambda i: -i[1])[:5]
        ),
    )
    assert problems == [], "\n".join(problems)
    assert browser_page.foreign_requests == []
