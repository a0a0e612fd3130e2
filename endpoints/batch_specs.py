"""Reading batch endpoint and batch deployment specifications in Azure ML CLI v2's shape.

`batchEndpoint.schema.json` and `modelBatchDeployment.schema.json` files written for `az ml` are accepted
unchanged, including the older spelling that put the batch settings (`mini_batch_size`, `retry_settings`,
...) at the top level instead of under `settings:`. Model, code and environment references are read by the
online deployment's parsers (endpoints.specs), so both kinds of deployment refer to things alike. A field
Studio does not know is kept as a warning on the deployment, never silently dropped; a bad value is a
refusal that names the field.
"""

from endpoints.choices import AuthModeChoices, OutputActionChoices
from endpoints.models import BatchDeployment
from endpoints.specs import (
    MAX_INT,
    SILENT_FIELDS,
    DeploymentSpec,
    resolve_code,
    resolve_environment,
    resolve_model,
)
from studio.errors import Invalid

ENDPOINT_FIELDS = {"name", "description", "tags", "auth_mode", "defaults"}

DEPLOYMENT_FIELDS = {
    "name",
    "endpoint_name",
    "type",
    "description",
    "tags",
    "model",
    "code_configuration",
    "environment",
    "compute",
    "resources",
    "settings",
}
# The batch settings, read under `settings:` or, in the older spelling, at the top level.
SETTINGS_FIELDS = {
    "max_concurrency_per_instance",
    "mini_batch_size",
    "output_action",
    "output_file_name",
    "retry_settings",
    "error_threshold",
    "logging_level",
    "environment_variables",
}
# Older files put instance_count at the top level too.
LEGACY_FIELDS = SETTINGS_FIELDS | {"instance_count"}
RETRY_FIELDS = {"max_retries", "timeout"}
# Azure's REST API spells them AppendRow / SummaryOnly, its YAML append_row / summary_only.
OUTPUT_ACTIONS = {choice.replace("_", ""): choice for choice in OutputActionChoices.values}
LOGGING_LEVELS = ("debug", "info", "warning", "error", "critical")


def _error(field_name: str, message: str) -> Invalid:
    return Invalid({field_name: [message]})


def _mapping(value, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error(key, "must be a mapping of settings.")
    return value


# Runner slots are Celery tasks and lease rows: instances and concurrency are each bounded, as Azure's
# compute clusters bound them.
MAX_PARALLEL = 1000


def _whole(value, key: str, minimum: int, maximum: int = MAX_INT) -> int:
    """A whole number from `minimum` to `maximum`; YAML that quotes a number ("10") is read as the number."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _error(key, f"must be a whole number of at least {minimum}, not {repr(value)[:40]}.")
    if value > maximum:
        raise _error(key, f"must be a whole number of at most {maximum}.")
    return value


def _text(value, key: str, column: str | None = None) -> str:
    text = "" if value is None else str(value)
    if column:
        max_length = BatchDeployment._meta.get_field(column).max_length
        if len(text) > max_length:
            raise _error(key, f"must be at most {max_length} characters, not {len(text)}.")
    return text


def _tags(value, key: str = "tags") -> dict:
    return {str(k): str(v) for k, v in _mapping(value, key).items()}


def _unknown(data: dict, known: set[str], where: str, warnings: list[str]) -> None:
    for key in sorted(set(data) - known - SILENT_FIELDS):
        warnings.append(f"{where}{key} is not a field Studio knows; it was ignored.")


def output_file_name(value, key: str = "output_file_name") -> str:
    """A file name for a job's output: one plain name, no folder, no control characters."""
    name = _text(value, key, "output_file_name").strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise _error(key, "must be a plain file name such as predictions.csv, without folders.")
    if any(ord(character) < 32 or ord(character) == 127 for character in name):
        raise _error(key, "must not hold control characters.")
    if name == "summary.json":
        raise _error(key, "summary.json is the job's summary; choose another name.")
    return name


# What an invocation may set for its own job, as `az ml batch-endpoint invoke --mini-batch-size
# --instance-count` do; everything else is the deployment's.
INVOCATION_SETTINGS = ("mini_batch_size", "instance_count")


def invocation_settings(data: dict) -> dict:
    """The job settings an invocation overrides, checked as the deployment's are."""
    values = {}
    for key in INVOCATION_SETTINGS:
        if data.get(key) not in (None, ""):
            values[key] = _whole(data[key], key, 1, MAX_PARALLEL if key == "instance_count" else MAX_INT)
    return values


def parse_batch_endpoint(data: dict, *, partial: bool = False) -> tuple[dict, list[str]]:
    """Check a batch endpoint body: (model field values, warnings). `partial` for updates, where `name`
    is the endpoint's and is not read."""
    if not isinstance(data, dict):
        raise Invalid("A batch endpoint must be a mapping of Azure ML batch endpoint fields.")
    warnings: list[str] = []
    _unknown(data, ENDPOINT_FIELDS, "", warnings)
    values: dict = {}
    if "name" in data and not partial:
        values["name"] = _text(data["name"], "name")
    elif not partial:
        raise _error("name", "is required.")
    if "description" in data:
        values["description"] = _text(data["description"], "description")
    if "tags" in data:
        values["tags"] = _tags(data["tags"])
    if "auth_mode" in data:
        mode = str(data["auth_mode"]).lower()
        if mode not in AuthModeChoices.values:
            raise _error("auth_mode", "must be key or aml_token.")
        values["auth_mode"] = mode
    if "defaults" in data:
        defaults = _mapping(data["defaults"], "defaults")
        _unknown(defaults, {"deployment_name"}, "defaults.", warnings)
        if "deployment_name" in defaults:
            values["default_deployment"] = _text(defaults["deployment_name"], "defaults.deployment_name")
    return values, warnings


def _batch_setting(data: dict, settings: dict, key: str):
    """The setting under `settings:` or at the top level (the older spelling); both must agree."""
    if key in settings and key in data and settings[key] != data[key]:
        raise _error(
            f"settings.{key}",
            f"is given twice with different values ({settings[key]!r} under settings, {data[key]!r} at the "
            "top level); keep one.",
        )
    return settings.get(key, data.get(key))


def parse_batch_deployment(data: dict, *, partial: bool = False) -> DeploymentSpec:
    """Check a batch deployment body and turn it into BatchDeployment field values and warnings."""
    if not isinstance(data, dict):
        raise Invalid("A batch deployment must be a mapping of Azure ML batch deployment fields.")
    warnings: list[str] = []
    _unknown(data, DEPLOYMENT_FIELDS | LEGACY_FIELDS, "", warnings)
    settings = _mapping(data.get("settings"), "settings")
    _unknown(settings, SETTINGS_FIELDS, "settings.", warnings)
    resources = _mapping(data.get("resources"), "resources")
    _unknown(resources, {"instance_count"}, "resources.", warnings)
    values: dict = {}
    kind = data.get("type", "model")
    if kind != "model":
        raise _error("type", f"must be model: Studio runs model deployments only, not {str(kind)[:40]!r}.")
    if "description" in data:
        values["description"] = _text(data["description"], "description")
    if "tags" in data:
        values["tags"] = _tags(data["tags"])
    if "model" in data:
        values["model_version"] = resolve_model(data["model"])
    elif not partial:
        raise _error("model", "is required: azureml:name:version of a registered model.")
    if "code_configuration" in data:
        if data["code_configuration"] is None:
            values["code_digest"], values["scoring_script"] = "", ""
        else:
            values["code_digest"], values["scoring_script"] = resolve_code(data)
    if "environment" in data:
        values["environment_version"], values["environment"] = resolve_environment(
            data["environment"], warnings
        )
        if (values["environment"] or {}).get("image"):
            warnings.append(
                f"environment.image {values['environment']['image']!r} is not used: batch jobs run in a "
                "Python environment built from conda_file/pip_requirements."
            )
    if "compute" in data:
        values["compute"] = _text(data["compute"], "compute", "compute")
        if values["compute"]:
            warnings.append(
                f"compute {values['compute']!r} is kept but not used: Studio's workers run batch jobs; "
                "resources.instance_count and settings.max_concurrency_per_instance set how many at once."
            )
    instance_count = _batch_setting(data, resources, "instance_count")
    if instance_count is not None:
        key = "resources.instance_count" if "instance_count" in resources else "instance_count"
        values["instance_count"] = _whole(instance_count, key, 1, MAX_PARALLEL)
    values.update(_settings(data, settings))
    model = values.get("model_version")
    if model is not None and model.type == "custom_model" and not values.get("code_digest") and not partial:
        raise _error(
            "code_configuration",
            "a custom_model needs code_configuration with a scoring_script whose run(mini_batch) scores "
            "files; only an mlflow_model deploys without code.",
        )
    return DeploymentSpec(values, warnings)


def _settings(data: dict, settings: dict) -> dict:
    values: dict = {}

    def given(key: str):
        return _batch_setting(data, settings, key)

    def label(key: str) -> str:
        return f"settings.{key}" if key in settings else key

    if (value := given("max_concurrency_per_instance")) is not None:
        values["max_concurrency_per_instance"] = _whole(
            value, label("max_concurrency_per_instance"), 1, MAX_PARALLEL
        )
    if (value := given("mini_batch_size")) is not None:
        values["mini_batch_size"] = _whole(value, label("mini_batch_size"), 1)
    if (value := given("output_action")) is not None:
        action = str(value).lower().replace("_", "")
        if action not in OUTPUT_ACTIONS:
            raise _error(label("output_action"), "must be append_row or summary_only.")
        values["output_action"] = OUTPUT_ACTIONS[action]
    if (value := given("output_file_name")) is not None:
        values["output_file_name"] = output_file_name(value, label("output_file_name"))
    if (value := given("retry_settings")) is not None:
        key = label("retry_settings")
        retry = _mapping(value, key)
        unknown = sorted(set(retry) - RETRY_FIELDS)
        if unknown:
            raise _error(key, f"takes max_retries and timeout (seconds), not {', '.join(unknown)}.")
        if "max_retries" in retry:
            values["max_retries"] = _whole(retry["max_retries"], f"{key}.max_retries", 0)
        if "timeout" in retry:
            values["timeout_s"] = _whole(retry["timeout"], f"{key}.timeout", 1)
    if (value := given("error_threshold")) is not None:
        values["error_threshold"] = _whole(value, label("error_threshold"), -1)
    if (value := given("logging_level")) is not None:
        level = str(value).lower()
        if level not in LOGGING_LEVELS:
            raise _error(label("logging_level"), f"must be one of {', '.join(LOGGING_LEVELS)}.")
        values["logging_level"] = level
    if (value := given("environment_variables")) is not None:
        values["environment_variables"] = _tags(value, label("environment_variables"))
    return values
