"""Studio's schema decorators, inference-schema's, and the settings parser, without a server."""

from __future__ import annotations

import numpy as np
import pytest

from serving.errors import BadInput
from serving.schema import (
    NumpyParameterType,
    StandardPythonParameterType,
    input_schema,
    output_schema,
    rawhttp,
)
from serving.schema_binding import read_schema
from serving.settings import ConfigError, load_settings


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
@input_schema("scale", StandardPythonParameterType(1.0))
@output_schema(NumpyParameterType(np.array([1.0])))
def studio_run(data, scale=1.0):
    return (data.sum(axis=1) * scale).tolist()


def test_studio_decorators_convert_when_called_directly():
    assert studio_run([[1, 2], [3, 4]], scale=2) == [6.0, 14.0]


def test_studio_decorators_bind_a_request_body_and_report_bad_fields():
    schema = read_schema(studio_run)
    kwargs = schema.bind({"data": [[1, 2]], "scale": 3})
    assert isinstance(kwargs["data"], np.ndarray) and kwargs["scale"] == 3.0
    assert schema.target(**kwargs) == [9.0]
    with pytest.raises(BadInput, match="Field 'data'.*size 2 on dimension 1"):
        schema.bind({"data": [[1, 2, 3]]})
    with pytest.raises(BadInput, match="Field 'scale'.*expected a number"):
        schema.bind({"data": [[1, 2]], "scale": "big"})
    with pytest.raises(BadInput, match="Missing field"):
        schema.bind({"scale": 1})


def test_studio_decorators_describe_themselves_in_openapi():
    schema = read_schema(studio_run)
    assert schema.input_swagger["properties"]["data"]["items"]["items"] == {
        "type": "number",
        "format": "double",
    }
    assert schema.input_swagger["example"] == {"data": [[1.0, 2.0]], "scale": 1.0}
    assert schema.output_swagger["format"] == "numpy.ndarray"


def test_inference_schema_metadata_is_read_from_the_real_package():
    from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType as IsNumpy
    from inference_schema.schema_decorators import input_schema as is_input

    @is_input("values", IsNumpy(np.array([[1, 2, 3]], dtype=np.int64)))
    def run(values):
        return values.dtype.name

    schema = read_schema(run)
    assert schema.target(**schema.bind({"values": [[1, 2, 3]]})) == "int64"
    with pytest.raises(BadInput, match="'values'"):
        schema.bind({"values": [[1, 2]]})
    assert schema.input_swagger["properties"]["values"]["format"] == "numpy.ndarray"


def test_a_plain_run_has_no_schema_and_rawhttp_marks_it():
    def run(raw_data):
        return raw_data

    assert read_schema(run) is None
    assert rawhttp(run).__studio_rawhttp__ is True


def test_settings_come_from_flags_over_the_environment(tmp_path):
    (tmp_path / "score.py").write_text("def run(x): return x\n")
    env = {
        "AZUREML_MODEL_DIR": str(tmp_path),
        "AZUREML_SOURCE_DIRECTORY": str(tmp_path),
        "AZUREML_ENTRY_SCRIPT": "score.py",
        "WORKER_COUNT": "3",
        "SCORING_TIMEOUT_MS": "2500",
        "STUDIO_MAX_BATCH_SIZE": "16",
        "STUDIO_MAX_BATCH_DELAY_MS": "2.5",
    }
    settings = load_settings(["--workers", "2"], env)
    assert settings.workers == 2 and settings.timeout_ms == 2500 and settings.batching
    assert settings.script_path == (tmp_path / "score.py").resolve()
    assert settings.max_batch_delay_ms == 2.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_COUNT": "many"}, "WORKER_COUNT='many' is not a whole number"),
        ({"SCORING_TIMEOUT_MS": "0"}, "SCORING_TIMEOUT_MS=0 is too small"),
        ({"AZUREML_ENTRY_SCRIPT": "missing.py"}, "does not exist"),
        ({"AZUREML_MODEL_DIR": "/no/such/dir"}, "no such file or folder"),
        ({"STUDIO_INSTALLATION_CHECK_S": "0"}, "STUDIO_INSTALLATION_CHECK_S=0.0 is too small"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable(tmp_path, env, message):
    base = {"STUDIO_MODEL_DIR": str(tmp_path), "AZUREML_SOURCE_DIRECTORY": str(tmp_path)}
    with pytest.raises(ConfigError, match=message):
        load_settings([], {**base, **env})


def test_nothing_to_serve_is_refused():
    with pytest.raises(ConfigError, match="Nothing to serve"):
        load_settings([], {})
