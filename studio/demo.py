"""A demo team in an empty installation: people with roles, models with versions and tags, an endpoint
with two deployments splitting traffic, scored requests in the telemetry archive, a job, a webhook, an
alert rule and an access token.

It is what the screenshots in docs/screenshots/ show and what the walk over every page signs in to. The
registry, endpoint, alert and webhook rows are made through the same services the pages and the API use;
the requests are telemetry events in the gateway's own shape, shipped to the archive and rolled up as the
worker does. Deployments are rows whose replicas nothing runs (their address is the discard port), so a
demo never starts user code; their state reads Succeeded as a converged deployment's does.
"""

from __future__ import annotations

import io
import random
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

ENDPOINT = "fraud-scoring"
MLMODEL = """\
flavors:
  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.9}
  sklearn: {serialization_format: skops, sklearn_version: 1.9.1}
mlflow_version: 3.17.2
run_id: 9f8e7d6c5b4a
signature:
  inputs: '[{"type": "double", "name": "amount", "required": true},
    {"type": "long", "name": "merchant_id", "required": true},
    {"type": "string", "name": "country", "required": false}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 2]}}]'
"""


@dataclass
class Demo:
    """What was seeded, for whoever walks or photographs it."""

    admin: User
    contributor: User
    reader: User
    password: str
    endpoint: object
    deployments: list = field(default_factory=list)
    versions: list = field(default_factory=list)
    data: list = field(default_factory=list)
    job: object = None
    alert: object = None
    webhook: object = None
    token: object = None
    raw_token: str = ""


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _person(username: str, role: str, password: str, first: str, last: str) -> User:
    from studio.roles import set_role

    user = User.objects.create_user(
        username, f"{username}@example.com", password, first_name=first, last_name=last
    )
    set_role(user, role)
    return user


def _register(user, name: str, *, mlflow: bool = False, **fields):
    from registry import services

    spec = services.NewVersion(name=name, type="mlflow_model" if mlflow else "custom_model", **fields)
    if mlflow:
        files = {
            "MLmodel": MLMODEL.encode(),
            "model.skops": b"\0" * 2048,
            "requirements.txt": b"scikit-learn\n",
        }
        return services.register_version(spec, io.BytesIO(_zip(files)), "model.zip", "folder", user)
    return services.register_version(spec, io.BytesIO(b"\0" * 1024), "model.pkl", "file", user)


def _register_data(user):
    """A month of scored payments as a data asset, to batch-score or preview."""
    from registry import data

    rows = "".join(f"{day},{100 + day * 7 % 90}.50,{day % 3 == 0}\n" for day in range(1, 31))
    spec = data.NewData(
        name="payments-2026-11",
        type="uri_folder",
        tags={"team": "risk"},
        description="November's card payments, one row per payment.",
    )
    files = {"payments.csv": f"day,amount,flagged\n{rows}".encode()}
    return data.register_upload(spec, io.BytesIO(_zip(files)), "payments.zip", "folder", user)


def _events(now: datetime, minutes: int, rng: random.Random) -> list[dict]:
    """Scored requests as the gateway writes them: most on blue, a tenth on green, a few errors, and
    green's mirrored copies."""
    events = []
    for minute in range(minutes, 0, -1):
        at = now - timedelta(minutes=minute)
        for second in range(0, 60, 3):
            deployment = "green" if rng.random() < 0.1 else "blue"
            status = 500 if rng.random() < 0.02 else (400 if rng.random() < 0.03 else 200)
            latency = rng.lognormvariate(2.3 if deployment == "blue" else 2.0, 0.35)
            events.append(_event(at + timedelta(seconds=second), deployment, status, latency, mirrored=False))
            if deployment == "blue" and rng.random() < 0.2:
                events.append(
                    _event(at + timedelta(seconds=second), "green", 200, latency * 0.8, mirrored=True)
                )
    return events


def _event(ts: datetime, deployment: str, status: int, latency_ms: float, *, mirrored: bool) -> dict:
    return {
        "ts": ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": str(uuid.uuid4()),
        "endpoint": ENDPOINT,
        "deployment": deployment,
        "replica": f"{deployment}-1-0",
        "status": status,
        "model_status": status,
        "latency_ms": round(latency_ms, 2),
        "upstream_ms": round(max(latency_ms - 0.4, 0.0), 2),
        "bytes_in": 96,
        "bytes_out": 24,
        "auth": "mirror" if mirrored else "key",
        "mirrored": mirrored,
    }


def _telemetry(now: datetime, minutes: int) -> None:
    from monitoring import rollup, shipper
    from studio.objectstore import store_from_url

    store = store_from_url(settings.STUDIO_TELEMETRY_STORE)
    with tempfile.TemporaryDirectory() as spool:
        segment = Path(spool) / "demo-000000000001.jsonl"
        segment.write_bytes(
            b"".join(orjson.dumps(item) + b"\n" for item in _events(now, minutes, random.Random(7)))
        )
        shipper.ship_spool(Path(spool), store, rollup.register_shipped)
    rollup.rollup_pending(store)


def seed(password: str, *, minutes_of_traffic: int = 45) -> Demo:
    """Seed the demo team into an installation that has none of its names yet; returns what it made."""
    from endpoints import services as endpoint_services
    from endpoints.choices import JobKindChoices, JobStateChoices, ProvisioningStateChoices
    from endpoints.models import Job, OnlineDeployment, Replica
    from monitoring import alerts
    from studio import webhooks
    from studio.choices import WebhookDeliveryStateChoices
    from studio.models import AccessToken, Event, WebhookDelivery
    from studio.roles import ensure_role_groups

    ensure_role_groups()
    with transaction.atomic():
        admin = _person("ada", "Admin", password, "Ada", "Lovelace")
        contributor = _person("sam", "Contributor", password, "Sam", "Okafor")
        reader = _person("riley", "Reader", password, "Riley", "Chen")

    versions = [
        _register(contributor, "fraud-detector", tags={"stage": "prod", "team": "risk"},
                  description="Logistic regression baseline on 2025 card transactions.",
                  source="runs:/1a2b3c4d/model"),
        _register(contributor, "fraud-detector", mlflow=True, tags={"stage": "prod", "team": "risk"},
                  description="Gradient boosting with merchant features.", source="runs:/9f8e7d6c5b4a/model"),
        _register(contributor, "fraud-detector", mlflow=True, tags={"stage": "staging", "team": "payments"},
                  description="Gradient boosting retrained on 2026 transactions.",
                  source="runs:/5e6f7a8b9c0d/model"),
        _register(contributor, "churn-predictor", tags={"stage": "prod", "team": "growth"},
                  description="Monthly churn risk per account."),
        _register(contributor, "churn-predictor", tags={"stage": "dev", "team": "growth"},
                  description="Adds support-history features."),
        _register(admin, "email-router", mlflow=True, tags={"stage": "dev", "team": "support"},
                  description="Routes support emails to a queue."),
    ]  # fmt: skip

    endpoint = endpoint_services.create_endpoint(
        {"name": ENDPOINT, "auth_mode": "key", "description": "Scores card payments before capture.",
         "tags": {"team": "risk"}},
        contributor,
    )  # fmt: skip
    deployments = []
    for name, version in (("blue", versions[1]), ("green", versions[2])):
        deployment = OnlineDeployment.objects.create(
            endpoint=endpoint,
            name=name,
            model_version=version,
            instance_type="Standard_DS3_v2",
            instance_count=1,
            provisioning_state=ProvisioningStateChoices.SUCCEEDED,
            observed_generation=1,
            serving_revision=1,
            request_settings={"request_timeout_ms": 3000, "max_concurrent_requests_per_instance": 4},
            created_by=contributor,
        )
        Replica.objects.create(
            deployment=deployment, revision=1, index=0, url="http://127.0.0.1:9", state="ready"
        )
        deployments.append(deployment)
    endpoint.traffic = {"blue": 90, "green": 10}
    endpoint.mirror_traffic = {"green": 20}
    endpoint.save(update_fields=["traffic", "mirror_traffic"])

    started = timezone.now() - timedelta(minutes=minutes_of_traffic + 5)
    job = Job.objects.create(
        kind=JobKindChoices.CREATE_DEPLOYMENT,
        state=JobStateChoices.SUCCEEDED,
        endpoint_name=ENDPOINT,
        deployment=deployments[1],
        deployment_name="green",
        progress=100,
        events=[
            {"t": started.isoformat(), "level": "info", "message": "Environment ready (cached)."},
            {
                "t": (started + timedelta(seconds=4)).isoformat(),
                "level": "info",
                "message": "Replica green-1-0 ready.",
            },
        ],
        created_by=contributor,
        started_at=started,
        finished_at=started + timedelta(seconds=5),
        heartbeat_at=started + timedelta(seconds=5),
    )

    alert = alerts.create_rule(
        endpoint,
        {"name": "p99-latency", "kind": "latency_p99", "threshold": 250, "window": "10m",
         "recipients": ["sam@example.com"]},
        contributor,
    )  # fmt: skip
    webhook, _ = webhooks.create_subscription(
        {"name": "deploy-notices", "url": "https://hooks.example.com/studio", "events": ["deployment.*"]},
        admin,
    )
    # One delivery already made, as the console shows it after a deployment was announced.
    event = Event.objects.create(
        type="deployment.succeeded", subject=f"endpoints/{ENDPOINT}/deployments/green",
        data={"endpoint": ENDPOINT, "deployment": "green"}, time=job.finished_at,
    )  # fmt: skip
    WebhookDelivery.objects.create(
        subscription=webhook, event=event, subject=event.subject, state=WebhookDeliveryStateChoices.SUCCEEDED,
        attempts=1, response_code=204, latency_ms=38.0, last_attempt_at=job.finished_at,
        delivered_at=job.finished_at,
    )  # fmt: skip
    token, raw = AccessToken.issue(admin, "ci-pipeline", expires_at=timezone.now() + timedelta(days=90))
    AccessToken.issue(admin, "laptop-cli")
    AccessToken.issue(admin, "old-notebook")[0].revoke()
    AccessToken.issue(contributor, "deploy-bot")

    data = [_register_data(contributor)]

    _telemetry(datetime.now(UTC).replace(second=0, microsecond=0), minutes_of_traffic)
    return Demo(
        admin=admin,
        contributor=contributor,
        reader=reader,
        password=password,
        endpoint=endpoint,
        deployments=deployments,
        versions=versions,
        data=data,
        job=job,
        alert=alert,
        webhook=webhook,
        token=token,
        raw_token=raw,
    )
