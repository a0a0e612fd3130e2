"""Steps the endpoint tests share: register a model, upload code, deploy, score a replica."""

import httpx
from django.core.files.uploadedfile import SimpleUploadedFile

from registry.tests.factories import form

ENDPOINTS = "/api/v1/online-endpoints/"
CONDA = {
    "name": "model-env",
    "channels": ["conda-forge"],
    "dependencies": ["python=3.11", "pip", {"pip": ["scikit-learn==1.9.1", "joblib"]}],
}


def register(client, name, content, model_type="custom_model"):
    response = client.post(
        "/api/v1/models/",
        form(name, content, f"{name}.zip", archive=True, type=model_type),
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    return response.json()


def upload_code(client, content):
    response = client.post(
        "/api/v1/code/", {"archive": SimpleUploadedFile("code.zip", content)}, format="multipart"
    )
    assert response.status_code in (200, 201), response.json()
    return response.json()["id"]


def deploy(client, endpoint, spec, all_traffic=True):
    query = "?all_traffic=true" if all_traffic else ""
    response = client.post(f"{ENDPOINTS}{endpoint}/deployments/{query}", spec, format="json")
    assert response.status_code == 202, response.json()
    return response.json()


def score(replica_url, payload):
    return httpx.post(f"{replica_url}/score", json=payload, timeout=10)
