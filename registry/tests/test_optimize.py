"""Optimizing a model version to ONNX from the REST API: converted, checked, registered with lineage.

The job runs in the request that starts it, once its transaction commits; the converter runs as a
process of its own (sandboxed where replicas are), on models MLflow itself saved.
"""

import io
import os
import zipfile
from pathlib import Path

import pytest

from registry.tests.factories import form

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_jobs", "own_home")]

COLUMNS = [f"f{i}" for i in range(16)]


def _frame(rows: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    return pd.DataFrame(np.random.default_rng(seed).normal(size=(rows, len(COLUMNS))), columns=COLUMNS)


def _save(estimator, X, y, path: Path, **extra) -> Path:
    """`estimator` fitted on the DataFrame X, saved by MLflow with a signature and an input example."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    estimator.fit(X, y)
    mlflow.sklearn.save_model(
        estimator,
        str(path),
        signature=infer_signature(X, estimator.predict(X)),
        input_example=X.head(20),
        pip_requirements=["scikit-learn==1.9.1", "skops==0.16.0"],
        **extra,
    )
    return path


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"model/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, bytes]:
    """Zipped MLflow models: classifiers and regressors fitted on DataFrames, as people train them."""
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    root = tmp_path_factory.mktemp("optimize")
    X = _frame(300)
    labels = (X["f0"] + X["f1"] > 0).astype(int)
    # Trees (and the pipeline) hold types skops does not trust by default.
    trees = {"serialization_format": "cloudpickle"}
    forest = RandomForestClassifier(n_estimators=20, random_state=0)
    made = {
        "logistic": _save(LogisticRegression(), X, labels, root / "logistic"),
        "forest": _save(forest, X, labels, root / "forest", **trees),
    }
    # Numbers scaled and a category one-hot encoded by column name: one ONNX input per column.
    customers = pd.DataFrame(
        {
            "age": np.random.default_rng(2).normal(40, 10, 300),
            "plan": np.random.default_rng(3).choice(["basic", "pro", "team"], 300),
        }
    )
    encode = ColumnTransformer([("num", StandardScaler(), ["age"]), ("cat", OneHotEncoder(), ["plan"])])
    churned = ((customers["age"] > 40) ^ (customers["plan"] == "pro")).astype(int)
    pipeline = make_pipeline(encode, LogisticRegression())
    made["pipeline"] = _save(pipeline, customers, churned, root / "pipeline", **trees)
    # Durations learned from two epoch timestamps: float32 keeps a timestamp to 128 s, so ONNX's float
    # tensors lose the seconds the difference is made of.
    rng = np.random.default_rng(1)
    starts = 1.7e9 + rng.integers(0, 10**6, size=40).astype(float)
    durations = rng.integers(1, 600, size=40).astype(float)
    times = pd.DataFrame({"start": starts, "end": starts + durations})
    made["durations"] = _save(LinearRegression(), times, durations, root / "durations")
    return {name: zipped(path) for name, path in made.items()}


@pytest.fixture
def own_home(settings, tmp_path):
    settings.STUDIO_HOME = tmp_path / "home"
    settings.STUDIO_HOME.mkdir()


@pytest.fixture
def optimize(django_capture_on_commit_callbacks):
    """POST an optimize request whose job runs in it; the answer, and the finished job when one started."""

    def start(client, name: str, version: str = "1", **body):
        with django_capture_on_commit_callbacks(execute=True):
            answer = client.post(f"/api/v1/models/{name}/versions/{version}/optimize/", body, format="json")
        if answer.status_code != 202:
            return answer, None
        return answer, client.get(answer["Location"]).json()

    return start


def register(client, name: str, content: bytes, model_type: str = "mlflow_model") -> dict:
    answer = client.post(
        "/api/v1/models/",
        form(name, content, f"{name}.zip", archive=model_type == "mlflow_model", type=model_type),
        format="multipart",
    )
    assert answer.status_code == 201, answer.json()
    return answer.json()


@pytest.mark.parametrize("kind", ["logistic", "forest", "pipeline"])
def test_a_classifier_becomes_an_onnx_version_with_its_lineage_and_measured_speed(
    team, models, optimize, kind
):
    client = team.contributor.client()
    register(client, kind, models[kind])
    started, job = optimize(client, kind)
    assert started.status_code == 202 and started.json()["optimize"] == f"{kind}:1"
    assert job["kind"] == "optimize_model" and job["state"] == "succeeded", job
    result = job["result"]
    assert result["source"] == f"{kind}:1" and result["version"] == "2" and result["rows_checked"] == 20
    # Measured, not promised: a linear model's own kernel may already be as fast as onnxruntime.
    assert result["speedup"] == pytest.approx(result["original_us"] / result["onnx_us"], rel=0.05), result

    made = client.get(f"/api/v1/models/{kind}/versions/2/").json()
    assert made["type"] == "mlflow_model" and set(made["mlflow"]["flavors"]) == {"onnx", "python_function"}
    assert made["properties"]["optimized_from"] == f"{kind}:1" and made["tags"] == {
        "optimized_from": f"{kind}:1"
    }
    assert float(made["properties"]["speedup"]) == pytest.approx(result["speedup"], rel=1e-3)
    assert (
        made["mlflow"]["signature"]
        == client.get(f"/api/v1/models/{kind}/versions/1/").json()["mlflow"]["signature"]
    )
    found = client.get(f"/api/v1/models/{kind}/versions/", {"tag": f"optimized_from={kind}:1"}).json()
    assert [item["version"] for item in found["results"]] == ["2"]
    assert client.get(f"/api/v1/models/{kind}/versions/1/optimize/").json()["id"] == job["id"]


def test_a_job_done_again_after_its_worker_died_registers_one_version(team, models, optimize):
    from endpoints.models import Job
    from registry import optimize as optimizing

    client = team.contributor.client()
    register(client, "logistic", models["logistic"])
    _, job = optimize(client, "logistic")
    assert job["state"] == "succeeded", job
    # As a worker that died after registering, before finishing the row, leaves it; the task is redelivered.
    Job.objects.filter(pk=job["id"]).update(state="running", finished_at=None)
    assert optimizing.run_job(job["id"], tolerance=1e-4) == "succeeded"
    versions = client.get("/api/v1/models/logistic/versions/").json()["results"]
    assert [v["version"] for v in versions] == ["2", "1"]
    assert client.get(f"/api/v1/jobs/{job['id']}/").json()["result"]["version"] == "2"


def test_a_conversion_that_answers_differently_is_refused_saying_where(team, models, optimize):
    client = team.contributor.client()
    register(client, "durations", models["durations"])
    _, job = optimize(client, "durations")
    assert job["state"] == "failed"
    assert (
        "The ONNX conversion of durations:1 does not answer as the original does, so it was not registered"
        in job["error"]
    )
    difference = job["result"]["differences"][0]
    print(job["error"], difference)
    assert difference["output"] == "variable" and difference["max_difference"] > 1
    assert (
        f"output variable: {difference['row_count']} of 20 rows differ by more than the tolerance 0.0001"
        in job["error"]
    )
    assert [v["version"] for v in client.get("/api/v1/models/durations/versions/").json()["results"]] == ["1"]


def test_probabilities_are_held_to_the_tolerance_even_when_labels_agree(team, models, optimize):
    client = team.contributor.client()
    register(client, "logistic", models["logistic"])
    rows = _frame(7, seed=3)
    request = {"input_data": {"columns": COLUMNS, "data": rows.values.tolist()}}
    _, job = optimize(client, "logistic", tolerance=0, request=request)
    assert job["state"] == "failed", job
    assert "7 of 7 rows" in job["error"] or " of 7 rows" in job["error"], "checked on the request given"
    assert "output probabilities:" in job["error"] and "by more than the tolerance 0 " in job["error"]
    assert not [d for d in job["result"]["differences"] if d["output"] == "label"], "labels agree"


def test_what_cannot_be_converted_is_refused_before_any_job(
    team, models, optimize, django_capture_on_commit_callbacks
):
    client = team.contributor.client()
    register(client, "custom", b"weights", "custom_model")
    answer, _ = optimize(client, "custom")
    assert answer.status_code == 400
    assert "custom:1 is a custom_model: only MLflow scikit-learn models" in answer.json()["error"]["message"]

    register(client, "logistic", models["logistic"])
    for body, field, words in (
        ({"to": "tflite"}, "to", "Studio converts to onnx only"),
        ({"tolerance": "close"}, "tolerance", "Give a number from 0 to 1"),
        ({"tolerance": -1}, "tolerance", "Give a number from 0 to 1"),
        ({"request": "{not json"}, "request", "The request is not JSON"),
        ({"request": {"input_data": {"columns": ["f0"], "data": [[1.0]]}}}, "request", "f1"),
        ({"request": {"input_data": {"columns": COLUMNS, "data": []}}}, "request", "holds no rows"),
        ({"speed": "max"}, "speed", "is not an optimize setting"),
    ):
        answer, _ = optimize(client, "logistic", **body)
        assert answer.status_code == 400, body
        details = answer.json()["error"]["details"]
        assert words in " ".join(details[field]), details
    from endpoints.models import Job

    assert not Job.objects.filter(kind="optimize_model").exists()
    # One at a time: a version being optimized refuses a second job.
    with django_capture_on_commit_callbacks(execute=False):
        first = client.post("/api/v1/models/logistic/versions/1/optimize/", {}, format="json")
    assert first.status_code == 202 and first.json()["job"]["state"] == "queued"
    second, _ = optimize(client, "logistic")
    assert second.status_code == 409 and "is being optimized already" in second.json()["error"]["message"]
    refused, _ = optimize(team.reader.client(), "logistic")
    assert refused.status_code == 403
    missing, _ = optimize(client, "logistic", version="9")
    assert missing.status_code == 404 and "has no version '9'" in missing.json()["error"]["message"]


def test_the_version_page_optimizes_and_shows_the_speedup_and_the_new_version(
    team, models, django_capture_on_commit_callbacks
):
    from studio.testing import signed_in

    register(team.contributor.client(), "forest", models["forest"])
    page = signed_in(team.contributor.user)
    before = page.get("/models/forest/versions/1/").content.decode()
    assert 'id="optimize"' in before and 'hx-post="/models/forest/versions/1/optimize/"' in before
    with django_capture_on_commit_callbacks(execute=True):
        started = page.post(
            "/models/forest/versions/1/optimize/", {"tolerance": "1e-4"}, HTTP_HX_REQUEST="true"
        )
    assert started.status_code == 200 and "<html" not in started.content.decode()
    card = page.get("/models/forest/versions/1/optimize/", HTTP_HX_REQUEST="true").content.decode()
    assert 'id="optimize-result"' in card and "×" in card, card
    assert '<a href="/models/forest/versions/2/">forest version 2</a>' in card
    assert "hx-trigger" not in card, "a finished job's card stops polling"

    reader = signed_in(team.reader.user)
    assert reader.post("/models/forest/versions/1/optimize/", HTTP_HX_REQUEST="true").status_code == 403
    assert (
        'hx-post="/models/forest/versions/1/optimize/"'
        not in reader.get("/models/forest/versions/1/").content.decode()
    )


def test_the_version_page_says_why_a_version_cannot_be_optimized(team):
    from studio.testing import signed_in

    register(team.contributor.client(), "custom", b"weights", "custom_model")
    page = signed_in(team.contributor.user).get("/models/custom/versions/1/").content.decode()
    assert "only MLflow scikit-learn models (saved with mlflow.sklearn) can be converted" in page
    assert 'hx-post="/models/custom/versions/1/optimize/"' not in page


@pytest.fixture(scope="session")
def hostile_model(tmp_path_factory) -> callable:
    """A model whose pickle is `wrap(estimator)`: code that runs when the converter unpickles it."""

    def make(wrap) -> bytes:
        import cloudpickle
        from sklearn.linear_model import LogisticRegression

        from registry.tests import hostile

        root = tmp_path_factory.mktemp("hostile")
        X = _frame(300)
        labels = (X["f0"] > 0).astype(int)
        folder = _save(LogisticRegression(), X, labels, root / "model", serialization_format="cloudpickle")
        estimator = LogisticRegression().fit(X, labels)
        # By value: the converter's sandbox shows it only the model server's source, not Studio's tests.
        cloudpickle.register_pickle_by_value(hostile)
        try:
            pickled = cloudpickle.dumps(wrap(estimator))
        finally:
            cloudpickle.unregister_pickle_by_value(hostile)
        (folder / "model.pkl").write_bytes(pickled)
        return zipped(folder)

    return make


def test_a_link_the_models_code_leaves_in_the_output_is_refused_not_registered(
    team, hostile_model, optimize, settings
):
    secret = Path(settings.STUDIO_HOME) / "secret_key"
    secret.write_text("the installation's secret")
    client = team.contributor.client()
    from registry.tests.hostile import Leaky

    register(client, "hostile", hostile_model(lambda estimator: Leaky(estimator, str(secret), "leak")))
    _, job = optimize(client, "hostile")
    assert job["state"] == "failed", job
    assert "'leak' as a link" in job["error"] and "nothing of it was registered" in job["error"], job["error"]
    assert "the installation's secret" not in str(job)
    versions = client.get("/api/v1/models/hostile/versions/").json()["results"]
    assert [v["version"] for v in versions] == ["1"]
    assert not list((Path(settings.STUDIO_HOME) / "tmp").iterdir()), "the scratch folder is removed"


def test_a_double_click_on_the_page_says_a_job_is_running(team, models, django_capture_on_commit_callbacks):
    from studio.testing import signed_in

    register(team.contributor.client(), "forest", models["forest"])
    page = signed_in(team.contributor.user)
    with django_capture_on_commit_callbacks(execute=False):
        first = page.post(
            "/models/forest/versions/1/optimize/", {"tolerance": "1e-4"}, HTTP_HX_REQUEST="true"
        )
        second = page.post(
            "/models/forest/versions/1/optimize/", {"tolerance": "1e-4"}, HTTP_HX_REQUEST="true"
        )
    assert first.status_code == 200
    assert second.status_code == 400 and "is being optimized already" in second.content.decode()


def test_one_profile_runs_at_a_time(team, models, django_capture_on_commit_callbacks):
    client = team.contributor.client()
    register(client, "logistic", models["logistic"])
    register(client, "forest", models["forest"])
    with django_capture_on_commit_callbacks(execute=False):
        first = client.post("/api/v1/models/logistic/versions/1/profile/", {}, format="json")
        second = client.post("/api/v1/models/forest/versions/1/profile/", {}, format="json")
    assert first.status_code == 202
    assert second.status_code == 409, second.json()
    assert "A profile is running (job" in second.json()["error"]["message"]


def test_the_sweep_fails_a_job_whose_worker_died_and_undoes_what_it_held(
    team, models, settings, django_capture_on_commit_callbacks
):
    import subprocess
    from datetime import timedelta

    from django.utils import timezone

    from endpoints import supervision
    from endpoints.jobs import hold
    from endpoints.models import Job
    from serving import processes

    client = team.contributor.client()
    register(client, "logistic", models["logistic"])
    with django_capture_on_commit_callbacks(execute=False):
        started = client.post("/api/v1/models/logistic/versions/1/optimize/", {}, format="json")
    job = Job.objects.get(pk=started.json()["job"]["id"])
    # As a worker killed mid-conversion leaves it: a converter's group running, its scratch folder.
    converter = subprocess.Popen(["sleep", "300"], start_new_session=True)
    scratch = Path(settings.STUDIO_HOME) / "tmp" / "build-left"
    scratch.mkdir(parents=True)
    hold(
        job, group={"pid": converter.pid, "start": processes.start_ticks(converter.pid)}, scratch=str(scratch)
    )
    silent = timezone.now() - timedelta(minutes=11)
    Job.objects.filter(pk=job.pk).update(state="running", heartbeat_at=silent)

    swept = supervision.sweep()
    assert swept["failed_model_jobs"] == [str(job.pk)]
    assert converter.wait(timeout=10) == -9 and not scratch.exists()
    failed = client.get(f"/api/v1/jobs/{job.pk}/").json()
    assert failed["state"] == "failed" and "The worker running this job stopped answering" in failed["error"]
    with django_capture_on_commit_callbacks(execute=False):
        second = client.post("/api/v1/models/logistic/versions/1/optimize/", {}, format="json")
    assert second.status_code == 202, "the version is free again"


def test_a_queued_job_whose_message_was_lost_is_queued_again(
    team, models, optimize, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from endpoints import supervision
    from endpoints.models import Job

    client = team.contributor.client()
    register(client, "logistic", models["logistic"])
    with django_capture_on_commit_callbacks(execute=False):  # committed, never sent
        started = client.post("/api/v1/models/logistic/versions/1/optimize/", {}, format="json")
    job_id = started.json()["job"]["id"]
    assert Job.objects.get(pk=job_id).arguments == {"tolerance": 1e-4, "request": None}
    assert supervision.sweep()["requeued_model_jobs"] == [], "not yet: it may be on its way"
    Job.objects.filter(pk=job_id).update(created_at=timezone.now() - timedelta(minutes=2))
    assert supervision.sweep()["requeued_model_jobs"] == [job_id]
    done = client.get(f"/api/v1/jobs/{job_id}/").json()
    assert done["state"] == "succeeded" and done["result"]["version"] == "2", done


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing to confine the converter to")
def test_the_converter_runs_under_its_sizes_cpus(team, hostile_model, optimize):
    from registry.optimize import CONVERTER_SIZE
    from registry.tests.hostile import CpuCounter

    client = team.contributor.client()
    register(client, "counted", hostile_model(CpuCounter))
    _, job = optimize(client, "counted")
    assert job["state"] == "succeeded", job
    download = client.get("/api/v1/models/counted/versions/2/download")
    with zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))) as archive:
        name = next(n for n in archive.namelist() if n.endswith("cpus.txt"))
        assert archive.read(name) == b"1", f"{CONVERTER_SIZE} has one vCPU"
