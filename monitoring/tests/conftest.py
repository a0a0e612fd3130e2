"""Fixtures of the monitoring tests: the telemetry store as a folder or on a real S3 server."""

import pytest

from endpoints.tests.conftest import mlflow_model_zip  # noqa: F401 -- the session fixture, shared


@pytest.fixture(params=["file", "s3"])
def telemetry_store_url(request, settings, tmp_path):
    """The telemetry store, once as the filesystem store and once on the moto S3 server (loopback)."""
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        settings.STUDIO_TELEMETRY_STORE = f"s3://{bucket}/telemetry"
    else:
        settings.STUDIO_TELEMETRY_STORE = f"file://{tmp_path / 'telemetry-store'}"
    return settings.STUDIO_TELEMETRY_STORE


@pytest.fixture
def telemetry_store(telemetry_store_url):
    from studio.objectstore import store_from_url

    return store_from_url(telemetry_store_url)


@pytest.fixture
def spool(tmp_path, settings):
    path = tmp_path / "spool"
    path.mkdir()
    settings.STUDIO_GATEWAY_SPOOL_DIR = path
    return path


@pytest.fixture
def endpoints(team):
    """Rows only (no replicas): fraud with deployments blue and green, quiet and churn with none."""
    from endpoints.models import OnlineDeployment, OnlineEndpoint
    from registry.tests.factories import register

    version = register("clf", team.contributor.user)
    fraud = OnlineEndpoint.objects.create(name="fraud", primary_key="p", secondary_key="s")
    OnlineEndpoint.objects.create(name="quiet", primary_key="p", secondary_key="s")
    OnlineEndpoint.objects.create(name="churn", primary_key="p", secondary_key="s")
    for name in ("blue", "green"):
        OnlineDeployment.objects.create(endpoint=fraud, name=name, model_version=version)
    return fraud
