"""The batch scoring process's no-code path hands the model a file's rows as one array of the signature's
dtype, without the JSON a request would go through: these pin that it scores exactly as the model does,
and that what only parsing can check still fails the file as parsing would."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.batch import MlflowBatchScorer
from serving.inputs import frame_input
from serving.signature import parse_signature


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    features = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    model = LogisticRegression().fit(features, (features["a"] > features["c"]).astype(int))
    path = tmp_path_factory.mktemp("batch-scorer") / "model"
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="cloudpickle",
        signature=infer_signature(features, model.predict(features)),
        pip_requirements=["scikit-learn"],
    )
    return path


def _scored(model_dir: Path, folder: Path, frames: dict[str, pd.DataFrame]) -> tuple[Path, dict]:
    for name, frame in frames.items():
        frame.to_csv(folder / name, index=False)
    scorer = MlflowBatchScorer(model_dir)
    scorer.load()
    names = sorted(frames)
    reply = scorer.score([str(folder / name) for name in names], names, folder / "part.csv")
    return folder / "part.csv", reply


def test_it_scores_each_file_as_the_model_predicts_its_rows_whatever_their_column_order(model_dir, tmp_path):
    import mlflow.pyfunc

    rng = np.random.default_rng(8)
    shuffled = pd.DataFrame(rng.normal(size=(25, 3)), columns=["c", "a", "b"]).assign(extra=1.5)
    whole_numbers = pd.DataFrame(rng.integers(-3, 3, size=(10, 3)), columns=["a", "b", "c"])
    written, reply = _scored(model_dir, tmp_path, {"1.csv": shuffled, "2.csv": whole_numbers})
    part = pd.read_csv(written)

    assert reply == {"items": 2, "items_failed": 0, "rows": 35}
    model = mlflow.pyfunc.load_model(str(model_dir))
    expected = np.concatenate(
        [model.predict(shuffled[["a", "b", "c"]]), model.predict(whole_numbers.astype(float))]
    )
    assert list(part.columns) == ["file", "row", "prediction"]
    assert part["file"].tolist() == ["1.csv"] * 25 + ["2.csv"] * 10
    assert part["row"].tolist() == list(range(25)) + list(range(10))
    assert part["prediction"].tolist() == expected.tolist()


def test_a_file_missing_a_column_fails_as_a_request_missing_it_would(model_dir, tmp_path, capsys):
    frame = pd.DataFrame({"a": [1.0], "b": [2.0]})
    assert frame_input(frame, parse_signature({"inputs": '[{"type": "double", "name": "a"}]'})) is not None
    written, reply = _scored(model_dir, tmp_path, {"1.csv": frame})

    assert reply == {"items": 1, "items_failed": 1, "rows": 0}
    assert "Missing required column 'c'" in capsys.readouterr().err
    assert written.read_text() == "\n"  # no rows, and no header: the merge takes the first one there is


def test_it_leaves_to_parsing_what_does_not_cast_exactly():
    long_columns = parse_signature({"inputs": '[{"type": "long", "name": "a"}]'})
    assert frame_input(pd.DataFrame({"a": [1.5]}), long_columns) is None
    assert (
        frame_input(
            pd.DataFrame({"a": ["x"]}), parse_signature({"inputs": '[{"type": "double", "name": "a"}]'})
        )
        is None
    )
    assert frame_input(pd.DataFrame({"a": [2]}), long_columns).array.dtype == np.int64
