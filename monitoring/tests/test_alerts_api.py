"""The alert rules API and `studio alert`: what a rule holds, who may change it, and refusals that say
what to fix and leave nothing behind."""

import json

import pytest
from click.testing import CliRunner

from endpoints.models import Lease
from monitoring import alerts
from monitoring.models import AlertRule
from studio.cli.main import cli
from studio.models import AuditEvent

ENDPOINTS = "/api/v1/online-endpoints/"
RULES = f"{ENDPOINTS}fraud/alerts/"


@pytest.mark.django_db
def test_a_contributor_creates_shows_changes_and_deletes_a_rule(team, endpoints):
    client = team.contributor.client()
    created = client.post(
        RULES, {"kind": "latency_p99", "threshold": 250, "window": "1h", "deployment": "green"}, format="json"
    )
    assert created.status_code == 201, created.json()
    rule = created.json()
    assert {key: rule[key] for key in ("name", "endpoint", "deployment", "kind", "threshold", "window")} == {
        "name": "green-latency_p99",
        "endpoint": "fraud",
        "deployment": "green",
        "kind": "latency_p99",
        "threshold": 250.0,
        "window": "1h",
    }
    assert (rule["state"], rule["value"], rule["recipients"]) == ("ok", None, [])
    # No recipients: the endpoint's creator is mailed, when the endpoint records one.
    assert rule["notify"] == []
    endpoints.created_by = team.admin.user
    endpoints.save()
    assert client.get(f"{RULES}{rule['id']}/").json()["notify"] == ["admin@example.com"]

    changed = client.patch(
        f"{RULES}{rule['id']}/",
        {"threshold": 400, "window": "90m", "recipients": "reader@example.com, admin@example.com"},
        format="json",
    )
    assert changed.status_code == 200, changed.json()
    assert (changed.json()["threshold"], changed.json()["window"]) == (400.0, "90m")
    assert changed.json()["notify"] == ["reader@example.com", "admin@example.com"]
    assert [r["name"] for r in team.reader.client().get(RULES).json()] == ["green-latency_p99"]

    alerts.evaluate_all()  # takes (and leaves) the rule's lease row
    assert Lease.objects.filter(name=f"alert-rule:{rule['id']}").exists()
    assert client.delete(f"{RULES}{rule['id']}/").status_code == 204
    assert not Lease.objects.filter(name=f"alert-rule:{rule['id']}").exists()
    assert client.get(f"{RULES}{rule['id']}/").status_code == 404
    audited = AuditEvent.objects.filter(object_type="alert rule", object_repr="fraud/green-latency_p99")
    assert sorted(audited.values_list("action", flat=True)) == ["created", "deleted", "updated"]


@pytest.mark.django_db
def test_names_default_to_the_kind_and_stay_unique_per_endpoint(team, endpoints):
    client = team.contributor.client()
    body = {"kind": "request_rate_low", "threshold": 1}
    names = [client.post(RULES, body, format="json").json()["name"] for _ in range(2)]
    assert names == ["request_rate_low", "request_rate_low-2"]
    taken = client.post(RULES, {**body, "name": "request_rate_low"}, format="json")
    assert taken.status_code == 400
    assert (
        taken.json()["error"]["message"]
        == "name: endpoint 'fraud' has a rule named 'request_rate_low' already."
    )
    assert AlertRule.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (
            {"kind": "cpu", "threshold": 5},
            "kind",
            "'cpu' is not a kind of alert: use one of error_rate, latency_p99",
        ),
        (
            {"kind": "error_rate", "threshold": 5, "window": "5x"},
            "window",
            "'5x' is not a window: write whole",
        ),
        ({"kind": "error_rate", "threshold": 5, "window": "0m"}, "window", "from 1m to 24h"),
        ({"kind": "error_rate", "threshold": 5, "window": "2d"}, "window", "from 1m to 24h"),
        (
            {"kind": "error_rate", "threshold": 150},
            "threshold",
            "an error rate is a percentage: give 0 to 100",
        ),
        ({"kind": "error_rate", "threshold": "lots"}, "threshold", "'lots' is not a number"),
        ({"kind": "error_rate", "threshold": -1}, "threshold", "is not a number of zero or more"),
        ({"kind": "error_rate"}, "threshold", "is required"),
        ({"kind": "error_rate", "threshold": 5, "errors": "3xx"}, "errors", "use 5xx (server errors"),
        (
            {"kind": "error_rate", "threshold": 5, "deployment": "red"},
            "deployment",
            "endpoint 'fraud' has no deployment 'red': use one of blue, green, or leave deployment out",
        ),
        (
            {"kind": "error_rate", "threshold": 5, "recipients": ["not-an-address"]},
            "recipients",
            "is not an email",
        ),
        ({"kind": "error_rate", "threshold": 5, "name": "has space"}, "name", "is not a rule name"),
        ({"kind": "error_rate", "threshold": 5, "severity": "high"}, None, "unknown field 'severity'"),
    ],
)
def test_a_bad_rule_is_refused_naming_what_to_fix(team, endpoints, body, field, says):
    response = team.contributor.client().post(RULES, body, format="json")
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert says in error["message"]
    if field:
        assert error["message"].startswith(f"{field}: ")
        assert list(error["details"]) == [field]
    assert AlertRule.objects.count() == 0


@pytest.mark.django_db
def test_a_bad_change_leaves_the_rule_as_it_was(team, endpoints):
    client = team.contributor.client()
    rule = client.post(RULES, {"kind": "error_rate", "threshold": 5}, format="json").json()
    refused = client.patch(f"{RULES}{rule['id']}/", {"threshold": 1, "window": "soon"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("window: 'soon' is not a window")
    # An error rate is a percentage, whichever request changes it.
    assert client.patch(f"{RULES}{rule['id']}/", {"threshold": 500}, format="json").status_code == 400
    stored = AlertRule.objects.get()
    assert (stored.threshold, stored.window_minutes) == (5.0, 5)


@pytest.mark.django_db
def test_unknown_endpoints_and_rules_are_404_and_readers_cannot_write(team, endpoints):
    contributor = team.contributor.client()
    missing = contributor.post("/api/v1/online-endpoints/nope/alerts/", {"kind": "error_rate"}, format="json")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "There is no online endpoint named 'nope'."
    assert contributor.get(f"{RULES}999/").json()["error"]["message"] == (
        "Endpoint 'fraud' has no alert rule 999; list its rules to find the id."
    )
    assert contributor.get(f"{RULES}999/history/").status_code == 404
    reader = team.reader.client()
    assert reader.post(RULES, {"kind": "error_rate", "threshold": 5}, format="json").status_code == 403
    assert team.outsider.client().get(RULES).status_code == 403
    assert AlertRule.objects.count() == 0


@pytest.fixture
def studio(live_server, transactional_db, team, endpoints, tmp_path, monkeypatch):
    """`studio ARGS` in-process against the live server, as the contributor."""
    monkeypatch.setenv("STUDIO_CONFIG", str(tmp_path / "config.json"))

    def run(*args: str, fails: bool = False):
        env = {"STUDIO_URL": live_server.url, "STUDIO_TOKEN": team.contributor.token}
        result = CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)
        assert (result.exit_code != 0) == fails, result.output
        return result

    return run


def test_the_cli_creates_lists_and_deletes_rules(studio, settings):
    settings.STUDIO_ALERT_EMAIL_DOMAINS = ["example.com"]  # the on-call list is no Studio user
    created = studio(
        "alert", "create", "--endpoint-name", "fraud", "--deployment-name", "blue", "--kind", "error_rate",
        "--threshold", "5", "--window", "5m", "--email", "oncall@example.com", "-o", "json",
    )  # fmt: skip
    rule = json.loads(created.stdout)
    assert (rule["name"], rule["deployment"], rule["errors"], rule["recipients"]) == (
        "blue-error_rate",
        "blue",
        "5xx",
        ["oncall@example.com"],
    )
    studio(
        "alert", "create", "-e", "fraud", "--kind", "request_rate_low", "--threshold", "1", "--name", "quiet"
    )

    table = studio("alert", "list", "--endpoint-name", "fraud").stdout
    assert "blue-error_rate" in table and "quiet" in table and "(all)" in table
    listed = json.loads(studio("alert", "list", "--endpoint-name", "fraud", "-o", "json").stdout)
    assert [(r["name"], r["kind"], r["state"]) for r in listed] == [
        ("blue-error_rate", "error_rate", "ok"),
        ("quiet", "request_rate_low", "ok"),
    ]
    shown = json.loads(studio("alert", "show", "-e", "fraud", "--name", "quiet", "-o", "json").stdout)
    assert shown["history"] == [] and shown["threshold"] == 1.0

    deleted = studio("alert", "delete", "--endpoint-name", "fraud", "--name", "quiet")
    assert "Deleted alert rule quiet of endpoint fraud." in deleted.stderr
    assert [r["name"] for r in json.loads(studio("alert", "list", "-e", "fraud", "-o", "json").stdout)] == [
        "blue-error_rate"
    ]


def test_the_cli_says_what_to_fix(studio):
    bad_window = studio(
        "alert",
        "create",
        "-e",
        "fraud",
        "--kind",
        "error_rate",
        "--threshold",
        "5",
        "--window",
        "5x",
        fails=True,
    )
    assert "window: '5x' is not a window" in bad_window.output
    unknown = studio(
        "alert", "create", "-e", "fraud", "-d", "red", "--kind", "error_rate", "--threshold", "5", fails=True
    )
    assert "no deployment 'red': use one of blue, green" in unknown.output
    bad_kind = studio("alert", "create", "-e", "fraud", "--kind", "cpu", "--threshold", "5", fails=True)
    assert "'cpu' is not one of" in bad_kind.output
    missing = studio("alert", "delete", "-e", "fraud", "--name", "ghost", fails=True)
    assert "Endpoint fraud has no alert rule named 'ghost' (its rules: none yet)." in missing.output
    no_endpoint = studio("alert", "list", "-e", "nope", fails=True)
    assert "There is no online endpoint named 'nope'." in no_endpoint.output
    assert AlertRule.objects.count() == 0


@pytest.mark.django_db
def test_rules_mail_the_team_unless_an_admin_allows_more_domains(team, endpoints, settings):
    client = team.contributor.client()
    body = {"kind": "error_rate", "threshold": 5}
    outside = client.post(
        RULES, {**body, "recipients": ["Reader@Example.com", "boss@rival.test"]}, format="json"
    )
    assert outside.status_code == 400
    assert outside.json()["error"]["message"] == (
        "recipients: 'boss@rival.test': alerts mail the addresses of Studio's users only. Give a team "
        "member's address, or ask an Admin to allow that domain in STUDIO_ALERT_EMAIL_DOMAINS."
    )
    # A user without a role is no member of the team.
    assert (
        client.post(RULES, {**body, "recipients": ["outsider@example.com"]}, format="json").status_code == 400
    )
    assert AlertRule.objects.count() == 0

    team_only = client.post(RULES, {**body, "recipients": ["Reader@Example.com"]}, format="json")
    assert team_only.status_code == 201, team_only.json()
    settings.STUDIO_ALERT_EMAIL_DOMAINS = ["rival.test"]
    allowed = client.patch(
        f"{RULES}{team_only.json()['id']}/", {"recipients": ["boss@rival.test"]}, format="json"
    )
    assert allowed.status_code == 200, allowed.json()
    assert allowed.json()["recipients"] == ["boss@rival.test"]
    refused = client.patch(
        f"{RULES}{team_only.json()['id']}/", {"recipients": "x@elsewhere.test"}, format="json"
    )
    assert "of Studio's users or of rival.test only" in refused.json()["error"]["message"]
    assert AlertRule.objects.get().recipients == ["boss@rival.test"]


@pytest.mark.django_db
def test_readers_do_not_see_whom_rules_mail(team, endpoints, monkeypatch):
    from datetime import UTC, datetime

    from studio.testing import signed_in

    body = {"kind": "request_rate_low", "threshold": 1, "recipients": ["admin@example.com"]}
    rule = team.contributor.client().post(RULES, body, format="json").json()
    monkeypatch.setattr(alerts, "clock", lambda: datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    alerts.evaluate_all()  # no traffic: it fires, and mails

    history = f"{RULES}{rule['id']}/history/"
    for persona, addresses in ((team.contributor, ["admin@example.com"]), (team.reader, None)):
        shown = persona.client().get(f"{RULES}{rule['id']}/").json()
        assert (shown["recipients"], shown["notify"]) == (addresses, addresses)
        assert persona.client().get(RULES).json()[0]["notify"] == addresses
        assert persona.client().get(history).json()["results"][0]["email_to"] == addresses
    assert (
        b"admin@example.com" in signed_in(team.contributor.user).get("/endpoints/fraud/monitoring/").content
    )
    page = signed_in(team.reader.user).get("/endpoints/fraud/monitoring/").content.decode()
    assert "admin@example.com" not in page and "shown to Contributors" in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("eager_jobs")
def test_deleting_a_deployment_or_endpoint_resolves_its_firing_rules(team, endpoints, monkeypatch):
    from datetime import UTC, datetime

    from studio.models import Event

    client = team.contributor.client()
    for body in ({"deployment": "green", "name": "green-quiet"}, {"name": "quiet"}):
        client.post(RULES, {**body, "kind": "request_rate_low", "threshold": 1}, format="json")
    monkeypatch.setattr(alerts, "clock", lambda: datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    alerts.evaluate_all()  # no traffic: too little, both fire
    assert set(AlertRule.objects.values_list("state", flat=True)) == {"firing"}

    # The deletion jobs run in-process: the reconciler removes the rows, and the rules go with them.
    assert client.delete(f"{ENDPOINTS}fraud/deployments/green/").status_code == 202
    assert list(AlertRule.objects.values_list("name", flat=True)) == ["quiet"]
    assert client.delete(f"{ENDPOINTS}fraud/").status_code == 202
    assert not AlertRule.objects.exists()
    resolved = Event.objects.filter(type="studio.alert.resolved").order_by("id")
    assert [(e.subject, e.data["rule"], e.data["reason"]) for e in resolved] == [
        ("online-endpoints/fraud/deployments/green", "green-quiet", "rule deleted"),
        ("online-endpoints/fraud", "quiet", "rule deleted"),
    ]
