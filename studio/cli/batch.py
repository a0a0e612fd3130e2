"""`studio batch-endpoint ...` and `studio batch-deployment ...`: batch scoring, as `az ml` does it.

An invocation starts a job that scores every file of its input and writes the predictions to the artifact
store; `invoke` returns at once with the job (Azure's behaviour), and `studio job stream` follows it. A
local file or folder given as input is uploaded with the invocation; a data asset (`azureml:name@latest`)
or a location in the store (`s3://...`) is read by the server where it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from studio.cli import credentials, output
from studio.cli.errors import CliError
from studio.cli.generic_update import apply, changes, generic_update_options
from studio.cli.job import emit_jobs, list_jobs, show_job
from studio.cli.options import pass_client
from studio.cli.specs import load_spec

if TYPE_CHECKING:
    from studio.cli.client import Client

# Azure ML's batch endpoint YAML fields that Studio honours; others are reported by `load_spec`.
ENDPOINT_FIELDS = {"name", "description", "tags", "auth_mode", "defaults"}
AUTH_MODES = ["aml_token", "key"]
INPUT_TYPES = ["uri_folder", "uri_file"]
# What an invocation can set (`--set` included); the batch settings belong to the deployment.
INVOKE_FIELDS = {"input", "deployment_name", "output_file_name", "mini_batch_size", "instance_count"}
# Inputs the server reads where they are, rather than files on this machine.
REMOTE_INPUTS = ("azureml:", "s3://", "azureml://", "http://", "https://")


def endpoint_path(name: str) -> str:
    return f"/batch-endpoints/{quote(name, safe='')}/"


def deployment_path(endpoint_name: str, name: str) -> str:
    return f"{endpoint_path(endpoint_name)}deployments/{quote(name, safe='')}/"


def _default_deployment(endpoint: dict) -> str | None:
    return (endpoint.get("defaults") or {}).get("deployment_name") or None


ENDPOINT_COLUMNS: list[output.Column] = [
    output.Column("Name", lambda e: e["name"]),
    output.Column("Auth", lambda e: e.get("auth_mode")),
    output.Column("Default deployment", _default_deployment),
    output.Column("Deployments", lambda e: ", ".join(e.get("deployments") or []), wrap=True),
    output.Column("State", lambda e: e.get("provisioning_state")),
    output.Column("Scoring URI", lambda e: e.get("scoring_uri")),
]


def print_endpoint(endpoint: dict) -> None:
    output.emit_record(
        [
            ("Name", endpoint["name"]),
            ("Description", endpoint.get("description")),
            ("Tags", output.tags_text(endpoint.get("tags"))),
            ("Auth mode", endpoint.get("auth_mode")),
            ("State", endpoint.get("provisioning_state")),
            ("Default deployment", _default_deployment(endpoint)),
            ("Deployments", ", ".join(endpoint.get("deployments") or [])),
            ("Scoring URI", endpoint.get("scoring_uri")),
            ("Created", output.when(endpoint.get("created_at"))),
        ]
    )


def _settings(deployment: dict) -> dict:
    return deployment.get("settings") or {}


DEPLOYMENT_COLUMNS: list[output.Column] = [
    output.Column("Name", lambda d: d["name"]),
    output.Column("Model", lambda d: d.get("model")),
    output.Column("Scoring script", lambda d: (d.get("code_configuration") or {}).get("scoring_script")),
    output.Column("Instances", lambda d: (d.get("resources") or {}).get("instance_count")),
    output.Column("Concurrency", lambda d: _settings(d).get("max_concurrency_per_instance")),
    output.Column("Mini-batch", lambda d: _settings(d).get("mini_batch_size")),
    output.Column("Output", lambda d: _settings(d).get("output_action")),
    output.Column("State", lambda d: d.get("provisioning_state")),
]


def print_deployment(deployment: dict) -> None:
    settings = _settings(deployment)
    code = deployment.get("code_configuration") or {}
    retry = settings.get("retry_settings") or {}
    environment = deployment.get("environment")
    output.emit_record(
        [
            ("Name", deployment["name"]),
            ("Endpoint", deployment.get("endpoint_name")),
            ("Description", deployment.get("description")),
            ("Tags", output.tags_text(deployment.get("tags"))),
            ("Model", deployment.get("model")),
            ("Code", code.get("code")),
            ("Scoring script", code.get("scoring_script")),
            (
                "Environment",
                environment if isinstance(environment, str) else "inline" if environment else None,
            ),
            ("Compute", deployment.get("compute")),
            ("Instances", (deployment.get("resources") or {}).get("instance_count")),
            ("Concurrency per instance", settings.get("max_concurrency_per_instance")),
            ("Mini-batch size", settings.get("mini_batch_size")),
            ("Output action", settings.get("output_action")),
            ("Output file", settings.get("output_file_name")),
            ("Retries", f"{retry.get('max_retries')}, {retry.get('timeout')}s timeout" if retry else None),
            ("Error threshold", settings.get("error_threshold")),
            ("Logging level", settings.get("logging_level")),
            ("State", deployment.get("provisioning_state")),
            ("Warnings", "\n".join(deployment.get("warnings") or [])),
        ]
    )


def _warn(resource: dict) -> None:
    for warning in resource.get("warnings") or []:
        output.note(f"Warning: {warning}")


endpoint_name_option = click.option("-n", "--name", required=True, help="The batch endpoint's name.")
no_wait_option = click.option(
    "--no-wait", is_flag=True, help="Accepted as az's; batch endpoints and deployments are ready at once."
)
spec_file_option = click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML batch endpoint YAML (name, description, tags, auth_mode, defaults).",
)


@click.group("batch-endpoint")
def batch_endpoint() -> None:
    """Create batch endpoints and invoke them: each invocation scores a folder of files in a job."""


@batch_endpoint.command("create")
@spec_file_option
@click.option("-n", "--name", help="The endpoint's name: 3-32 letters, digits and single dashes.")
@no_wait_option
@generic_update_options
@output.output_option
@pass_client
def create_endpoint(
    client: Client,
    spec_file: Path | None,
    name: str | None,
    no_wait: bool,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Create a batch endpoint, from a YAML file or from --name.

    Invoking it needs a deployment: create one with `studio batch-deployment create --set-default`.
    """
    body: dict[str, Any] = dict(load_spec(spec_file, ENDPOINT_FIELDS).fields) if spec_file else {}
    if name:
        body["name"] = name
    body = apply(body, sets, adds, removes)
    if not body.get("name"):
        raise click.UsageError("Give the endpoint a name: --name, or `name:` in the YAML file.")
    created = client.request("POST", "/batch-endpoints/", json=body)
    _warn(created)
    if output_format == "table":
        output.note(f"Created batch endpoint {created['name']} ({created.get('auth_mode')} auth).")
    output.emit(created, output_format, print_endpoint)


@batch_endpoint.command("update")
@click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML batch endpoint YAML; its description, tags and defaults replace the endpoint's.",
)
@click.option("-n", "--name", help="The endpoint's name. Default: the YAML's name.")
@no_wait_option
@generic_update_options
@output.output_option
@pass_client
def update_endpoint(
    client: Client,
    spec_file: Path | None,
    name: str | None,
    no_wait: bool,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Change a batch endpoint's description, tags or default deployment.

    Without -f, --set/--add/--remove change the endpoint as `show` prints it, e.g.
    --set defaults.deployment_name=D to run later invocations on deployment D.
    """
    patch: dict[str, Any] = dict(load_spec(spec_file, ENDPOINT_FIELDS).fields) if spec_file else {}
    name = name or patch.get("name")
    if not name:
        raise click.UsageError("Say which endpoint: --name, or `name:` in the YAML file.")
    if spec_file:
        patch = apply(patch, sets, adds, removes)
    elif sets or adds or removes:
        current = client.get(endpoint_path(name))
        patch = changes(current, apply(current, sets, adds, removes))
    else:
        raise click.UsageError("Nothing to change: give -f endpoint.yml or --set/--add/--remove.")
    # The name identifies the endpoint; it is not something to change.
    patch.pop("name", None)
    updated = (
        client.request("PATCH", endpoint_path(name), json=patch) if patch else client.get(endpoint_path(name))
    )
    _warn(updated)
    if output_format == "table":
        output.note(f"Updated batch endpoint {updated['name']}.")
    output.emit(updated, output_format, print_endpoint)


@batch_endpoint.command("show")
@endpoint_name_option
@output.output_option
@pass_client
def show_endpoint(client: Client, name: str, output_format: str) -> None:
    """Show a batch endpoint: its deployments, default deployment and scoring URI."""
    output.emit(client.get(endpoint_path(name)), output_format, print_endpoint)


@batch_endpoint.command("list")
@output.output_option
@pass_client
def list_endpoints(client: Client, output_format: str) -> None:
    """List the batch endpoints. With -o json, a JSON array of the server's items (all pages)."""
    endpoints = client.collect("/batch-endpoints/")
    output.emit(
        endpoints,
        output_format,
        lambda rows: output.emit_table(
            rows,
            ENDPOINT_COLUMNS,
            empty="No batch endpoint yet. Create one with `studio batch-endpoint create -f endpoint.yml`.",
        ),
    )


@batch_endpoint.command("delete")
@endpoint_name_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@no_wait_option
@pass_client
def delete_endpoint(client: Client, name: str, yes: bool, no_wait: bool) -> None:
    """Delete a batch endpoint with its deployments. Its jobs' records and outputs are kept."""
    if not yes:
        click.confirm(
            f"Delete batch endpoint {name} and all its deployments? This cannot be undone",
            abort=True,
            err=True,
        )
    client.request("DELETE", endpoint_path(name))
    output.note(f"Deleted batch endpoint {name}.")


def _input_body(
    source: str, input_type: str | None, deployment_name: str | None, output_file_name: str | None
) -> dict[str, Any]:
    """The JSON invocation for an input the server reads where it is."""
    body: dict[str, Any] = {"input": {"type": input_type or "uri_folder", "path": source}}
    if deployment_name:
        body["deployment_name"] = deployment_name
    if output_file_name:
        body["output_file_name"] = output_file_name
    return body


def _upload_input(client: Client, path: str, local: Path, body: dict[str, Any]) -> dict:
    """Invoke with a local file or folder: the file as it is, a folder zipped with paths relative to it
    (the names the scoring code and the output's `file` column see)."""
    fields = {
        "input_type": body["input"]["type"],
        **{key: str(body[key]) for key in sorted(INVOKE_FIELDS - {"input"}) if body.get(key)},
    }
    if local.is_file():
        return client.upload(path, fields, "file", local, f"Uploading {local.name}")
    # Imported here: only a local folder is zipped.
    from studio.cli.archives import zipped_folder

    if not any(found.is_file() for found in local.rglob("*")):
        raise CliError(f"The folder {local} holds no files; there is nothing to score.")
    with zipped_folder(local, keep_top=False) as archive:
        return client.upload(path, fields, "archive", archive, f"Uploading {local.name}")


@batch_endpoint.command()
@endpoint_name_option
@click.option(
    "--input",
    "source",
    required=True,
    help="What to score: a local folder or file (uploaded), a data asset azureml:NAME@latest or "
    "azureml:NAME:VERSION, or an s3:// location in Studio's artifact store.",
)
@click.option(
    "--input-type",
    type=click.Choice(INPUT_TYPES),
    help="uri_folder (every file in it) or uri_file (one file). Default: what a local input is, else "
    "uri_folder.",
)
@click.option(
    "-d",
    "--deployment-name",
    "--deployment",
    "deployment_name",
    help="Run on this deployment rather than the endpoint's default.",
)
@click.option(
    "--output-file-name",
    help="The predictions file's name in the job's output (default: the deployment's output_file_name). "
    "Azure's `--set output_file_name=...` does the same.",
)
@click.option("--mini-batch-size", type=click.IntRange(min=1), help="Files per mini-batch for this job only.")
@click.option(
    "--instance-count",
    type=click.IntRange(min=1),
    help="Instances for this job only (each runs the deployment's max_concurrency_per_instance).",
)
@click.option(
    "--experiment-name",
    help="Azure only: accepted and ignored (Studio lists a batch endpoint's jobs with the endpoint).",
    hidden=True,
)
@generic_update_options
@output.output_option
@pass_client
def invoke(
    client: Client,
    name: str,
    source: str,
    input_type: str | None,
    deployment_name: str | None,
    output_file_name: str | None,
    mini_batch_size: int | None,
    instance_count: int | None,
    experiment_name: str | None,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Start a batch scoring job on the endpoint's input and print the job; it runs in the background.

    Follow it with `studio job stream --name JOB`, fetch its predictions with `studio job download
    --name JOB`. `--query name -o tsv` prints the job's name alone, for scripts. --set changes the
    invocation's fields (output_file_name, deployment_name, mini_batch_size, instance_count) as az's does.
    """
    if experiment_name:
        output.note("Warning: --experiment-name is for Azure and ignored: Studio lists jobs by endpoint.")
    local = None if source.startswith(REMOTE_INPUTS) else Path(source)
    if local is not None and not local.exists():
        raise CliError(
            f"--input {source!r} is neither a local file or folder nor a data asset (azureml:NAME@latest, "
            "azureml:NAME:VERSION) or an s3:// location. Check the path."
        )
    if local is not None and input_type is None:
        input_type = "uri_file" if local.is_file() else "uri_folder"
    if local is not None and local.is_file() != (input_type == "uri_file"):
        raise CliError(
            f"--input {source} is a {'file' if local.is_file() else 'folder'}, but --input-type is "
            f"{input_type}: leave --input-type out, or give the other one."
        )
    body = _input_body(source, input_type, deployment_name, output_file_name)
    body.update(
        (key, value)
        for key, value in (("mini_batch_size", mini_batch_size), ("instance_count", instance_count))
        if value is not None
    )
    body = apply(body, sets, adds, removes)
    unknown = sorted(set(body) - INVOKE_FIELDS)
    if unknown:
        raise CliError(
            f"--set on an invocation changes deployment_name, output_file_name, mini_batch_size or "
            f"instance_count, not {', '.join(unknown)}. Other batch settings belong to the deployment: "
            "`studio batch-deployment update --set settings.error_threshold=...`."
        )
    jobs = f"{endpoint_path(name)}jobs/"
    if local is None:
        started = client.request("POST", jobs, json=body)
    else:
        # Uploading takes a while: find out first that the endpoint is there and has a deployment to run.
        endpoint = client.get(endpoint_path(name))
        if not body.get("deployment_name") and not _default_deployment(endpoint):
            raise CliError(
                f"Batch endpoint {name} has no default deployment: name one with --deployment-name, or set "
                f"one with `studio batch-endpoint update --name {name} --set defaults.deployment_name=D`."
            )
        started = _upload_input(client, jobs, local, body)
    if output_format == "table":
        output.note(
            f"Started batch job {started['name']} on {name}/{started.get('deployment_name')}. "
            f"Follow it with `studio job stream --name {started['name']}`."
        )
    output.emit(started, output_format, show_job)


@batch_endpoint.command("list-jobs")
@endpoint_name_option
@output.output_option
@pass_client
def endpoint_jobs(client: Client, name: str, output_format: str) -> None:
    """List a batch endpoint's jobs, newest first."""
    # Asked first so an unknown endpoint is a 404 with the server's message, not an empty list.
    client.get(endpoint_path(name))
    emit_jobs(list_jobs(client, name), output_format, f"Batch endpoint {name} has no job yet.")


@batch_endpoint.command("get-credentials")
@endpoint_name_option
@output.output_option
@pass_client
def get_credentials(client: Client, name: str, output_format: str) -> None:
    """Print the endpoint's keys (key auth), or a fresh token with its expiry (aml_token auth): either
    invokes it and reads its jobs, as `Authorization: Bearer <key or token>`."""
    credentials.show(client, endpoint_path(name), output_format)


@batch_endpoint.command("regenerate-keys")
@endpoint_name_option
@credentials.key_type_option
@pass_client
def regenerate_keys(client: Client, name: str, key_type: str) -> None:
    """Replace one of a key-auth batch endpoint's two keys; the old one stops working at once."""
    credentials.regenerate(client, endpoint_path(name), name, key_type, "batch-endpoint")


@click.group("batch-deployment")
def batch_deployment() -> None:
    """Create the deployments batch endpoints score with: a model, optional scoring code, batch settings."""


deployment_name_option = click.option("-n", "--name", required=True, help="The deployment's name.")
endpoint_required = click.option(
    "-e", "--endpoint-name", "--endpoint", "endpoint_name", required=True, help="The batch endpoint's name."
)


def _prepare(
    client: Client,
    spec_file: Path,
    endpoint_name: str | None,
    name: str | None,
    generic: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]],
) -> tuple[str, str, dict[str, Any]]:
    """(endpoint, deployment, body): the YAML's fields with local paths registered, uploaded or read."""
    # Imported here: only create and update from a YAML file register models or upload code.
    from studio.cli.deployment_spec import local_references, read_deployment

    spec, endpoint_name, name = read_deployment(spec_file, endpoint_name, name, generic)
    # Uploading a model and code takes a while: find out first that the endpoint is there.
    client.get(endpoint_path(endpoint_name))
    body = {
        **spec.fields,
        "name": name,
        "endpoint_name": endpoint_name,
        **local_references(client, spec, f"{endpoint_name}-{name}"),
    }
    return endpoint_name, name, body


@batch_deployment.command("create")
@click.option(
    "-f",
    "--file",
    "spec_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML batch deployment YAML. Local paths in it (model, code, conda file) are relative to "
    "the YAML file.",
)
@click.option(
    "-e", "--endpoint-name", "--endpoint", "endpoint_name", help="Overrides the YAML's endpoint_name."
)
@click.option("-n", "--name", help="Overrides the YAML's name.")
@click.option("--set-default", is_flag=True, help="Make it the endpoint's default deployment.")
@no_wait_option
@generic_update_options
@output.output_option
@pass_client
def create_deployment(
    client: Client,
    spec_file: Path,
    endpoint_name: str | None,
    name: str | None,
    set_default: bool,
    no_wait: bool,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Create a batch deployment from an Azure ML batch deployment YAML.

    A local model path is registered as a model version (reusing the newest version when it holds the
    same files), the code folder is uploaded and the conda file read. The first deployment of an endpoint
    becomes its default; --set-default makes any other one the default.
    """
    endpoint_name, name, body = _prepare(client, spec_file, endpoint_name, name, (sets, adds, removes))
    query = {"set_default": "true"} if set_default else None
    created = client.request("POST", f"{endpoint_path(endpoint_name)}deployments/", json=body, params=query)
    _warn(created)
    if output_format == "table":
        default = " It is the endpoint's default." if set_default else ""
        output.note(f"Created batch deployment {endpoint_name}/{name}.{default}")
    output.emit(created, output_format, print_deployment)


@batch_deployment.command("update")
@click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML batch deployment YAML. Without it, --set/--add/--remove change the deployment as "
    "`show` prints it.",
)
@click.option(
    "-e", "--endpoint-name", "--endpoint", "endpoint_name", help="Default: the YAML's endpoint_name."
)
@click.option("-n", "--name", help="The deployment's name. Default: the YAML's name.")
@click.option("--set-default", is_flag=True, help="Make it the endpoint's default deployment.")
@no_wait_option
@generic_update_options
@output.output_option
@pass_client
def update_deployment(
    client: Client,
    spec_file: Path | None,
    endpoint_name: str | None,
    name: str | None,
    set_default: bool,
    no_wait: bool,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Change a batch deployment: model, code, environment or settings (`--set settings.mini_batch_size=5`).

    Jobs already started keep the deployment as it was when they were invoked.
    """
    if spec_file is not None:
        endpoint_name, name, body = _prepare(client, spec_file, endpoint_name, name, (sets, adds, removes))
    else:
        if not (name and endpoint_name):
            raise click.UsageError("Say which deployment: --name and --endpoint-name, or -f deployment.yml.")
        if not (sets or adds or removes or set_default):
            raise click.UsageError(
                "Nothing to change: give -f deployment.yml, --set/--add/--remove or --set-default."
            )
        current = client.get(deployment_path(endpoint_name, name))
        body = changes(current, apply(current, sets, adds, removes))
        if not body and not set_default:
            output.note(f"Deployment {endpoint_name}/{name} has these values already; nothing to change.")
            output.emit(current, output_format, print_deployment)
            return
    query = {"set_default": "true"} if set_default else None
    updated = client.request("PATCH", deployment_path(endpoint_name, name), json=body, params=query)
    _warn(updated)
    if output_format == "table":
        default = " It is the endpoint's default." if set_default else ""
        output.note(f"Updated batch deployment {endpoint_name}/{name}.{default}")
    output.emit(updated, output_format, print_deployment)


@batch_deployment.command("show")
@deployment_name_option
@endpoint_required
@output.output_option
@pass_client
def show_deployment(client: Client, name: str, endpoint_name: str, output_format: str) -> None:
    """Show a batch deployment: model, code, environment and batch settings."""
    output.emit(client.get(deployment_path(endpoint_name, name)), output_format, print_deployment)


@batch_deployment.command("list")
@endpoint_required
@output.output_option
@pass_client
def list_deployments(client: Client, endpoint_name: str, output_format: str) -> None:
    """List a batch endpoint's deployments."""
    deployments = client.collect(f"{endpoint_path(endpoint_name)}deployments/")
    output.emit(
        deployments,
        output_format,
        lambda rows: output.emit_table(
            rows,
            DEPLOYMENT_COLUMNS,
            empty=f"Batch endpoint {endpoint_name} has no deployment. "
            "Create one with `studio batch-deployment create -f deployment.yml`.",
        ),
    )


@batch_deployment.command("delete")
@deployment_name_option
@endpoint_required
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@no_wait_option
@pass_client
def delete_deployment(client: Client, name: str, endpoint_name: str, yes: bool, no_wait: bool) -> None:
    """Delete a batch deployment. Refused while it has jobs running, or while it is the endpoint's default
    and others exist (make another the default first)."""
    if not yes:
        click.confirm(
            f"Delete batch deployment {endpoint_name}/{name}? This cannot be undone", abort=True, err=True
        )
    client.request("DELETE", deployment_path(endpoint_name, name))
    output.note(f"Deleted batch deployment {endpoint_name}/{name}.")


@batch_deployment.command("list-jobs")
@deployment_name_option
@endpoint_required
@output.output_option
@pass_client
def deployment_jobs(client: Client, name: str, endpoint_name: str, output_format: str) -> None:
    """List the jobs that ran on a batch deployment, newest first."""
    client.get(deployment_path(endpoint_name, name))
    jobs = [found for found in list_jobs(client, endpoint_name) if found.get("deployment_name") == name]
    emit_jobs(jobs, output_format, f"Batch deployment {endpoint_name}/{name} has no job yet.")
