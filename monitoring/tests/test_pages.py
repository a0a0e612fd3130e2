"""The monitoring tab and the /monitoring/ overview, rendered by Django (the browser test draws them)."""

import json

import pytest

from monitoring import rollup, shipper
from monitoring.tests.factories import event, recent, write_segment
from studio.testkit import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def traffic(endpoints, spool, telemetry_store):
    events = [event(recent(m % 30), deployment="blue", latency_ms=3 + m) for m in range(50)]
    events += [event(recent(3), deployment="green", status=500) for _ in range(5)]
    events += [event(recent(3), deployment="green", mirrored=True) for _ in range(7)]
    events += [event(recent(3), endpoint="churn", deployment="a", status=404) for _ in range(2)]
    write_segment(spool, events)
    shipper.ship_spool(spool, telemetry_store, rollup.register_shipped)
    rollup.rollup_pending(telemetry_store)


def _signed_in(client, team):
    client.login(username="reader", password=PASSWORD)
    return client


@pytest.mark.parametrize("telemetry_store_url", ["file"], indirect=True)
def test_the_tab_embeds_three_plotly_figures_and_the_totals(client, team, traffic):
    response = _signed_in(client, team).get("/endpoints/fraud/monitoring/")
    assert response.status_code == 200
    html = response.content.decode()
    for name in ("requests", "latency", "errors"):
        assert f'id="chart-{name}-figure"' in html
    assert 'data-total="requests">55<' in html
    assert 'data-total="mirrored">7<' in html
    assert "/static/vendor/plotly.min.js" in html
    assert 'aria-current="page">Monitoring<' in html
    figure = json.loads(
        html.split('id="chart-requests-figure" type="application/json">')[1].split("</script>")[0]
    )
    assert sorted(trace["name"] for trace in figure["data"]) == ["blue", "green", "green (mirrored)"]


@pytest.mark.parametrize("telemetry_store_url", ["file"], indirect=True)
def test_an_htmx_refresh_renders_only_the_panel_for_one_deployment(client, team, traffic):
    response = _signed_in(client, team).get(
        "/endpoints/fraud/monitoring/", {"range": "day", "deployment": "green"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="monitoring-panel"')
    assert 'data-total="requests">5<' in html
    assert "every 30s" in html


def test_empty_states_say_what_to_do(client, team, endpoints):
    signed_in = _signed_in(client, team)
    assert "Send a request from the" in signed_in.get("/endpoints/fraud/monitoring/").content.decode()
    assert "No deployments yet" in signed_in.get("/endpoints/quiet/monitoring/").content.decode()
    custom = signed_in.get("/endpoints/fraud/monitoring/", {"range": "custom"}).content.decode()
    assert "A custom range needs a start and an end" in custom


@pytest.mark.parametrize("telemetry_store_url", ["file"], indirect=True)
def test_the_overview_lists_every_endpoint_sorted_by_any_column(client, team, traffic):
    signed_in = _signed_in(client, team)
    html = signed_in.get("/monitoring/").content.decode()
    assert html.index(">fraud<") < html.index(">churn<") < html.index(">quiet<")  # most requests first
    by_name = signed_in.get("/monitoring/", {"sort": "name"}).content.decode()
    assert by_name.index(">churn<") < by_name.index(">fraud<") < by_name.index(">quiet<")
    by_errors = signed_in.get("/monitoring/", {"sort": "-error_rate"}).content.decode()
    assert by_errors.index(">churn<") < by_errors.index(">fraud<")
    assert "(+7 mirrored)" in html


def test_the_pages_need_a_signed_in_reader(client, team, endpoints):
    assert client.get("/monitoring/").status_code == 302
    client.login(username="outsider", password=PASSWORD)
    assert client.get("/endpoints/fraud/monitoring/").status_code == 403
