"""`studio model optimize` against a live server whose jobs really run, and the optimized version deployed
and scored through the real gateway like any model."""

import json
import textwrap

import pytest

from registry.tests.test_optimize import COLUMNS, _frame, _save

# The CLI tests' live server and `studio` runner, shared as fixtures (hence their names below).
from studio.tests.test_cli_endpoints import as_json, invoke_when_routed, server, studio  # noqa: F401


@pytest.fixture
def model(tmp_path):
    """A LogisticRegression fitted on a DataFrame and saved by MLflow, and rows it was not fitted on."""
    from sklearn.linear_model import LogisticRegression

    X = _frame(200)
    estimator = LogisticRegression()
    folder = _save(estimator, X, (X["f0"] - X["f2"] > 0).astype(int), tmp_path / "churn")
    return folder, estimator, _frame(6, seed=5)


def test_an_optimized_version_is_registered_deployed_and_scored_like_any_model(
    gateway,
    studio,  # noqa: F811
    model,
    tmp_path,
):
    folder, estimator, rows = model
    studio("model", "create", "--name", "churn", "--path", str(folder), "--type", "mlflow_model")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"input_data": {"columns": COLUMNS, "data": rows.values.tolist()}}))

    made = studio("model", "optimize", "--name", "churn", "--version", "1", "--request-file", str(request))
    assert "Optimizing churn:1" in made.stderr and "Same answers on 6 rows" in made.stderr
    assert "New version" in made.stdout and "churn:2" in made.stdout and "Speedup" in made.stdout
    shown = as_json(studio("model", "show", "--name", "churn", "--version", "2", "-o", "json"))
    assert shown["properties"]["optimized_from"] == "churn:1" and float(shown["properties"]["speedup"]) > 0
    assert "onnx" in shown["mlflow"]["flavors"]

    studio("online-endpoint", "create", "--name", "churn-fast")
    spec = tmp_path / "fast.yml"
    spec.write_text(
        textwrap.dedent(
            """\
            name: onnx
            endpoint_name: churn-fast
            model: azureml:churn:2
            instance_type: Standard_DS2_v2
            instance_count: 1
            """
        )
    )
    studio("online-deployment", "create", "-f", str(spec), "--all-traffic")
    answer = invoke_when_routed(studio, "--name", "churn-fast", "--request-file", str(request))
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout) == estimator.predict(rows).tolist(), "the original's labels, from ONNX"
    studio("online-endpoint", "delete", "-n", "churn-fast", "--yes")


def test_a_version_that_cannot_be_converted_is_refused_with_the_servers_reason(studio, tmp_path):  # noqa: F811
    weights = tmp_path / "weights.pkl"
    weights.write_bytes(b"weights")
    studio("model", "create", "--name", "custom", "--path", str(weights))
    refused = studio("model", "optimize", "--name", "custom", "--version", "1", fails=True)
    assert "custom:1 is a custom_model: only MLflow scikit-learn models" in refused.stderr
