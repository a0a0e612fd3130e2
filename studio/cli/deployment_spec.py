"""The local paths of an Azure ML deployment YAML (online or batch), made into references the server holds.

A deployment YAML names local folders that the server cannot read: the model folder is registered, the
code folder uploaded and the conda file read here, and the server gets `azureml:` references to them.
Online and batch deployments take the same `model`, `code_configuration` and `environment` fields.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from studio.cli import output
from studio.cli.environment import read_conda
from studio.cli.errors import ApiError, CliError
from studio.cli.generic_update import apply
from studio.cli.specs import Spec, read_yaml

if TYPE_CHECKING:
    from studio.cli.client import Client

# What an inline `environment:` may hold; Azure's other keys (build, inference_config, os_type) cannot be
# honoured by Studio and are reported.
INLINE_ENVIRONMENT_FIELDS = {"image", "conda_file", "pip_requirements", "name", "version", "description"}
# What an inline `model:` may hold besides its path.
INLINE_MODEL_FIELDS = {"path", "name", "version", "type", "description", "tags", "properties"}


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            sha.update(chunk)
    return sha.hexdigest()


def register_model(client: Client, spec: Spec, model: dict, default_name: str) -> str:
    """Register the model a YAML gives as a local path; its reference `azureml:name:version`.

    When the newest version of that name already holds the same bytes and type, it is reused: running
    `update` again with an unchanged model must not register a copy and roll every replica over.
    """
    # Imported here: only deployments with a local model zip a folder or register one.
    from studio.cli.archives import content_digest, folder_files
    from studio.cli.model import register

    for key in sorted(set(model) - INLINE_MODEL_FIELDS):
        output.note(f"Warning: {spec.path.name}: model.{key} is not supported by Studio and is ignored.")
    fields = Spec(spec.path, model)
    path = fields.local_path("path")
    if path is None or not path.exists():
        raise CliError(f"{spec.path}: the model path {model.get('path')!r} does not exist ({path}).")
    if fields.get("type"):
        type_ = str(fields.get("type"))
    else:
        # As Azure does: a folder holding an MLmodel file is an MLflow model, served without code.
        type_ = "mlflow_model" if path.is_dir() and (path / "MLmodel").is_file() else "custom_model"
    name = str(fields.get("name") or default_name)
    digest = content_digest(folder_files(path)) if path.is_dir() else _file_digest(path)
    if not fields.get("version"):
        try:
            latest = client.get(f"/models/{quote(name, safe='')}/versions/latest/")
        except ApiError as exc:
            if exc.status != 404:
                raise
        else:
            if latest.get("digest") == digest and latest.get("type") == type_:
                output.note(f"Model {name} version {latest['version']} holds these files already; using it.")
                return f"azureml:{name}:{latest['version']}"
    registration = {
        "name": name,
        "type": type_,
        "tags": fields.text_map("tags"),
        "properties": fields.text_map("properties"),
        **{key: str(fields.get(key)) for key in ("version", "description") if fields.get(key) is not None},
    }
    created = register(client, registration, path)
    output.note(f"Registered model {created['name']} version {created['version']} from {path}.")
    return f"azureml:{created['name']}:{created['version']}"


def upload_code(client: Client, spec: Spec, code: dict) -> dict:
    """`code_configuration` with its local folder uploaded: `code` becomes `azureml:code:<sha256>`."""
    reference = code.get("code")
    if not isinstance(reference, str) or reference.startswith("azureml:"):
        return code  # already uploaded, or malformed: the server says what is wrong with it
    folder = Spec(spec.path, code).local_path("code")
    assert folder is not None
    if not folder.is_dir():
        raise CliError(
            f"{spec.path}: code_configuration.code must be a folder holding the scoring script; {folder} "
            "is not one."
        )
    script = code.get("scoring_script")
    if isinstance(script, str) and not (folder / script).is_file():
        raise CliError(f"{spec.path}: the scoring script {script!r} is not in {folder}.")
    # Imported here: only deployments with code zip a folder.
    from studio.cli.archives import zipped_folder

    # Scoring scripts are found relative to the code folder itself, so its contents go at the top.
    with zipped_folder(folder, keep_top=False) as archive:
        uploaded = client.upload("/code/", {}, "archive", archive, f"Uploading code {archive.stem}")
    return {**code, "code": uploaded["id"]}


def inline_environment(spec: Spec, environment: Any) -> Any:
    """An inline environment with its conda file read (relative to the YAML); a reference as it is."""
    if not isinstance(environment, dict):
        return environment
    for key in sorted(set(environment) - INLINE_ENVIRONMENT_FIELDS):
        output.note(
            f"Warning: {spec.path.name}: environment.{key} is not supported by Studio and is ignored."
        )
    inline = {key: environment[key] for key in ("image", "pip_requirements") if environment.get(key)}
    if isinstance(inline.get("pip_requirements"), list):
        inline["pip_requirements"] = "\n".join(map(str, inline["pip_requirements"]))
    conda = read_conda(Spec(spec.path, environment))
    if conda is not None:
        inline["conda_file"] = conda
    return inline


def local_references(client: Client, spec: Spec, default_model_name: str) -> dict[str, Any]:
    """The deployment fields of `spec` that name local paths, as the server takes them: the model
    registered (named `default_model_name` unless the YAML names it), the code uploaded, the conda file
    read. Fields that name nothing local are left out."""
    fields = spec.fields
    found: dict[str, Any] = {}
    model = fields.get("model")
    # `model: ./model` is Azure's short form of `model: {path: ./model}`.
    is_path = isinstance(model, str) and not model.startswith("azureml:")
    if is_path and (spec.path.parent / model.removeprefix("file:")).exists():
        model = {"path": model}
    if isinstance(model, dict) and "path" in model:
        found["model"] = register_model(client, spec, model, default_model_name)
    if isinstance(fields.get("code_configuration"), dict):
        found["code_configuration"] = upload_code(client, spec, fields["code_configuration"])
    if "environment" in fields:
        found["environment"] = inline_environment(spec, fields["environment"])
    return found


def read_deployment(
    spec_file: Path,
    endpoint_name: str | None,
    name: str | None,
    generic: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = ((), (), ()),
) -> tuple[Spec, str, str]:
    """(spec, endpoint, deployment): the YAML's fields changed by --set/--add/--remove (`generic`), and
    the names the command line gives or else the YAML's."""
    fields = read_yaml(spec_file, "the deployment file")
    if not isinstance(fields, dict):
        raise CliError(f"{spec_file} must be a YAML mapping of deployment fields (name, model, ...).")
    # `$schema` only helps editors; other fields the server ignores come back as its warnings.
    fields.pop("$schema", None)
    fields = apply(fields, *generic)
    endpoint_name = endpoint_name or fields.get("endpoint_name")
    name = name or fields.get("name")
    if not endpoint_name:
        raise click.UsageError("Say which endpoint: --endpoint-name, or `endpoint_name:` in the YAML file.")
    if not name:
        raise click.UsageError("Give the deployment a name: --name, or `name:` in the YAML file.")
    return Spec(spec_file.resolve(), fields), str(endpoint_name), str(name)
