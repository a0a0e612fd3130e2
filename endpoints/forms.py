"""Forms of the endpoint pages: the creation wizard's steps, traffic and edits.

Forms check what a form can (a field is there, a YAML text parses); the rules themselves are
endpoints.services' and endpoints.specs', whose messages the views put on these forms, so the pages
refuse exactly what the API refuses, with the same words.
"""

import json
import re

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html
from django.utils.safestring import SafeString
from rest_framework.exceptions import APIException

from endpoints import targets
from endpoints.choices import AuthModeChoices, ProvisioningStateChoices, TargetChoices
from endpoints.models import OnlineEndpoint, validate_endpoint_name
from endpoints.specs import PROBE_DEFAULTS, REQUEST_SETTINGS_DEFAULTS
from endpoints.targets import instance_types
from registry.forms import FolderField, without_common_folder
from registry.models import EnvironmentVersion, ModelVersion
from studio import plainyaml
from studio.errors import Refused

NEW, EXISTING = "new", "existing"
NO_CODE, SCRIPT = "no_code", "script"
STUDIO_ENV, REGISTERED_ENV, CONDA_ENV = "studio", "registered", "conda"
ALL_TRAFFIC, NO_TRAFFIC, SPLIT_TRAFFIC = "all", "none", "split"


def choice(title: str, help_text: str = "") -> SafeString:
    """A radio choice's label: a title and a line that says what choosing it means."""
    return format_html(
        '<span class="choice-title">{}</span><span class="choice-help">{}</span>', title, help_text
    )


def require_when(form: forms.Form, field: str, switch: str, value: str) -> None:
    """`field` is required only when the radio `switch` is `value` (as posted, or as first shown).

    So the page marks it as needed where it matters, and Django's "required" check says so on a POST.
    """
    chosen = form.data.get(switch) if form.is_bound else form.initial.get(switch)
    if chosen is None:
        chosen = form.fields[switch].initial
    form.fields[field].required = chosen == value


def service_errors(exc: Refused | APIException) -> dict[str, list[str]]:
    """A services/specs refusal as {field: [messages]}; a refusal about no one field is under None."""
    if isinstance(exc, Refused):
        return exc.errors
    detail = exc.detail
    if isinstance(detail, dict):
        return {
            key: [str(item) for item in (value if isinstance(value, list) else [value])]
            for key, value in detail.items()
        }
    if isinstance(detail, list):
        return {None: [str(item) for item in detail]}
    return {None: [str(detail)]}


def add_service_errors(
    form: forms.Form, exc: Refused | APIException, fields: dict[str, str] | None = None
) -> None:
    """Put a refusal's messages on the form fields they concern (by `fields`: service key -> form field).

    A message about a key the form has no field for stays a form-wide message that names the key, as the
    API's error envelope does ("traffic: must add up to 0 or 100 percent, not 90.").
    """
    fields = fields or {}
    for key, messages in service_errors(exc).items():
        field = fields.get(key, key if key in form.fields else None)
        for message in messages:
            if field is None:
                form.add_error(None, message if key in (None, "non_field_errors") else f"{key}: {message}")
            else:
                form.add_error(field, message)


def model_version_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Active versions grouped by model, newest first, as `name:version` values; labels show the type."""
    groups: dict[str, list[tuple[str, str]]] = {}
    versions = ModelVersion.objects.filter(archived=False).select_related("model")
    for version in versions.order_by("model__name", "-created_at", "-pk"):
        label = f"{version.model.name} · version {version.version} · {version.get_type_display()}"
        groups.setdefault(version.model.name, []).append((str(version), label))
    return list(groups.items())


def resolve_version(reference: str) -> ModelVersion:
    """`name:version` (the value of a model choice) to its version, or a form error that says which."""
    name, _, version = reference.rpartition(":")
    try:
        return ModelVersion.objects.select_related("model").resolve(name, version)
    except ModelVersion.DoesNotExist:
        raise ValidationError(
            f"There is no registered model {name!r} with version {version!r}; choose another."
        ) from None


# The wizard's steps


class EndpointStepForm(forms.Form):
    """Step 1: a new endpoint (name, auth mode) or an existing one, and the new deployment's name."""

    mode = forms.ChoiceField(
        choices=[
            (NEW, choice("A new endpoint", "With its own scoring URI and keys.")),
            (EXISTING, choice("An existing endpoint", "Its URI and keys stay; traffic decides who answers.")),
        ],
        widget=forms.RadioSelect,
        initial=NEW,
        label="Deploy to",
    )
    name = forms.CharField(
        required=False,
        max_length=32,
        label="Endpoint name",
        error_messages={"required": "Give the new endpoint a name."},
        help_text="3-32 letters, digits and single dashes. It is part of the scoring URI and cannot change.",
        widget=forms.TextInput(
            attrs={"placeholder": "fraud-scoring", "spellcheck": "false", "autocomplete": "off"}
        ),
    )
    auth_mode = forms.ChoiceField(
        choices=[
            (AuthModeChoices.KEY, choice("Key", "Two keys that do not expire; regenerate one at a time.")),
            (AuthModeChoices.AML_TOKEN, choice("Token", "Signed tokens that expire after an hour.")),
        ],
        widget=forms.RadioSelect,
        initial=AuthModeChoices.KEY,
        label="Authentication",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    existing = forms.ChoiceField(
        required=False,
        label="Endpoint",
        error_messages={"required": "Choose the endpoint to add a deployment to."},
    )
    deployment = forms.CharField(
        max_length=32,
        initial="blue",
        label="Deployment name",
        help_text="Deployments of one endpoint share its URI and keys; blue and green are the usual names.",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        endpoints = OnlineEndpoint.objects.exclude(provisioning_state=ProvisioningStateChoices.DELETING)
        self.fields["existing"].choices = [("", "Choose an endpoint")] + [
            (endpoint.name, endpoint.name) for endpoint in endpoints
        ]
        require_when(self, "name", "mode", NEW)
        require_when(self, "auth_mode", "mode", NEW)
        require_when(self, "existing", "mode", EXISTING)

    def clean(self) -> dict:
        cleaned = super().clean()
        mode, deployment = cleaned.get("mode"), cleaned.get("deployment")
        name = cleaned.get("name")
        if mode == NEW and name:
            try:
                validate_endpoint_name(name)
            except ValidationError as exc:
                self.add_error("name", exc)
            else:
                if OnlineEndpoint.objects.filter(name=name).exists():
                    # The words of services.create_endpoint, which checks again on create.
                    self.add_error(
                        "name", f"An endpoint named {name!r} exists already; endpoint names are unique."
                    )
        if deployment:
            try:
                validate_endpoint_name(deployment)
            except ValidationError as exc:
                self.add_error("deployment", exc)
            else:
                existing = cleaned.get("existing") if mode == EXISTING else None
                if (
                    existing
                    and OnlineEndpoint.objects.filter(name=existing, deployments__name=deployment).exists()
                ):
                    self.add_error(
                        "deployment",
                        f"Endpoint {existing!r} has a deployment named {deployment!r} already; choose "
                        "another name, or edit that deployment on the endpoint's page.",
                    )
        return cleaned


class ModelStepForm(forms.Form):
    """Step 2: the registered model version to serve, picked from a searchable list (`name:version`)."""

    model = forms.CharField(
        label="Model version",
        max_length=200,
        error_messages={"required": "Choose the model version to serve."},
    )

    def clean_model(self) -> str:
        reference = self.cleaned_data["model"]
        self.version = resolve_version(reference)
        if self.version.archived:
            raise ValidationError(
                f"{reference} is archived; restore it on its page, or choose an active version."
            )
        return reference


def _conda(text: str) -> dict:
    try:
        conda = plainyaml.load(text)
    except plainyaml.YAMLRefused as exc:
        where = f" (line {exc.line})" if exc.line else ""
        raise ValidationError(f"The conda file is not valid YAML{where}: {exc.problem}.") from None
    if not isinstance(conda, dict) or not isinstance(conda.get("dependencies"), list):
        raise ValidationError(
            "A conda file is a mapping with a dependencies list, "
            "e.g. dependencies: [python=3.11, {pip: [scikit-learn]}]."
        )
    return conda


class CodeStepForm(forms.Form):
    """Step 3: no-code (MLflow models), or scoring code and a scoring script; and the environment."""

    code_mode = forms.ChoiceField(
        choices=[
            (
                NO_CODE,
                choice(
                    "No code", "Studio serves the MLflow model and checks requests against its signature."
                ),
            ),
            (
                SCRIPT,
                choice("A scoring script", "init() and run(raw_data) in a code folder, as in Azure ML."),
            ),
        ],
        widget=forms.RadioSelect,
        initial=NO_CODE,
        label="Scoring",
    )
    archive = forms.FileField(
        required=False,
        label="Code as a .zip or .tar.gz",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,.tar.gz,.tgz"}),
    )
    folder = FolderField(label="Or the code folder")
    # Relative paths of the folder's files, which browsers keep on the client only (see studio.js).
    paths = forms.CharField(required=False, widget=forms.HiddenInput)
    scoring_script = forms.CharField(
        required=False,
        max_length=500,
        error_messages={"required": "Give the scoring script's path inside the code folder, e.g. score.py."},
        label="Scoring script",
        help_text="Its path inside the code folder, like code_configuration.scoring_script: score.py.",
        widget=forms.TextInput(attrs={"placeholder": "score.py", "spellcheck": "false"}),
    )
    env_mode = forms.ChoiceField(
        choices=[
            (
                STUDIO_ENV,
                choice("Studio's Python", "Or, for an MLflow model, the requirements saved with it."),
            ),
            (REGISTERED_ENV, choice("A registered environment", "Its conda file or pip requirements.")),
            (CONDA_ENV, choice("A conda file", "Built once into an isolated environment and cached.")),
        ],
        widget=forms.RadioSelect,
        initial=STUDIO_ENV,
        label="Environment",
    )
    environment_version = forms.ChoiceField(
        required=False,
        label="Registered environment",
        error_messages={"required": "Choose a registered environment, or another kind of environment."},
    )
    conda_yaml = forms.CharField(
        required=False,
        error_messages={"required": "Paste the conda file, or choose another kind of environment."},
        label="conda.yaml",
        help_text="Its pip: section and plain package names are installed with pip, in an environment "
        "built once.",
        widget=forms.Textarea(
            attrs={
                "rows": 7,
                "spellcheck": "false",
                "placeholder": (
                    "name: model-env\ndependencies:\n  - python=3.11\n  - pip:\n"
                    "    - scikit-learn==1.5.2\n    - joblib"
                ),
            }
        ),
    )

    def __init__(self, *args, mlflow: bool, code: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mlflow = mlflow
        # The code uploaded on an earlier visit of this step: kept unless another is chosen.
        self.code = code or {}
        if not mlflow:
            self.fields["code_mode"].choices = self.fields["code_mode"].choices[1:]
            self.fields["code_mode"].initial = SCRIPT
        require_when(self, "scoring_script", "code_mode", SCRIPT)
        require_when(self, "environment_version", "env_mode", REGISTERED_ENV)
        require_when(self, "conda_yaml", "env_mode", CONDA_ENV)
        versions = EnvironmentVersion.objects.filter(archived=False).select_related("environment")
        self.fields["environment_version"].choices = [("", "Choose an environment")] + [
            (version.asset_id, f"{version.environment.name} · version {version.version}")
            for version in versions
        ]

    def clean_paths(self) -> list[str]:
        raw = self.cleaned_data.get("paths") or ""
        try:
            paths = json.loads(raw) if raw else []
        except json.JSONDecodeError:
            paths = None
        if not isinstance(paths, list) or not all(isinstance(item, str) for item in paths):
            raise ValidationError("The folder's file paths could not be read; choose the folder again.")
        return paths

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("code_mode") == SCRIPT:
            archive, folder = cleaned.get("archive"), cleaned.get("folder") or []
            if archive and folder:
                self.add_error("archive", "Choose either an archive or a folder, not both.")
            elif not archive and not folder and not self.code.get("digest"):
                self.add_error(
                    "archive", "Upload the scoring code: a .zip of its folder, or the folder itself."
                )
            if folder:
                paths = cleaned.get("paths") or [item.name for item in folder]
                if len(paths) != len(folder):
                    self.add_error(
                        "folder", "The folder's file paths do not match its files; choose the folder again."
                    )
                else:
                    cleaned["folder_files"] = list(zip(without_common_folder(paths), folder, strict=True))
        if cleaned.get("env_mode") == CONDA_ENV and cleaned.get("conda_yaml"):
            try:
                cleaned["conda"] = _conda(cleaned["conda_yaml"])
            except ValidationError as exc:
                self.add_error("conda_yaml", exc)
        return cleaned


class TargetStepForm(forms.Form):
    """Step 4: where replicas run, and how many."""

    target = forms.ChoiceField(
        choices=TargetChoices.choices, initial=TargetChoices.LOCAL, widget=forms.RadioSelect
    )
    instance_count = forms.IntegerField(
        initial=1,
        label="Instances",
        help_text="Replicas of the model server; each is its own process and port.",
    )
    instance_type = forms.ChoiceField(
        required=False,
        label="Instance type",
        help_text="An Azure VM size: on the docker target it sets each container's CPU and memory limits; "
        "the local target runs a process per instance.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["instance_type"].choices = [("", "None (no limits)")] + [
            (size.name, f"{size.name} · {size.cores:g} vCPU · {size.memory_gib:g} GiB")
            for size in (instance_types.lookup(name) for name in instance_types.names())
        ]

    def clean_target(self) -> str:
        target = self.cleaned_data["target"]
        try:
            targets.check_usable(target)
        except targets.TargetUnavailable as exc:
            raise ValidationError(str(exc)) from None
        return target


PROBES = (("liveness_probe", "Liveness probe"), ("readiness_probe", "Readiness probe"))
PROBE_FIELDS = (
    ("initial_delay", "Initial delay (s)"),
    ("period", "Period (s)"),
    ("timeout", "Timeout (s)"),
    ("success_threshold", "Success threshold"),
    ("failure_threshold", "Failure threshold"),
)
DEFAULT_SCALE, TARGET_UTILIZATION = "default", "target_utilization"
SCALE_DEFAULTS = {
    "min_instances": 1,
    "max_instances": 3,
    "polling_interval": 10,
    "target_utilization_percentage": 70,
}
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def _number(label: str, initial: int, **kwargs) -> forms.IntegerField:
    return forms.IntegerField(label=label, initial=initial, min_value=kwargs.pop("min_value", 1), **kwargs)


class AdvancedStepForm(forms.Form):
    """Step 5: the deployment's YAML settings beyond model, code and size, each with Azure's default.

    `fields_body()` is the part of the deployment body these set, in the YAML's own shape, so the
    deployment gets exactly what the same lines in a YAML file would give it.
    """

    request_timeout_ms = _number("Request timeout (ms)", REQUEST_SETTINGS_DEFAULTS["request_timeout_ms"])
    max_concurrent_requests_per_instance = _number(
        "Max concurrent requests per instance",
        REQUEST_SETTINGS_DEFAULTS["max_concurrent_requests_per_instance"],
    )
    max_queue_wait_ms = _number(
        "Max queue wait (ms)", REQUEST_SETTINGS_DEFAULTS["max_queue_wait_ms"], min_value=0
    )
    environment_variables = forms.CharField(
        required=False,
        label="Environment variables",
        help_text="One NAME=value a line; the scoring script reads them with os.environ.",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "placeholder": "LOG_LEVEL=info"}),
    )
    scale_type = forms.ChoiceField(
        choices=[
            (DEFAULT_SCALE, choice("Fixed", "The instance count chosen on the Target step.")),
            (
                TARGET_UTILIZATION,
                choice("Target utilization", "Between a minimum and a maximum, by CPU use."),
            ),
        ],
        widget=forms.RadioSelect,
        initial=DEFAULT_SCALE,
        label="Scale",
    )
    min_instances = _number("Min instances", SCALE_DEFAULTS["min_instances"])
    max_instances = _number("Max instances", SCALE_DEFAULTS["max_instances"])
    polling_interval = _number("Polling interval (s)", SCALE_DEFAULTS["polling_interval"])
    target_utilization_percentage = _number(
        "Target CPU (%)", SCALE_DEFAULTS["target_utilization_percentage"], max_value=100
    )
    collect_inputs = forms.BooleanField(required=False, label="Collect model inputs (request bodies)")
    collect_outputs = forms.BooleanField(required=False, label="Collect model outputs (response bodies)")
    sampling_rate = forms.FloatField(
        initial=1.0,
        min_value=0.0,
        max_value=1.0,
        label="Sampling rate",
        help_text="The share of requests whose bodies are kept, from 0 to 1.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for probe, title in PROBES:
            for key, label in PROBE_FIELDS:
                self.fields[f"{probe}-{key}"] = _number(f"{label}", PROBE_DEFAULTS[key])
                self.fields[f"{probe}-{key}"].group = title

    def probe_fields(self) -> list[tuple[str, list]]:
        return [(title, [self[f"{probe}-{key}"] for key, _ in PROBE_FIELDS]) for probe, title in PROBES]

    def clean_environment_variables(self) -> dict[str, str]:
        variables: dict[str, str] = {}
        for number, line in enumerate(self.cleaned_data["environment_variables"].splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, value = line.partition("=")
            name = name.strip()
            if not sep or not ENV_NAME_RE.match(name):
                raise ValidationError(
                    f"Line {number} is not NAME=value with a name of letters, digits and _ "
                    f"(not starting with a digit): {line.strip()[:60]!r}."
                )
            variables[name] = value.strip()
        return variables

    def clean(self) -> dict:
        cleaned = super().clean()
        low, high = cleaned.get("min_instances"), cleaned.get("max_instances")
        if cleaned.get("scale_type") == TARGET_UTILIZATION and low and high and low > high:
            self.add_error("max_instances", f"Must be at least the minimum ({low}).")
        return cleaned

    def fields_body(self) -> dict:
        """The deployment YAML fields these answers set; a group left at its defaults is left out."""
        data = self.cleaned_data
        body: dict = {}
        request = {key: data[key] for key in REQUEST_SETTINGS_DEFAULTS}
        if request != REQUEST_SETTINGS_DEFAULTS:
            body["request_settings"] = request
        for probe, _ in PROBES:
            values = {key: data[f"{probe}-{key}"] for key, _ in PROBE_FIELDS}
            if values != PROBE_DEFAULTS:
                body[probe] = values
        if data["environment_variables"]:
            body["environment_variables"] = data["environment_variables"]
        if data["scale_type"] == TARGET_UTILIZATION:
            body["scale_settings"] = {
                "type": TARGET_UTILIZATION,
                **{key: data[key] for key in SCALE_DEFAULTS},
            }
        collections = {
            name: {"enabled": True}
            for name, wanted in (
                ("model_inputs", data["collect_inputs"]),
                ("model_outputs", data["collect_outputs"]),
            )
            if wanted
        }
        if collections:
            body["data_collector"] = {"collections": collections, "sampling_rate": data["sampling_rate"]}
        return body

    @classmethod
    def initial_from(cls, body: dict) -> dict:
        """The form's initial values for a `fields_body()` given before, to show a revisited step."""
        initial: dict = {**(body.get("request_settings") or {})}
        for probe, _ in PROBES:
            for key, value in (body.get(probe) or {}).items():
                initial[f"{probe}-{key}"] = value
        variables = body.get("environment_variables") or {}
        initial["environment_variables"] = "\n".join(f"{name}={value}" for name, value in variables.items())
        scale = body.get("scale_settings") or {}
        initial["scale_type"] = scale.get("type", DEFAULT_SCALE)
        initial.update({key: scale[key] for key in SCALE_DEFAULTS if key in scale})
        collector = body.get("data_collector") or {}
        collections = collector.get("collections") or {}
        initial["collect_inputs"] = "model_inputs" in collections
        initial["collect_outputs"] = "model_outputs" in collections
        initial["sampling_rate"] = collector.get("sampling_rate", 1.0)
        return initial


class TrafficStepForm(forms.Form):
    """Step 5: whether the new deployment takes live traffic at once; for an existing endpoint, a split."""

    mode = forms.ChoiceField(widget=forms.RadioSelect, label="Live traffic")

    def __init__(self, *args, deployment: str, current: dict[str, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.deployment, self.current = deployment, current
        choices = [
            (
                ALL_TRAFFIC,
                choice(f"Send all traffic to {deployment}", "It answers every request once ready."),
            ),
            (
                NO_TRAFFIC,
                choice("No live traffic yet", "Test it first with the azureml-model-deployment header."),
            ),
        ]
        if current:
            choices.append(
                (SPLIT_TRAFFIC, choice("Split traffic", "Give each deployment a share of requests."))
            )
        self.fields["mode"].choices = choices
        self.fields["mode"].initial = ALL_TRAFFIC if not current else NO_TRAFFIC
        for name in [*current, deployment]:
            self.fields[f"traffic-{name}"] = forms.IntegerField(
                required=False, min_value=0, max_value=100, label=name, initial=current.get(name, 0)
            )

    def split_fields(self) -> list:
        return [self[name] for name in self.fields if name.startswith("traffic-")]

    def split(self) -> dict[str, int]:
        return {
            name.removeprefix("traffic-"): self.cleaned_data.get(name) or 0
            for name in self.fields
            if name.startswith("traffic-")
        }


class TrafficForm(forms.Form):
    """An endpoint's live traffic (one share per deployment) and its mirror (one deployment, at most 50%)."""

    mirror_deployment = forms.ChoiceField(required=False, label="Mirror to")
    mirror_percent = forms.IntegerField(
        required=False, min_value=0, max_value=100, initial=0, label="Mirrored share"
    )

    def __init__(self, *args, endpoint: OnlineEndpoint, names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.endpoint = endpoint
        problems = endpoint.serving_problems()
        for name in names:
            self.fields[f"traffic-{name}"] = forms.IntegerField(
                min_value=0, max_value=100, label=name, initial=endpoint.traffic.get(name, 0)
            )
            # Why a share given to this deployment would not be served; the card's total says so.
            self.fields[f"traffic-{name}"].problem = problems.get(name, "")
        self.fields["mirror_deployment"].choices = [("", "No mirroring")] + [(name, name) for name in names]
        mirrored = next(
            ((name, percent) for name, percent in endpoint.mirror_traffic.items() if percent), None
        )
        if mirrored:
            self.fields["mirror_deployment"].initial, self.fields["mirror_percent"].initial = mirrored

    def traffic_fields(self) -> list:
        return [self[name] for name in self.fields if name.startswith("traffic-")]

    def values(self) -> dict:
        """The endpoint's new traffic and mirror_traffic, for services.update_endpoint."""
        traffic = {
            name.removeprefix("traffic-"): self.cleaned_data[name]
            for name in self.fields
            if name.startswith("traffic-")
        }
        mirror_to = self.cleaned_data.get("mirror_deployment")
        mirror = {mirror_to: self.cleaned_data.get("mirror_percent") or 0} if mirror_to else {}
        return {"traffic": traffic, "mirror_traffic": mirror}


class DeploymentEditForm(forms.Form):
    """What a deployment card edits: the model version it serves and its number of instances."""

    model = forms.ChoiceField(label="Model version")
    instance_count = forms.IntegerField(label="Instances")

    def __init__(self, *args, current: ModelVersion | None = None, **kwargs):
        """`current` is the version the deployment serves: it is offered and chosen whatever its state,
        so a form sent with only the instances changed keeps the model (archived versions are not
        offered otherwise)."""
        super().__init__(*args, **kwargs)
        groups = model_version_choices()
        if current is not None:
            self.initial.setdefault("model", str(current))
            offered = {value for _, options in groups for value, _ in options}
            if str(current) not in offered:
                label = (
                    f"{current.model.name} · version {current.version} · {current.get_type_display()}"
                    f"{' · archived' if current.archived else ''} (serving now)"
                )
                group = next((options for name, options in groups if name == current.model.name), None)
                if group is None:
                    groups.append((current.model.name, [(str(current), label)]))
                    groups.sort(key=lambda item: item[0])
                else:
                    group.insert(0, (str(current), label))
        self.fields["model"].choices = groups

    def clean_model(self) -> str:
        reference = self.cleaned_data["model"]
        resolve_version(reference)
        return reference


class ScoringTestForm(forms.Form):
    """A request sent to the endpoint through the gateway, from the server."""

    body = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false"}),
        label="Request body",
        strip=False,
    )
    deployment = forms.ChoiceField(
        required=False,
        label="Deployment",
        help_text="A chosen deployment gets the request whatever the traffic rules "
        "(azureml-model-deployment).",
    )

    def __init__(self, *args, names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["deployment"].choices = [("", "As the traffic rules decide")] + [
            (name, name) for name in names
        ]
