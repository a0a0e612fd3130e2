"""Reading endpoint and deployment specifications in Azure ML CLI v2's shape.

The CLI turns YAML files into these JSON bodies (uploading local model and code folders first), so the
REST API and the CLI accept the same fields. Every field is either honoured, or reported in `warnings`;
none is silently dropped.
"""

import re
from dataclasses import dataclass, field

from endpoints import curated_environments
from endpoints.choices import AuthModeChoices, TargetChoices
from endpoints.models import OnlineDeployment
from endpoints.targets import instance_types
from registry.models import EnvironmentVersion, ModelVersion
from studio.errors import Invalid

MODEL_REF_RE = re.compile(
    r"^(?:azureml:)?(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(?::(?P<version>[A-Za-z0-9][A-Za-z0-9._-]*)|@(?P<label>latest))\Z"
)
CODE_REF_RE = re.compile(r"^(?:azureml:code:)?(?P<digest>[0-9a-f]{64})\Z")

ENDPOINT_FIELDS = {"name", "description", "tags", "auth_mode", "traffic", "mirror_traffic", "cors_origins"}
# `$schema` only tells editors which schema a file follows: accepted without a word.
SILENT_FIELDS = {"$schema"}
ENDPOINT_IGNORED = {"identity", "public_network_access", "kind", "compute", "properties"}

DEPLOYMENT_FIELDS = {
    "name",
    "endpoint_name",
    "description",
    "tags",
    "model",
    "code_configuration",
    "environment",
    "instance_type",
    "instance_count",
    "scale_settings",
    "request_settings",
    "liveness_probe",
    "readiness_probe",
    "environment_variables",
    "data_collector",
    "target",
}
# Fields of Azure's schema that mean nothing on a self-hosted install: accepted, and said so.
DEPLOYMENT_IGNORED = {
    "app_insights_enabled",
    "egress_public_network_access",
    "model_mount_path",
    "properties",
    "type",
    "with_package",
}

REQUEST_SETTINGS_DEFAULTS = {
    "request_timeout_ms": 5000,
    "max_concurrent_requests_per_instance": 1,
    "max_queue_wait_ms": 500,
}
PROBE_DEFAULTS = {
    "initial_delay": 10,
    "period": 10,
    "timeout": 2,
    "success_threshold": 1,
    "failure_threshold": 30,
}


def _error(field_name: str, message: str) -> Invalid:
    return Invalid({field_name: [message]})


def _object(data: dict, key: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise _error(key, "must be a mapping of settings.")
    return value


# The largest whole number every database Studio runs on stores in an integer column.
MAX_INT = 2**31 - 1


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(key, f"must be a whole number of at least 1, not {repr(value)[:40]}.")
    if value > MAX_INT:
        raise _error(key, f"must be a whole number of at most {MAX_INT}.")
    return value


def _column_text(value, column: str, key: str | None = None) -> str:
    """`value` as text that fits the deployment's `column` (PostgreSQL refuses longer text)."""
    text = str(value or "")
    max_length = OnlineDeployment._meta.get_field(column).max_length
    if len(text) > max_length:
        raise _error(key or column, f"must be at most {max_length} characters, not {len(text)}.")
    return text


SCALE_TYPES = ("default", "target_utilization")
TARGET_UTILIZATION_FIELDS = (
    "min_instances",
    "max_instances",
    "polling_interval",
    "target_utilization_percentage",
)


def _scale_settings(scale: dict) -> dict:
    """Azure's scale settings, checked: `default` keeps instance_count; `target_utilization` lets the
    autoscaler (endpoints.autoscale) move it between min_instances and max_instances."""
    kind = scale.get("type", "default")
    if kind not in SCALE_TYPES:
        raise _error("scale_settings", f"type must be one of {', '.join(SCALE_TYPES)}, not {kind!r}.")
    if kind == "default":
        unknown = sorted(set(scale) - {"type"})
        if unknown:
            raise _error("scale_settings", f"type default takes no other settings ({', '.join(unknown)}).")
        return {"type": kind}
    unknown = sorted(set(scale) - {"type", *TARGET_UTILIZATION_FIELDS})
    if unknown:
        raise _error(
            "scale_settings",
            f"unknown setting(s) {', '.join(unknown)}; target_utilization takes "
            f"{', '.join(TARGET_UTILIZATION_FIELDS)}.",
        )
    checked = {"type": kind}
    for name in TARGET_UTILIZATION_FIELDS:
        if name in scale:
            checked[name] = _positive_int(scale[name], f"scale_settings.{name}")
    minimum, maximum = checked.get("min_instances", 1), checked.get("max_instances", 1)
    if minimum > maximum:
        raise _error("scale_settings", f"min_instances ({minimum}) is above max_instances ({maximum}).")
    if checked.get("target_utilization_percentage", 70) > 100:
        raise _error("scale_settings", "target_utilization_percentage is at most 100.")
    return checked


def resolve_model(reference) -> ModelVersion:
    """`azureml:name:version`, `azureml:name@latest`, or {name, version} to a registered version."""
    if isinstance(reference, dict):
        if "path" in reference:
            raise _error(
                "model",
                "a local model path must be registered first: the `studio` CLI does this for you, or "
                "POST it to /api/v1/models/ and refer to it as azureml:name:version.",
            )
        reference = f"azureml:{reference.get('name')}:{reference.get('version', 'latest')}"
    if not isinstance(reference, str) or not (match := MODEL_REF_RE.match(reference)):
        raise _error(
            "model",
            f"{reference!r} is not a model reference: use azureml:name:version or azureml:name@latest.",
        )
    version = match["version"] or "latest"
    try:
        return ModelVersion.objects.select_related("model").resolve(match["name"], version)
    except ModelVersion.DoesNotExist:
        raise _error(
            "model", f"there is no registered model {match['name']!r} with version {version!r}."
        ) from None


def resolve_code(data: dict) -> tuple[str, str]:
    """`code_configuration: {code, scoring_script}` checked: (code digest, scoring script path)."""
    code = _object(data, "code_configuration")
    match = CODE_REF_RE.match(str(code.get("code", "")))
    if not match or not code.get("scoring_script"):
        raise _error(
            "code_configuration",
            "needs code (an uploaded code snapshot, azureml:code:<sha256>) and scoring_script.",
        )
    script = _column_text(code["scoring_script"], "scoring_script", "code_configuration")
    if any(ord(character) < 32 for character in script) or ".." in script.split("/"):
        raise _error("code_configuration", "scoring_script must be a path inside the code folder.")
    return match["digest"], script


INLINE_ENVIRONMENT_FIELDS = ("image", "conda_file", "pip_requirements")


def resolve_environment(reference, warnings: list[str]) -> tuple[EnvironmentVersion | None, dict | None]:
    """A registered environment (`azureml:name:version` / `@latest`), one of Azure's curated environments
    (endpoints.curated_environments: inline, from the spec Studio ships), or an inline one."""
    if reference is None:
        return None, None
    if isinstance(reference, str):
        match = MODEL_REF_RE.match(reference)
        if reference.startswith("azureml://") or (
            curated_environments.is_curated_reference(reference)
            and not (match and EnvironmentVersion.objects.filter(environment__name=match["name"]).exists())
        ):
            try:
                curated = curated_environments.resolve(reference, warnings)
            except curated_environments.UnknownCurated as exc:
                raise _error("environment", str(exc)) from None
            return None, {"conda_file": curated.conda_file, "curated": curated.asset_id}
        if not match:
            raise _error(
                "environment", f"{reference!r} is not an environment reference: use azureml:name:version."
            )
        scoped = EnvironmentVersion.objects.filter(environment__name=match["name"])
        found = (
            scoped.filter(archived=False).order_by("-created_at").first()
            if match["label"]
            else scoped.filter(version=match["version"]).first()
        )
        if found is None:
            raise _error("environment", f"there is no environment {reference!r}.")
        return found, None
    if not isinstance(reference, dict):
        raise _error("environment", "must be azureml:name:version or a mapping with image and/or conda_file.")
    if isinstance(reference.get("conda_file"), str):
        raise _error(
            "environment",
            "conda_file must be the file's content (the `studio` CLI reads the file named in YAML for you).",
        )
    inline = {key: reference.get(key) for key in INLINE_ENVIRONMENT_FIELDS if reference.get(key)}
    for key in sorted(set(reference) - set(INLINE_ENVIRONMENT_FIELDS)):
        warnings.append(f"environment.{key} is not used by Studio and was ignored.")
    if not inline:
        raise _error("environment", "an inline environment needs an image, a conda_file or pip_requirements.")
    return None, inline


@dataclass
class DeploymentSpec:
    values: dict
    warnings: list[str] = field(default_factory=list)


def parse_deployment(data: dict, *, partial: bool = False) -> DeploymentSpec:
    """Check a deployment body and turn it into model field values. `partial` for updates."""
    if not isinstance(data, dict):
        raise Invalid("A deployment must be a mapping of Azure ML deployment fields.")
    warnings = [
        f"{key} is not used by Studio and was ignored." for key in sorted(set(data) & DEPLOYMENT_IGNORED)
    ]
    unknown = sorted(set(data) - DEPLOYMENT_FIELDS - DEPLOYMENT_IGNORED - SILENT_FIELDS)
    if unknown:
        raise Invalid({key: ["is not a field of an online deployment."] for key in unknown})
    values: dict = {}
    for key in ("description",):
        if key in data:
            values[key] = str(data[key] or "")
    if "tags" in data:
        values["tags"] = {str(k): str(v) for k, v in _object(data, "tags").items()}
    if "model" in data:
        values["model_version"] = resolve_model(data["model"])
    elif not partial:
        raise _error("model", "is required: azureml:name:version of a registered model.")
    if "code_configuration" in data:
        values["code_digest"], values["scoring_script"] = resolve_code(data)
    if "environment" in data:
        values["environment_version"], values["environment"] = resolve_environment(
            data["environment"], warnings
        )
    if "target" in data:
        if data["target"] not in TargetChoices.values:
            raise _error("target", f"must be one of {', '.join(TargetChoices.values)}.")
        values["target"] = data["target"]
    if "instance_type" in data:
        values["instance_type"] = _column_text(data["instance_type"], "instance_type")
        if values["instance_type"]:
            # Every target reads the size (docker limits, profiles, the pages), so an unknown one is
            # refused here, naming the known ones, instead of being stored and ignored.
            try:
                instance_types.lookup(values["instance_type"])
            except instance_types.UnknownInstanceType as exc:
                raise _error("instance_type", str(exc)) from None
    if "instance_count" in data:
        values["instance_count"] = _positive_int(data["instance_count"], "instance_count")
    if "scale_settings" in data:
        values["scale_settings"] = _scale_settings(_object(data, "scale_settings"))
    if "request_settings" in data or not partial:
        settings = {**REQUEST_SETTINGS_DEFAULTS, **_object(data, "request_settings")}
        for key in ("request_timeout_ms", "max_concurrent_requests_per_instance"):
            settings[key] = _positive_int(settings[key], f"request_settings.{key}")
        values["request_settings"] = settings
    for probe in ("liveness_probe", "readiness_probe"):
        if probe in data or not partial:
            values[probe] = {**PROBE_DEFAULTS, **_object(data, probe)}
    if "environment_variables" in data:
        values["environment_variables"] = {
            str(k): str(v) for k, v in _object(data, "environment_variables").items()
        }
    if "data_collector" in data:
        values["data_collector"] = _object(data, "data_collector") or None
    model = values.get("model_version")
    if model is not None and model.type == "custom_model" and not values.get("code_digest") and not partial:
        raise _error(
            "code_configuration",
            "a custom_model needs code_configuration with a scoring_script; only mlflow_model deploys "
            "without code.",
        )
    environment = values.get("environment") or {}
    if environment.get("image"):
        if values.get("target") == TargetChoices.DOCKER:
            used = "images are built on STUDIO_DOCKER_BASE_IMAGE with the conda_file/pip_requirements"
        else:
            used = "replicas run in a Python environment built from conda_file/pip_requirements"
        warnings.append(f"environment.image {environment['image']!r} is not used: {used}.")
    return DeploymentSpec(values, warnings)


def parse_endpoint(data: dict, *, partial: bool = False) -> tuple[dict, list[str]]:
    """Check an endpoint body: (model field values, warnings for accepted fields Studio does not use)."""
    if not isinstance(data, dict):
        raise Invalid("An endpoint must be a mapping of Azure ML endpoint fields.")
    warnings = [
        f"{key} is not used by Studio and was ignored." for key in sorted(set(data) & ENDPOINT_IGNORED)
    ]
    unknown = sorted(set(data) - ENDPOINT_FIELDS - ENDPOINT_IGNORED - SILENT_FIELDS)
    if unknown:
        raise Invalid({key: ["is not a field of an online endpoint."] for key in unknown})
    values = {}
    if "name" in data:
        values["name"] = data["name"]
    elif not partial:
        raise _error("name", "is required.")
    for key in ("description",):
        if key in data:
            values[key] = str(data[key] or "")
    if "tags" in data:
        values["tags"] = {str(k): str(v) for k, v in _object(data, "tags").items()}
    if "auth_mode" in data:
        mode = str(data["auth_mode"]).lower()
        if mode not in AuthModeChoices.values:
            raise _error("auth_mode", "must be key or aml_token.")
        values["auth_mode"] = mode
    for key in ("traffic", "mirror_traffic"):
        if key in data:
            values[key] = _object(data, key)
    if "cors_origins" in data:
        origins = data["cors_origins"]
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise _error("cors_origins", "must be a list of origins such as https://app.example.com.")
        values["cors_origins"] = origins
    return values, warnings
