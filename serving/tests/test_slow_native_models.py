"""A native (scikit-learn) model whose predict is slow is called in the worker's model thread, not on its
event loop: while one call runs, the worker still answers its probes, and the scoring timeout holds."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from serving.tests.conftest import Server
from studio.testkit import Gate, until

SLOW_MODULE = '''
import os
import socket
import time

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin


class SlowRegressor(RegressorMixin, BaseEstimator):
    """y = a + b, in no less than 20 ms; a row whose a is -1 waits for the gate named by SLOW_MODEL_GATE
    to open (at most 60 s)."""

    def fit(self, X, y=None):
        self.n_features_in_ = 2
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        if (X[:, 0] == -1).any():
            host, port = os.environ["SLOW_MODEL_GATE"].rsplit(":", 1)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.02)
        time.sleep(0.02)
        return X[:, 0] + X[:, 1]
'''


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory):
    """A one-worker server of the slow model, its timeout 1.5 s, and the gate its held rows wait on."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    root = tmp_path_factory.mktemp("slow-model")
    code = root / "code"
    code.mkdir()
    (code / "slow_model.py").write_text(SLOW_MODULE)
    sys.path.insert(0, str(code))
    try:
        from slow_model import SlowRegressor

        X = np.array([[1.0, 2.0], [3.0, 4.0]])
        mlflow.sklearn.save_model(
            SlowRegressor().fit(X),
            root / "model",
            serialization_format="cloudpickle",
            code_paths=[str(code / "slow_model.py")],
            signature=infer_signature(X, X.sum(axis=1)),
            pip_requirements=["scikit-learn"],
        )
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("slow_model", None)
    gate = Gate()
    env = {"WORKER_COUNT": "1", "SCORING_TIMEOUT_MS": "1500", "SLOW_MODEL_GATE": gate.address}
    server = Server("slow-native", ["--model-dir", str(root / "model")], env, tmp_path_factory.mktemp("logs"))
    yield server, gate
    gate.open()
    server.stop()


def _score(server: Server, rows: list) -> httpx.Response:
    return httpx.post(f"{server.url}/score", json={"inputs": rows}, timeout=30)


def test_a_slow_model_leaves_the_worker_answering_probes_and_timeouts(slow):
    server, gate = slow
    server.wait_ready()
    for n in range(10):  # the worker learns that this model's calls are slow
        answer = _score(server, [[n, 1.0]])
        assert answer.status_code == 200 and answer.json() == {"predictions": [n + 1.0]}
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(_score, server, [[-1.0, 1.0]])
        assert until(lambda: server.metric("studio_requests_in_flight") >= 1, timeout=10)
        # On the event loop, the held call would keep the probe from being read until the gate opens.
        probe = httpx.get(f"{server.url}/health/live", timeout=5)
        assert probe.status_code == 200 and not held.done()
        answer = held.result(timeout=30)
    assert answer.status_code == 408, answer.text
    assert "SCORING_TIMEOUT_MS (1500 ms)" in answer.json()["error"]["message"]
    gate.open()  # the call ends before the worker would be recycled for it
    assert until(lambda: _score(server, [[2.0, 2.0]]).status_code == 200, timeout=20)
    assert _score(server, [[2.0, 2.0]]).json() == {"predictions": [4.0]}
