"""Forms of the batch endpoint pages: the creation wizard's own steps and the Invoke form.

The wizard's model and code steps are the online wizard's forms (endpoints.forms), since choosing a
version, uploading scoring code and choosing an environment work the same for both. As there, forms check
what a form can; the rules are endpoints.batch_specs' and endpoints.batch_services', whose messages the
views put on these forms, so a page refuses exactly what the API refuses, with the same words.
"""

import json

from django import forms
from django.core.exceptions import ValidationError

from endpoints.batch_specs import LOGGING_LEVELS
from endpoints.choices import AuthModeChoices, OutputActionChoices
from endpoints.forms import EXISTING, NEW, choice, require_when
from endpoints.models import BatchEndpoint, validate_endpoint_name
from registry.forms import FolderField, without_common_folder
from registry.models import DataVersion

UPLOAD, DATA_ASSET = "upload", "data"
URI_FOLDER, URI_FILE = "uri_folder", "uri_file"


class BatchEndpointStepForm(forms.Form):
    """Step 1: a new batch endpoint (name, auth mode) or an existing one, and the deployment's name."""

    mode = forms.ChoiceField(
        choices=[
            (NEW, choice("A new batch endpoint", "With its own jobs URI and credentials.")),
            (EXISTING, choice("An existing batch endpoint", "Its URI and credentials stay.")),
        ],
        widget=forms.RadioSelect,
        initial=NEW,
        label="Deploy to",
    )
    name = forms.CharField(
        required=False,
        max_length=32,
        label="Endpoint name",
        error_messages={"required": "Give the new batch endpoint a name."},
        help_text="3-32 letters, digits and single dashes. It is part of the jobs URI and cannot change.",
        widget=forms.TextInput(
            attrs={"placeholder": "nightly-scoring", "spellcheck": "false", "autocomplete": "off"}
        ),
    )
    auth_mode = forms.ChoiceField(
        choices=[
            (AuthModeChoices.AML_TOKEN, choice("Token", "Signed tokens that expire after an hour.")),
            (AuthModeChoices.KEY, choice("Key", "Two keys that do not expire; regenerate one at a time.")),
        ],
        widget=forms.RadioSelect,
        initial=AuthModeChoices.AML_TOKEN,
        label="Authentication",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    existing = forms.ChoiceField(
        required=False,
        label="Batch endpoint",
        error_messages={"required": "Choose the batch endpoint to add a deployment to."},
    )
    deployment = forms.CharField(
        max_length=32,
        initial="default",
        label="Deployment name",
        help_text="Jobs run on the endpoint's default deployment unless an invocation names another.",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
    )
    set_default = forms.BooleanField(
        required=False,
        initial=True,
        label="Make it the endpoint's default deployment",
        help_text="An endpoint's first deployment always becomes its default.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["existing"].choices = [("", "Choose a batch endpoint")] + [
            (name, name) for name in BatchEndpoint.objects.values_list("name", flat=True)
        ]
        require_when(self, "name", "mode", NEW)
        require_when(self, "auth_mode", "mode", NEW)
        require_when(self, "existing", "mode", EXISTING)

    def clean(self) -> dict:
        cleaned = super().clean()
        mode, name, deployment = cleaned.get("mode"), cleaned.get("name"), cleaned.get("deployment")
        if mode == NEW and name:
            try:
                validate_endpoint_name(name)
            except ValidationError as exc:
                self.add_error("name", exc)
            else:
                if BatchEndpoint.objects.filter(name=name).exists():
                    self.add_error(
                        "name", f"A batch endpoint named {name!r} exists already; endpoint names are unique."
                    )
        if deployment:
            try:
                validate_endpoint_name(deployment)
            except ValidationError as exc:
                self.add_error("deployment", exc)
            else:
                existing = cleaned.get("existing") if mode == EXISTING else None
                taken = BatchEndpoint.objects.filter(name=existing, deployments__name=deployment)
                if existing and taken.exists():
                    self.add_error(
                        "deployment",
                        f"Batch endpoint {existing!r} has a deployment named {deployment!r} already; choose "
                        "another name.",
                    )
        return cleaned


def _count(label: str, initial: int, help_text: str, minimum: int = 1) -> forms.IntegerField:
    return forms.IntegerField(label=label, initial=initial, min_value=minimum, help_text=help_text)


class BatchSettingsStepForm(forms.Form):
    """Step 4: Azure's batch settings, each with Azure's default."""

    instance_count = _count("Instances", 1, "resources.instance_count: how many workers score at once.")
    max_concurrency_per_instance = _count(
        "Concurrency per instance", 1, "Mini-batches each instance scores in parallel."
    )
    mini_batch_size = _count("Mini-batch size", 10, "Files per run(mini_batch) call.")
    output_action = forms.ChoiceField(
        choices=OutputActionChoices.choices,
        initial=OutputActionChoices.APPEND_ROW,
        widget=forms.RadioSelect,
        label="Output",
    )
    output_file_name = forms.CharField(
        max_length=200,
        initial="predictions.csv",
        label="Output file name",
        help_text="With append_row: the one file every mini-batch's rows are appended to.",
        widget=forms.TextInput(attrs={"spellcheck": "false"}),
    )
    max_retries = _count("Retries", 3, "retry_settings.max_retries: of a mini-batch that failed.", minimum=0)
    timeout = _count("Timeout (s)", 30, "retry_settings.timeout: seconds a mini-batch may take.")
    error_threshold = forms.IntegerField(
        initial=-1,
        min_value=-1,
        label="Error threshold",
        help_text="Failed files tolerated over the whole job before it fails; -1 tolerates any number.",
    )
    logging_level = forms.ChoiceField(
        choices=[(level, level) for level in LOGGING_LEVELS], initial="info", label="Logging level"
    )

    def settings_body(self) -> dict:
        """The answers as the YAML's `resources` and `settings` sections."""
        data = self.cleaned_data
        return {
            "resources": {"instance_count": data["instance_count"]},
            "settings": {
                "max_concurrency_per_instance": data["max_concurrency_per_instance"],
                "mini_batch_size": data["mini_batch_size"],
                "output_action": data["output_action"],
                "output_file_name": data["output_file_name"],
                "retry_settings": {"max_retries": data["max_retries"], "timeout": data["timeout"]},
                "error_threshold": data["error_threshold"],
                "logging_level": data["logging_level"],
            },
        }

    @staticmethod
    def initial_from(body: dict) -> dict:
        settings = body.get("settings") or {}
        retry = settings.get("retry_settings") or {}
        return {
            "instance_count": (body.get("resources") or {}).get("instance_count"),
            **{key: value for key, value in settings.items() if key != "retry_settings"},
            "max_retries": retry.get("max_retries"),
            "timeout": retry.get("timeout"),
        }


class BatchInvokeForm(forms.Form):
    """Start a job: on files uploaded now (a folder, a .zip of one, or one file) or on a data asset."""

    source = forms.ChoiceField(
        choices=[
            (UPLOAD, choice("Upload files", "A folder, a .zip of one, or a single file.")),
            (DATA_ASSET, choice("A data asset", "A registered version, as azureml:name:version.")),
        ],
        widget=forms.RadioSelect,
        initial=UPLOAD,
        label="Input",
    )
    archive = forms.FileField(
        required=False,
        label="A .zip of the input folder",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip"}),
    )
    folder = FolderField(label="Or the input folder")
    # Relative paths of the folder's files, which browsers keep on the client only (see studio.js).
    paths = forms.CharField(required=False, widget=forms.HiddenInput)
    file = forms.FileField(required=False, label="Or one file (uri_file)")
    data = forms.ChoiceField(
        required=False,
        label="Data asset version",
        error_messages={"required": "Choose the data asset version to score."},
    )
    deployment_name = forms.ChoiceField(required=False, label="Deployment")
    output_file_name = forms.CharField(
        required=False,
        max_length=200,
        label="Output file name",
        help_text="Leave empty for the deployment's.",
        widget=forms.TextInput(attrs={"spellcheck": "false"}),
    )

    def __init__(self, *args, endpoint: BatchEndpoint, **kwargs):
        super().__init__(*args, **kwargs)
        default = endpoint.default_deployment
        names = list(endpoint.deployments.values_list("name", flat=True))
        self.fields["deployment_name"].choices = [
            ("", f"The default ({default})" if default else "The default (none set)")
        ] + [(name, name) for name in names]
        versions = DataVersion.objects.filter(archived=False).select_related("asset")
        self.fields["data"].choices = [("", "Choose a data asset version")] + [
            (version.azureml_id, f"{version.asset.name} · version {version.version} · {version.type}")
            for version in versions.order_by("asset__name", "-created_at")[:500]
        ]
        require_when(self, "data", "source", DATA_ASSET)

    def clean_paths(self) -> list[str]:
        raw = self.cleaned_data.get("paths") or ""
        try:
            paths = json.loads(raw) if raw else []
        except json.JSONDecodeError:
            paths = None
        if not isinstance(paths, list) or not all(isinstance(item, str) for item in paths):
            raise ValidationError("The folder's file paths could not be read; choose the folder again.")
        return paths

    def clean_data(self) -> str:
        reference = self.cleaned_data.get("data") or ""
        if reference:
            name, _, version = reference.removeprefix("azureml:").rpartition(":")
            self.data_version = DataVersion.objects.filter(asset__name=name, version=version).first()
            if self.data_version is None:
                raise ValidationError(f"There is no data asset version {reference}; choose another.")
        return reference

    def input(self) -> dict:
        """The invocation's `input` as the REST API takes it: a data asset reference with the type the
        version was registered with, or the type of the files uploaded."""
        data = self.cleaned_data
        if data["source"] == DATA_ASSET:
            kind = URI_FILE if self.data_version.type == URI_FILE else URI_FOLDER
            return {"type": kind, "path": data["data"]}
        return {"type": URI_FILE if data.get("file") else URI_FOLDER}

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("source") != UPLOAD:
            return cleaned
        archive, folder, single = cleaned.get("archive"), cleaned.get("folder") or [], cleaned.get("file")
        if sum(1 for given in (archive, folder, single) if given) != 1:
            self.add_error("archive", "Choose one input: a .zip of a folder, the folder itself, or one file.")
        elif folder:
            paths = cleaned.get("paths") or [item.name for item in folder]
            if len(paths) != len(folder):
                self.add_error("folder", "The folder's file paths do not match its files; choose it again.")
            else:
                cleaned["folder_files"] = list(zip(without_common_folder(paths), folder, strict=True))
        return cleaned
