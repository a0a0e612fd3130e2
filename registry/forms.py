"""Forms of the registry pages: registering a version, and editing what may change on one."""

import json

from django import forms
from django.core.exceptions import ValidationError

from registry.choices import DataTypeChoices, ModelTypeChoices
from registry.models import validate_name, validate_tags, validate_version


def parse_tag_lines(text: str) -> dict[str, str]:
    """`key=value` lines to a dict of tags; blank lines are skipped, a later key wins over an earlier one."""
    tags: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValidationError(
                f"Line {number} ({line!r}) is not of the form key=value, for example stage=prod."
            )
        tags[key.strip()] = value.strip()
    validate_tags(tags)
    return tags


def format_tag_lines(tags: dict) -> str:
    return "\n".join(f"{key}={value}" for key, value in tags.items())


class TagLinesField(forms.CharField):
    """Tags typed as one `key=value` per line, cleaned to a dict."""

    widget = forms.Textarea(
        attrs={"rows": 4, "placeholder": "stage=prod\nowner=fraud-team", "spellcheck": "false"}
    )

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", "One key=value per line.")
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return format_tag_lines(value) if isinstance(value, dict) else value

    def clean(self, value) -> dict[str, str]:
        return parse_tag_lines(super().clean(value) or "")


class MultipleFileInput(forms.FileInput):
    allow_multiple_selected = True


class FolderField(forms.FileField):
    """Every file of a chosen folder; cleaned to a list of uploaded files (empty files are fine)."""

    widget = MultipleFileInput(attrs={"webkitdirectory": True, "multiple": True})

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(allow_empty_file=True, **kwargs)

    def clean(self, data, initial=None) -> list:
        items = data if isinstance(data, (list, tuple)) else [data] if data else []
        return [super(FolderField, self).clean(item, initial) for item in items]


class ModelVersionRegisterForm(forms.Form):
    """Register a version from one file or from a folder, with its type, tags and description."""

    name = forms.CharField(
        max_length=255, validators=[validate_name], help_text="New or existing model name."
    )
    version = forms.CharField(
        max_length=64,
        required=False,
        validators=[validate_version],
        help_text="Leave empty for the next number.",
    )
    type = forms.ChoiceField(choices=ModelTypeChoices.choices, initial=ModelTypeChoices.CUSTOM)
    file = forms.FileField(required=False, allow_empty_file=True, label="A single file")
    folder = FolderField(label="Or a folder")
    # The path of each folder file inside the folder, in the order of `folder`: browsers keep it only
    # on the client (webkitRelativePath), and Django drops directories from uploaded names anyway.
    paths = forms.CharField(required=False, widget=forms.HiddenInput)
    tags = TagLinesField()
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    source = forms.CharField(
        max_length=1000, required=False, help_text="Where it came from: a run URI, a commit, a notebook."
    )

    def clean_paths(self) -> list[str]:
        raw = self.cleaned_data.get("paths") or ""
        if not raw:
            return []
        try:
            paths = json.loads(raw)
        except json.JSONDecodeError:
            raise ValidationError(
                "The folder's file paths could not be read; choose the folder again."
            ) from None
        if not isinstance(paths, list) or not all(isinstance(item, str) for item in paths):
            raise ValidationError("The folder's file paths could not be read; choose the folder again.")
        return paths

    def clean(self) -> dict:
        cleaned = super().clean()
        single, folder = cleaned.get("file"), cleaned.get("folder") or []
        if bool(single) == bool(folder):
            raise ValidationError("Choose either a single file or a folder to register.")
        if folder:
            paths = cleaned.get("paths") or [item.name for item in folder]
            if len(paths) != len(folder):
                raise ValidationError(
                    "The folder's file paths do not match its files; choose the folder again."
                )
            cleaned["folder_files"] = list(zip(without_common_folder(paths), folder, strict=True))
        return cleaned


def without_common_folder(paths: list[str]) -> list[str]:
    """Paths relative to the chosen folder: browsers prefix every path with the folder's own name."""
    split = [path.replace("\\", "/").split("/") for path in paths]
    tops = {parts[0] for parts in split}
    if len(tops) == 1 and all(len(parts) > 1 for parts in split):
        return ["/".join(parts[1:]) for parts in split]
    return paths


class ModelVersionTagsForm(forms.Form):
    tags = TagLinesField(label="Tags")


class ModelVersionDescriptionForm(forms.Form):
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))


class DataRegisterForm(forms.Form):
    """Register a data version from one uploaded file (a .zip or .tar.gz of a folder is unpacked for a
    uri_folder or mltable), or from a path already in the artifact store."""

    name = forms.CharField(
        max_length=255, validators=[validate_name], help_text="New or existing data asset."
    )
    version = forms.CharField(
        max_length=64,
        required=False,
        validators=[validate_version],
        help_text="Leave empty for the next number.",
    )
    type = forms.ChoiceField(choices=DataTypeChoices.choices, initial=DataTypeChoices.URI_FOLDER)
    file = forms.FileField(
        required=False,
        allow_empty_file=True,
        label="Upload a file",
        help_text="One file; for a folder, a .zip or .tar.gz of it (unpacked for uri_folder and mltable).",
    )
    path = forms.CharField(
        max_length=1000,
        required=False,
        label="Or a path in the store",
        help_text="Files already in Studio's artifact store: s3://bucket/folder/ (or file://, azureml://).",
        widget=forms.TextInput(
            attrs={"placeholder": "s3://studio-artifacts/landing/iris/", "spellcheck": "false"}
        ),
    )
    tags = TagLinesField()
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def clean(self) -> dict:
        cleaned = super().clean()
        if bool(cleaned.get("file")) == bool(cleaned.get("path")):
            raise ValidationError("Upload a file or give a path in the store, not both.")
        return cleaned
