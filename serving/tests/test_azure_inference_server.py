"""The model server answers as Azure ML's inference server does: Swagger 2 and 3, files shipped in the
code folder, multipart uploads with `getlist` and file objects, Azure's environment variables, and MLflow
signatures whose columns were named by integers."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

APP = Path(__file__).resolve().parent / "azure_app"
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def binary_server(start_server, tmp_path):
    model = tmp_path / "azureml-models" / "pets" / "3"
    (model / "model").mkdir(parents=True)
    (model / "model" / "weights.bin").write_bytes(b"\0")
    server = start_server(
        "binary",
        [],
        {
            "AML_APP_ROOT": str(APP),
            "AZUREML_ENTRY_SCRIPT": "score_binary.py",
            "AZUREML_MODEL_DIR": str(model),
        },
    )
    return server.wait_ready(), model


def test_a_binary_payload_sample_reads_each_uploaded_image_with_pil(binary_server):
    server, _ = binary_server
    files = [("image", ("cat.png", _png(4, 3), "image/png")), ("image", ("dog.png", _png(5, 6), "image/png"))]
    response = httpx.post(f"{server.url}/score", files=files, data={"label": "pets"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "images": [{"filename": "cat.png", "size": [4, 3]}, {"filename": "dog.png", "size": [5, 6]}],
        "label": "pets",
        "thumbnail_bytes": response.json()["thumbnail_bytes"],
    }
    assert response.json()["thumbnail_bytes"] > 0


def test_a_raw_script_sees_azures_environment_with_the_model_folder_kept(binary_server):
    server, model = binary_server
    response = httpx.post(f"{server.url}/score?env=1", content=b"", timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "AML_APP_ROOT": str(APP),
        "AZUREML_ENTRY_SCRIPT": "score_binary.py",
        "AZUREML_MODEL_DIR": str(model),
        "WORKER_COUNT": None,
    }
    assert (Path(response.json()["AZUREML_MODEL_DIR"]) / "model" / "weights.bin").is_file()


def test_a_multipart_body_without_a_boundary_is_a_400_saying_so(binary_server):
    server, _ = binary_server
    response = httpx.post(
        f"{server.url}/score", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}, timeout=30
    )
    assert response.status_code == 400
    assert "boundary" in response.json()["error"]["message"]


def test_a_swagger_file_shipped_with_the_code_is_served_as_it_is(binary_server):
    server, _ = binary_server
    response = httpx.get(f"{server.url}/swagger.json?version=2", timeout=10)
    assert response.status_code == 200
    assert response.content == (APP / "swagger2.json").read_bytes()
    # No swagger3.json shipped and a raw script declares no schema: nothing to serve for version 3.
    assert httpx.get(f"{server.url}/swagger.json?version=3", timeout=10).status_code == 404


def test_swagger_answers_openapi_3_or_swagger_2_as_asked(start_server):
    server = start_server(
        "schema", ["--code", str(SCRIPTS), "--scoring-script", "score_studio_schema.py"]
    ).wait_ready()
    three = httpx.get(f"{server.url}/swagger.json?version=3", timeout=10).json()
    default = httpx.get(f"{server.url}/swagger.json", timeout=10).json()
    two = httpx.get(f"{server.url}/swagger.json?version=2", timeout=10).json()
    assert three["openapi"].startswith("3.") and default == three
    assert two["swagger"] == "2.0"
    body = two["paths"]["/score"]["post"]["parameters"][0]
    assert body["in"] == "body" and body["schema"] == {"$ref": "#/definitions/ServiceInput"}
    service_input = three["components"]["schemas"]["ServiceInput"]
    example = three["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert two["definitions"]["ServiceInput"] == {**service_input, "example": example}
    assert "#/components/" not in httpx.get(f"{server.url}/swagger.json?version=2", timeout=10).text
    wrong = httpx.get(f"{server.url}/swagger.json?version=4", timeout=10)
    assert wrong.status_code == 400
    assert "version=2 or version=3" in wrong.json()["error"]["message"]


def test_an_mlflow_model_with_integer_column_names_loads_and_answers(start_server, tmp_path):
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame(np.arange(20.0).reshape(10, 2))  # columns 0 and 1, integers
    target = 2 * frame[0] + 3 * frame[1] + 1
    model = LinearRegression().fit(frame, target)
    mlflow.sklearn.save_model(
        model,
        tmp_path / "intcols",
        signature=infer_signature(frame, target),
        pip_requirements=["scikit-learn"],
    )
    assert 'name": 0' in (tmp_path / "intcols" / "MLmodel").read_text().replace("\\", "")
    server = start_server("intcols", ["--model-dir", str(tmp_path / "intcols")]).wait_ready()
    split = {"input_data": {"columns": [0, 1], "index": [0], "data": [[1.0, 2.0]]}}
    response = httpx.post(f"{server.url}/score", json=split, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == pytest.approx([9.0])
    records = httpx.post(
        f"{server.url}/score", json={"dataframe_records": [{"0": 1.0, "1": 2.0}]}, timeout=30
    )
    assert records.status_code == 200, records.text
    assert records.json()["predictions"] == pytest.approx([9.0])
    swagger = httpx.get(f"{server.url}/swagger.json", timeout=10).json()
    assert set(
        swagger["components"]["schemas"]["ServiceInput"]["properties"]["dataframe_records"]["items"][
            "properties"
        ]
    ) == {"0", "1"}
