"""`studio online-deployment ...`: a model version served behind an endpoint, from Azure ML deployment YAML.

A deployment YAML names local folders that the server cannot read: the model folder is registered,
the code folder uploaded and the conda file read here, and the server gets references to them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from studio.cli import output
from studio.cli.deployment_spec import local_references, read_deployment
from studio.cli.endpoint import endpoint_path
from studio.cli.errors import CliError
from studio.cli.generic_update import apply, changes, generic_update_options
from studio.cli.jobs import event_line, follow
from studio.cli.options import pass_client

if TYPE_CHECKING:
    from studio.cli.client import Client

DEPLOYMENT_COLUMNS: list[output.Column] = [
    output.Column("Name", lambda d: d["name"]),
    output.Column("Model", lambda d: d.get("model")),
    output.Column("Target", lambda d: d.get("target")),
    output.Column("Instances", lambda d: d.get("instance_count")),
    output.Column("Ready", lambda d: _ready(d)),
    output.Column("State", lambda d: d.get("provisioning_state")),
    output.Column("Updated", lambda d: output.when(d.get("updated_at"))),
]


def _ready(deployment: dict) -> str:
    replicas = deployment.get("replicas") or []
    return f"{sum(r.get('state') == 'ready' for r in replicas)}/{len(replicas)}"


def deployment_path(endpoint_name: str, name: str) -> str:
    return f"{endpoint_path(endpoint_name)}deployments/{quote(name, safe='')}/"


def show_deployment(deployment: dict) -> None:
    code = deployment.get("code_configuration") or {}
    environment = deployment.get("environment")
    if isinstance(environment, dict):
        parts = (("image", environment.get("image")), ("conda file", environment.get("conda_file")))
        environment = ", ".join(
            [str(value) if label == "image" else label for label, value in parts if value]
            + (["pip requirements"] if environment.get("pip_requirements") else [])
        )
    job = deployment.get("job") or {}
    output.emit_record(
        [
            ("Name", deployment["name"]),
            ("Endpoint", deployment.get("endpoint_name")),
            ("Description", deployment.get("description")),
            ("Tags", output.tags_text(deployment.get("tags"))),
            ("Model", deployment.get("model")),
            ("Code", code.get("code")),
            ("Scoring script", code.get("scoring_script")),
            ("Environment", environment),
            ("Target", deployment.get("target")),
            ("Instance type", deployment.get("instance_type")),
            ("Instances", deployment.get("instance_count")),
            ("State", deployment.get("provisioning_state")),
            ("Replicas", ", ".join(f"{r['id']} ({r['state']})" for r in deployment.get("replicas") or [])),
            ("Last job", f"{job['id']} ({job['kind']}: {job['state']})" if job else None),
            ("Warnings", "\n".join(deployment.get("warnings") or [])),
            ("Created", output.when(deployment.get("created_at"))),
            ("Updated", output.when(deployment.get("updated_at"))),
        ]
    )


@click.group("online-deployment")
def online_deployment() -> None:
    """Deploy model versions behind online endpoints, update, scale, watch and delete them."""


def _prepare(
    client: Client,
    spec_file: Path,
    endpoint_name: str | None,
    name: str | None,
    target: str | None,
    generic: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = ((), (), ()),
) -> tuple[str, str, dict[str, Any]]:
    """(endpoint, deployment, body): the YAML's fields, changed by --set/--add/--remove (`generic`), with
    local paths registered, uploaded or read."""
    spec, endpoint_name, name = read_deployment(spec_file, endpoint_name, name, generic)
    # Uploading a model and code takes a while: find out first that the endpoint is there.
    client.get(endpoint_path(endpoint_name))
    body = {
        **spec.fields,
        "name": name,
        "endpoint_name": endpoint_name,
        **local_references(client, spec, f"{endpoint_name}-{name}"),
    }
    if target:
        body["target"] = target
    return endpoint_name, name, body


def _warn(deployment: dict) -> None:
    for warning in deployment.get("warnings") or []:
        output.note(f"Warning: {warning}")


def _finish(client: Client, accepted: dict, label: str, wait: bool, output_format: str, done: str) -> None:
    """Follow the accepted change's job, then print the deployment as it is now."""
    job = follow(client, accepted["job"], label, wait=wait)
    if not wait:
        output.emit(accepted, output_format, show_deployment)
        return
    current = client.get(deployment_path(accepted["endpoint_name"], accepted["name"]))
    if output_format == "table" and job["state"] == "succeeded":
        output.note(done)
    output.emit(current, output_format, show_deployment)


spec_option = click.option(
    "-f",
    "--file",
    "spec_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML online deployment YAML. Local paths in it (model, code, conda file) are relative "
    "to the YAML file.",
)
endpoint_option = click.option(
    "-e", "--endpoint-name", "--endpoint", "endpoint_name", help="Overrides the YAML's endpoint_name."
)
no_wait_option = click.option("--no-wait", is_flag=True, help="Return once the job has started.")
# az ml's --local means "the deployment in local Docker": Studio's docker target.
LOCAL_TARGET = "docker"
local_option = click.option(
    "--local",
    is_flag=True,
    help="Only a deployment running in local Docker (target: docker), as `az ml ... --local` means.",
)


def _check_local(deployment: dict, local: bool) -> dict:
    """The deployment, if --local was not given or it runs in local Docker; else a CliError."""
    if local and deployment.get("target") != LOCAL_TARGET:
        raise CliError(
            f"Deployment {deployment.get('endpoint_name')}/{deployment['name']} runs on the "
            f"{deployment.get('target')} target, not in local Docker; drop --local to work with it."
        )
    return deployment


@online_deployment.command()
@spec_option
@endpoint_option
@click.option("-n", "--name", help="Overrides the YAML's name.")
@click.option(
    "--all-traffic",
    is_flag=True,
    help="Send all of the endpoint's live traffic to it once it succeeded (never before, never on failure).",
)
@click.option(
    "--local",
    is_flag=True,
    help="Run it in local Docker (target: docker), as `az ml ... --local` does. Without it, the YAML's "
    "target, or the server's default (local processes).",
)
@no_wait_option
@generic_update_options
@output.output_option
@pass_client
def create(
    client: Client,
    spec_file: Path,
    endpoint_name: str | None,
    name: str | None,
    all_traffic: bool,
    local: bool,
    no_wait: bool,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Create a deployment from an Azure ML deployment YAML and wait until it serves.

    A local model path is registered as a model version (reusing the newest version when it holds
    the same files), the code folder is uploaded, and the conda file is read and sent with the
    environment. Shows the job's progress and events; exits non-zero with the reason (and the
    replica's log) when it fails.
    """
    endpoint_name, name, body = _prepare(
        client, spec_file, endpoint_name, name, LOCAL_TARGET if local else None, (sets, adds, removes)
    )
    query = {"all_traffic": "true"} if all_traffic else None
    accepted = client.request("POST", f"{endpoint_path(endpoint_name)}deployments/", json=body, params=query)
    _warn(accepted)
    _finish(
        client,
        accepted,
        f"Creating deployment {endpoint_name}/{name}",
        not no_wait,
        output_format,
        f"Deployment {endpoint_name}/{name} is serving"
        + (" and takes all live traffic." if all_traffic else "."),
    )


@online_deployment.command()
@click.option(
    "-f",
    "--file",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An Azure ML online deployment YAML. Without it, --set/--add/--remove change the deployment "
    "as `show` prints it.",
)
@endpoint_option
@click.option("-n", "--name", help="The deployment's name. Default: the YAML's name.")
@click.option("--local", is_flag=True, help="Update a deployment running in local Docker (target: docker).")
@no_wait_option
@generic_update_options
@output.output_option
@pass_client
def update(
    client: Client,
    spec_file: Path | None,
    endpoint_name: str | None,
    name: str | None,
    local: bool,
    no_wait: bool,
    sets: tuple[str, ...],
    adds: tuple[str, ...],
    removes: tuple[str, ...],
    output_format: str,
) -> None:
    """Apply a changed deployment YAML, or --set/--add/--remove: new model, code, environment, settings
    or instance count (`--set instance_count=2`).

    Replicas are rolled over without dropping requests (new ones are ready before old ones leave);
    the endpoint's scoring URI and keys do not change. A change that needs no new replica (tags,
    description) is applied at once.
    """
    if spec_file is not None:
        target = LOCAL_TARGET if local else None
        endpoint_name, name, body = _prepare(
            client, spec_file, endpoint_name, name, target, (sets, adds, removes)
        )
        current = _check_local(client.get(deployment_path(endpoint_name, name)), local)
    else:
        if not (name and endpoint_name):
            raise click.UsageError("Say which deployment: --name and --endpoint-name, or -f deployment.yml.")
        if not (sets or adds or removes):
            raise click.UsageError("Nothing to change: give -f deployment.yml or --set/--add/--remove.")
        current = _check_local(client.get(deployment_path(endpoint_name, name)), local)
        body = changes(current, apply(current, sets, adds, removes))
        if not body:
            output.note(f"Deployment {endpoint_name}/{name} has these values already; nothing to change.")
            output.emit(current, output_format, show_deployment)
            return
    before = (current.get("job") or {}).get("id")
    accepted = client.request("PATCH", deployment_path(endpoint_name, name), json=body)
    _warn(accepted)
    # The server answers 200 without a job when nothing needs new replicas; the `job` shown then is the
    # deployment's earlier one, so only a job that was not there before is this change's.
    if (accepted.get("job") or {}).get("id") in (None, before):
        if output_format == "table":
            output.note(f"Updated deployment {endpoint_name}/{name}; no replica needed to change.")
        output.emit(accepted, output_format, show_deployment)
        return
    _finish(
        client,
        accepted,
        f"Updating deployment {endpoint_name}/{name}",
        not no_wait,
        output_format,
        f"Deployment {endpoint_name}/{name} is updated.",
    )


name_option = click.option("-n", "--name", required=True, help="The deployment's name.")
endpoint_required = click.option(
    "-e", "--endpoint-name", "--endpoint", "endpoint_name", required=True, help="The endpoint's name."
)


@online_deployment.command()
@name_option
@endpoint_required
@local_option
@output.output_option
@pass_client
def show(client: Client, name: str, endpoint_name: str, local: bool, output_format: str) -> None:
    """Show a deployment: model, code, environment, state, replicas and its last job."""
    found = _check_local(client.get(deployment_path(endpoint_name, name)), local)
    output.emit(found, output_format, show_deployment)


@online_deployment.command("list")
@endpoint_required
@local_option
@output.output_option
@pass_client
def list_(client: Client, endpoint_name: str, local: bool, output_format: str) -> None:
    """List an endpoint's deployments with their state and ready replicas (--local: those in Docker)."""
    deployments = client.collect(f"{endpoint_path(endpoint_name)}deployments/")
    if local:
        deployments = [found for found in deployments if found.get("target") == LOCAL_TARGET]
    output.emit(
        deployments,
        output_format,
        lambda rows: output.emit_table(
            rows,
            DEPLOYMENT_COLUMNS,
            empty=f"Endpoint {endpoint_name} has no deployment. "
            "Create one with `studio online-deployment create -f deployment.yml`.",
        ),
    )


@online_deployment.command()
@name_option
@endpoint_required
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@no_wait_option
@local_option
@pass_client
def delete(client: Client, name: str, endpoint_name: str, yes: bool, no_wait: bool, local: bool) -> None:
    """Delete a deployment and stop its replicas. Refused while it takes live traffic (set it to 0 first)."""
    if local:
        _check_local(client.get(deployment_path(endpoint_name, name)), local)
    if not yes:
        click.confirm(
            f"Delete deployment {endpoint_name}/{name}? This cannot be undone", abort=True, err=True
        )
    accepted = client.request("DELETE", deployment_path(endpoint_name, name))
    job = follow(client, accepted["job"], f"Deleting deployment {endpoint_name}/{name}", wait=not no_wait)
    if job["state"] == "succeeded":
        output.note(f"Deleted deployment {endpoint_name}/{name}.")


@online_deployment.command("get-logs")
@name_option
@endpoint_required
@click.option(
    "-l",
    "--lines",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="Lines per replica.",
)
@click.option(
    "-c",
    "--container",
    type=click.Choice(["inference-server", "storage-initializer"]),
    default="inference-server",
    show_default=True,
    help="inference-server: the replicas' logs; storage-initializer: how the model and code were "
    "fetched, from the events of the deployment's last job.",
)
@local_option
@output.output_option
@pass_client
def get_logs(
    client: Client,
    name: str,
    endpoint_name: str,
    lines: int,
    container: str,
    local: bool,
    output_format: str,
) -> None:
    """Print the last lines of each replica's log: the model server's output and the scoring script's.

    As az ml's containers: `--container storage-initializer` prints what prepared the replicas (model
    and code fetched, environment built), from the events of the deployment's last job.
    """
    if local or container == "storage-initializer":
        deployment = _check_local(client.get(deployment_path(endpoint_name, name)), local)
    if container == "storage-initializer":
        job = deployment.get("job") or {}
        text = "".join(f"{event_line(event)}\n" for event in (job.get("events") or [])[-lines:])
        if output_format == "json":
            output.emit_json({"deployment": name, "job": job.get("id"), "log": text})
            return
        if not job:
            output.note(f"Deployment {endpoint_name}/{name} has no job, so no storage initializer log.")
        click.echo(text, nl=False)
        return
    found = client.get(deployment_path(endpoint_name, name) + "logs/", params={"lines": lines})
    if output_format == "json":
        output.emit_json(found)
        return
    replicas = found.get("replicas") or []
    if not replicas:
        output.note(f"Deployment {endpoint_name}/{name} has no replica running, so no log to show.")
    for replica in replicas:
        # The header goes to stderr: stdout stays the logs, ready for grep.
        output.note(f"==> replica {replica['id']} ({replica['state']}) <==")
        click.echo(replica.get("log") or "", nl=not (replica.get("log") or "").endswith("\n"))


@online_deployment.command()
@click.option("-n", "--name", help="The deployment to package (with --endpoint-name).")
@click.option("-e", "--endpoint-name", "--endpoint", "endpoint_name", help="The deployment's endpoint.")
@click.option(
    "--model",
    "model_reference",
    help="Package a bare MLflow model version instead: azureml:NAME:VERSION (or NAME:VERSION).",
)
@click.option(
    "--mode",
    type=click.Choice(["offline", "online", "image"]),
    default="offline",
    show_default=True,
    help="offline: every wheel is in the context and the image builds with no network; online: pinned "
    "requirements only, fetched by pip at build time; image: build the image on the Docker engine of "
    "Studio's workers instead of writing a context.",
)
@click.option(
    "--output-path",
    type=click.Path(path_type=Path),
    help="A folder to write the context into (default: ./<context name>), or a file ending in .tar.gz.",
)
@no_wait_option
@pass_client
def package(
    client: Client,
    name: str | None,
    endpoint_name: str | None,
    model_reference: str | None,
    mode: str,
    output_path: Path | None,
    no_wait: bool,
) -> None:
    """Package a deployment or a model version: write its Docker build context, or build its image.

    Studio packages in a job (the Contributor role starts one) and this command waits for it. The context
    holds a Dockerfile, the model, the scoring code, the model server, a locked requirements file and, in
    offline mode, every wheel: build it anywhere with `docker build --network none -t TAG .`.
    """
    if model_reference and (name or endpoint_name):
        raise CliError("Give either --model or --name with --endpoint-name, not both.")
    if model_reference:
        model_name, _, version = model_reference.removeprefix("azureml:").rpartition(":")
        if not model_name or not version:
            raise CliError(f"--model {model_reference!r} is not azureml:NAME:VERSION.")
        source = f"/models/{quote(model_name, safe='')}/versions/{quote(version, safe='')}/package"
        label = f"Packaging model {model_name}:{version}"
    elif name and endpoint_name:
        source = deployment_path(endpoint_name, name) + "package/"
        label = f"Packaging deployment {endpoint_name}/{name}"
    else:
        raise CliError("Say what to package: --name and --endpoint-name, or --model azureml:NAME:VERSION.")
    if mode == "image" and output_path is not None:
        raise CliError("--output-path is for a build context; --mode image leaves the image on the engine.")
    if (
        output_path is not None
        and output_path.exists()
        and (output_path.is_file() or any(output_path.iterdir()))
    ):
        raise CliError(f"{output_path} exists already; remove it or choose another --output-path.")
    accepted = client.request("POST", source, json={"mode": mode})
    job = follow(client, accepted["job"], label, wait=not no_wait)
    if job["state"] != "succeeded":
        return
    if mode == "image":
        # The tag alone on stdout, for scripts: `docker run $(studio online-deployment package ...)`.
        built = re.search(r"Image (\S+) is ready", (job.get("events") or [{}])[-1].get("message", ""))
        if built:
            click.echo(built[1])
        return
    _save_context(client, job, mode, output_path)


def _save_context(client: Client, job: dict, mode: str, output_path: Path | None) -> None:
    """Download the context a package job wrote, as the .tar.gz asked for or unpacked into a folder."""
    import shutil
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".studio-package-", dir=Path.cwd()) as scratch:
        archive = Path(scratch) / "context.tar.gz"
        with archive.open("wb") as out:
            client.download(f"/jobs/{job['id']}/download", out, "Downloading the build context")
        if output_path is not None and output_path.name.endswith(".tar.gz"):
            shutil.move(archive, output_path)
            output.note(f"Saved the build context to {output_path}.")
            return
        unpacked = Path(scratch) / "unpacked"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        (top,) = list(unpacked.iterdir())
        destination = output_path or Path.cwd() / top.name
        if destination.exists() and any(destination.iterdir()):
            raise CliError(f"{destination} exists already; remove it or choose another --output-path.")
        if destination.exists():
            destination.rmdir()
        shutil.move(top, destination)
    output.note(f"Wrote the build context to {destination}. Build it with:")
    click.echo(
        f"docker build {'--network none ' if mode == 'offline' else ''}-t {top.name.lower()} {destination}"
    )
