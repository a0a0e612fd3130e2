"""Shared fixtures: tiny models built once per session, and real server processes on loopback ports.

Every server is started at the beginning of the session, all at once, so their (slow) imports of
scikit-learn and MLflow overlap; a test then waits only for the server it talks to.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving import replica_key
from serving.tests.onnx_builder import linear_model

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
_OWN_ENV = (
    "AZUREML_",
    "STUDIO_",
    "WORKER_COUNT",
    "SCORING_TIMEOUT_MS",
    "OMP_NUM_THREADS",
    "MLFLOW_ALLOW_PICKLE",
)

FUSSY_MODULE = '''
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin


class FussyRegressor(RegressorMixin, BaseEstimator):
    """y = 2a + 3b + 1, exactly; refuses rows whose first value is negative."""

    def fit(self, X, y=None):
        self.n_features_in_ = 2
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        if (X[:, 0] < 0).any():
            raise ValueError("negative input")
        return 2 * X[:, 0] + 3 * X[:, 1] + 1
'''

PYFUNC_MODULE = """
import mlflow
import pandas as pd


class Scaler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        scale = (params or {}).get("scale", 1.0)
        return pd.Series(model_input["a"] * scale + model_input["b"])


mlflow.models.set_model(Scaler())
"""


def linear(a: float, b: float) -> float:
    """What the test models compute."""
    return 2 * a + 3 * b + 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `python -m serving.server` process, its stdout captured to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        # What its own checks present: the replica key it was started with, if any.
        key = env.get(replica_key.VARIABLE)
        self.headers = replica_key.headers(key) if key else {}
        base = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV)}
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**base, "PYTHONUNBUFFERED": "1", **env},
            cwd=REPO,
        )

    def wait_ready(self, timeout: float = 300.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server {self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health/ready", headers=self.headers, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"server {self.name} not ready after {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def logs(self) -> list[dict]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"unparsed": line})
        return lines

    def worker_pids(self) -> list[int]:
        """The current process id of each worker slot, in slot order."""
        current: dict[int, int] = {}
        for line in self.logs():
            if line.get("event") == "worker_started":
                current[int(line["worker"])] = int(line["worker_pid"])
        return [current[slot] for slot in sorted(current)]

    def metric(self, name: str) -> float:
        total = 0.0
        for line in httpx.get(f"{self.url}/metrics", headers=self.headers).text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _write_mlmodel_onnx(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(linear_model([2.0, 3.0], 1.0))
    (folder / "MLmodel").write_text(
        textwrap.dedent(
            """\
            flavors:
              onnx:
                code: null
                data: model.onnx
                onnx_version: 1.16.0
                providers: [CPUExecutionProvider]
              python_function:
                data: model.onnx
                loader_module: mlflow.onnx
                python_version: 3.11.7
            mlflow_version: 3.17.2
            signature:
              inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2]}}]'
              outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 1]}}]'
              params: null
            """
        )
    )


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every model the tests serve, saved by MLflow itself where MLflow has a saver."""
    import joblib
    import mlflow.pyfunc
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    reqs = ["scikit-learn"]

    X = rng.uniform(-5, 5, size=(20, 2))
    y = 2 * X[:, 0] + 3 * X[:, 1] + 1
    tensor_model = LinearRegression().fit(X, y)
    # skops is MLflow 3's default serialization format for scikit-learn.
    mlflow.sklearn.save_model(
        tensor_model, root / "tensor", signature=infer_signature(X, y), pip_requirements=reqs
    )

    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 40),
            "income": rng.uniform(1e3, 9e3, 40),
            "city": rng.choice(["paris", "lyon", "nice"], 40),
        }
    )
    labels = (frame["income"] > 5e3).astype(int)
    pipeline = Pipeline(
        [
            ("prep", ColumnTransformer([("city", OneHotEncoder(), ["city"])], remainder="passthrough")),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame, labels)
    mlflow.sklearn.save_model(
        pipeline,
        root / "mixed",
        serialization_format="pickle",
        signature=infer_signature(frame, pipeline.predict(frame)),
        pip_requirements=reqs,
    )

    code = root / "code_src"
    code.mkdir()
    (code / "fussy_model.py").write_text(FUSSY_MODULE)
    sys.path.insert(0, str(code))
    try:
        from fussy_model import FussyRegressor

        fussy = FussyRegressor().fit(X, y)
        mlflow.sklearn.save_model(
            fussy,
            root / "fussy",
            serialization_format="cloudpickle",
            code_paths=[str(code / "fussy_model.py")],
            signature=infer_signature(X, y),
            pip_requirements=reqs,
        )
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("fussy_model", None)

    _write_mlmodel_onnx(root / "onnx")

    (code / "pyfunc_model.py").write_text(PYFUNC_MODULE)
    ab = pd.DataFrame({"a": [1.0, 2.0], "b": [0.5, 0.25]})
    mlflow.pyfunc.save_model(
        root / "pyfunc",
        python_model=str(code / "pyfunc_model.py"),
        signature=infer_signature(ab, pd.Series([1.5, 2.25]), params={"scale": 1.0}),
        pip_requirements=["mlflow"],
    )

    azure = root / "azure"
    azure.mkdir()
    joblib.dump(Ridge(alpha=1e-9).fit(X, y), azure / "sklearn_regression_model.joblib")

    for version, coef in (("1", [1.0, 1.0, 1.0]), ("2", [1.0, 10.0, 100.0])):
        folder = root / "multi" / "adder" / version
        folder.mkdir(parents=True)
        (folder / "coef.json").write_text(json.dumps({"coef": coef}))
    (root / "empty").mkdir()
    return root


SCRIPT = ["--code", str(SCRIPTS), "--scoring-script"]


def _server_specs(models: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    code = str(SCRIPTS)
    multi = str(models / "multi")
    return {
        "tensor": (["--model-dir", str(models / "tensor")], {}),
        "mixed": (["--model-dir", str(models / "mixed")], {}),
        "batching": (
            ["--model-dir", str(models / "fussy")],
            {"STUDIO_MAX_BATCH_SIZE": "64", "STUDIO_MAX_BATCH_DELAY_MS": "5"},
        ),
        "onnx": (["--model-dir", str(models / "onnx")], {}),
        "pyfunc": ([], {"AZUREML_MODEL_DIR": str(models / "pyfunc")}),
        "azure": (
            [*SCRIPT, "score_azure.py", "--model-dir", str(models / "azure")],
            {"STUDIO_MAX_BODY_BYTES": "65536"},
        ),
        "inference_schema": ([*SCRIPT, "score_inference_schema.py", "--model-dir", multi], {}),
        "studio_schema": (
            [],
            {"AZUREML_SOURCE_DIRECTORY": code, "STUDIO_SCORING_SCRIPT": "score_studio_schema.py"},
        ),
        "raw": ([], {"AZUREML_SOURCE_DIRECTORY": code, "AZUREML_ENTRY_SCRIPT": "score_raw.py"}),
        "slow": ([*SCRIPT, "score_slow.py"], {"WORKER_COUNT": "2", "SCORING_TIMEOUT_MS": "1000"}),
    }


@pytest.fixture(scope="session")
def servers(models: Path, tmp_path_factory: pytest.TempPathFactory):
    log_dir = tmp_path_factory.mktemp("server-logs")
    started = {name: Server(name, args, env, log_dir) for name, (args, env) in _server_specs(models).items()}
    yield started
    for server in started.values():  # all at once: each takes a graceful shutdown's time
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
    for server in started.values():
        server.stop()


@pytest.fixture
def start_server(tmp_path: Path):
    """Start an extra, test-private server: start_server(name, args, env) -> Server (not waited for)."""
    started: list[Server] = []

    def start(name: str, args: list[str], env: dict[str, str] | None = None) -> Server:
        server = Server(name, args, env or {}, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _ready(name: str):
    @pytest.fixture
    def fixture(servers: dict[str, Server]) -> Server:
        return servers[name].wait_ready()

    return fixture


tensor_server = _ready("tensor")
mixed_server = _ready("mixed")
batching_server = _ready("batching")
onnx_server = _ready("onnx")
pyfunc_server = _ready("pyfunc")
azure_server = _ready("azure")
inference_schema_server = _ready("inference_schema")
studio_schema_server = _ready("studio_schema")
raw_server = _ready("raw")
slow_server = _ready("slow")


@pytest.fixture(scope="module")
def plane():
    """A control plane for gateway tests: serves the route table the test sets, takes acknowledgements."""
    from serving.tests import gateway_support as gs

    cp = gs.FakeControlPlane().start()
    yield cp
    cp.stop()


@pytest.fixture(scope="module")
def signer():
    """Signs `aml_token` scoring tokens as the control plane does."""
    from serving.tests import gateway_support as gs

    return gs.TokenSigner()
