"""Batch endpoint pages: the list, the creation wizard, an endpoint (consume, deployments, jobs, invoke),
a deployment, and a job whose progress the page polls while it runs.

Views stay thin: creating, invoking and cancelling go through endpoints.batch_services, the functions the
REST API calls, so a page refuses exactly what the API refuses; progress and logs are the execution
engine's (endpoints.batch_execution), the same numbers the API and the CLI show.
"""

from urllib.parse import urlencode

from django.contrib import messages
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views import View
from rest_framework.exceptions import APIException

from endpoints import batch_execution, batch_services, batch_specs
from endpoints.batch_forms import (
    DATA_ASSET,
    BatchEndpointStepForm,
    BatchInvokeForm,
    BatchSettingsStepForm,
)
from endpoints.choices import AuthModeChoices, MiniBatchStateChoices
from endpoints.filtersets import BatchEndpointFilterSet
from endpoints.forms import (
    CONDA_ENV,
    EXISTING,
    NEW,
    REGISTERED_ENV,
    SCRIPT,
    CodeStepForm,
    ModelStepForm,
    add_service_errors,
    resolve_version,
)
from endpoints.models import BatchDeployment, BatchEndpoint, BatchJob, CodeSnapshot, MiniBatch
from endpoints.tables import BatchEndpointTable, BatchJobTable, batch_job_badge, mini_batch_badge
from endpoints.views import CodeStepMixin, WizardStep, _archive_of, _refusal_text, model_picker
from registry.choices import ModelTypeChoices
from registry.models import ModelVersion
from studio.choices import RoleChoices
from studio.errors import Refused
from studio.views import ObjectListView, StudioPageMixin

JOBS_SHOWN = 25
RECENT_JOBS = 10
LOG_LINES = 200
FAILED_SHOWN = 50


def _endpoint(name: str) -> BatchEndpoint:
    return get_object_or_404(BatchEndpoint, name=name)


def jobs_uri(request: HttpRequest, endpoint: BatchEndpoint) -> str:
    """Where clients POST invocations: the REST route, on the host the page was asked on (as the API's
    `scoring_uri`)."""
    return request.build_absolute_uri(reverse("endpoints-api:batchendpoint-jobs", args=[endpoint.name]))


def outputs_url(job: BatchJob, path: str = "") -> str:
    """The REST route that serves a job's output folder as a zip, or one file of it; the page's session
    signs the browser in there too."""
    url = reverse("endpoints-api:batchjob-outputs", args=[job.pk])
    return f"{url}?{urlencode({'path': path})}" if path else url


# The list


class BatchEndpointListView(ObjectListView):
    filterset_class = BatchEndpointFilterSet
    table_class = BatchEndpointTable
    template_name = "endpoints/batch/batchendpoint_list.html"
    empty_template = "endpoints/batch/inc/batchendpoint_empty.html"
    filter_params = ("q", "name", "auth_mode", "tag")

    def get_queryset(self):
        last = BatchJob.objects.filter(endpoint=OuterRef("pk")).order_by("-created_at")
        return BatchEndpoint.objects.prefetch_related("deployments").annotate(
            last_job_state=Subquery(last.values("state")[:1])
        )

    def get_extra_context(self) -> dict:
        return {"auth_modes": AuthModeChoices.choices}


# One endpoint


def _deployment_rows(endpoint: BatchEndpoint) -> list[BatchDeployment]:
    return list(
        endpoint.deployments.select_related("model_version__model", "environment_version__environment")
    )


class BatchEndpointView(StudioPageMixin, View):
    """Details, how to invoke it (URI, credentials, curl and CLI), its deployments, its jobs (a table whose
    pages and sorting htmx swaps in place) and the Invoke form."""

    template_name = "endpoints/batch/batchendpoint.html"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        context = self.context(request, endpoint)
        partial = bool(request.htmx) and not request.htmx.history_restore_request
        template = "inc/results.html" if partial else self.template_name
        response = render(request, template, context)
        patch_vary_headers(response, ["HX-Request"])
        return response

    @staticmethod
    def context(request: HttpRequest, endpoint: BatchEndpoint, **extra) -> dict:
        jobs = BatchJob.objects.filter(endpoint=endpoint).select_related("created_by")
        return {
            "object": endpoint,
            "deployments": _deployment_rows(endpoint),
            "jobs_uri": jobs_uri(request, endpoint),
            "table": BatchJobTable(jobs, request, per_page=JOBS_SHOWN),
            "filter_errors": [],
            "has_filters": False,
            "empty_template": "endpoints/batch/inc/jobs_empty.html",
            "invoke_form": extra.pop("invoke_form", None) or BatchInvokeForm(endpoint=endpoint),
            "token": endpoint.auth_mode == AuthModeChoices.AML_TOKEN,
            **extra,
        }


class BatchInvokeView(StudioPageMixin, View):
    """POST the Invoke form: the files go to the store and the job starts, through the service the REST
    API's invoke calls; then the job's page."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        form = BatchInvokeForm(request.POST, request.FILES, endpoint=endpoint)
        if form.is_valid():
            try:
                job = invoke(endpoint, form, request.user)
            except (Refused, APIException) as exc:
                add_service_errors(
                    form, exc, {"input": "archive", "file": "file", "archive": "archive", "path": "data"}
                )
            else:
                messages.success(request, f"Started job {job.name} on {job.deployment_name}.")
                return redirect(job.get_absolute_url())
        context = BatchEndpointView.context(request, endpoint, invoke_form=form)
        return render(request, BatchEndpointView.template_name, context, status=400)


def invoke(endpoint: BatchEndpoint, form: BatchInvokeForm, user) -> BatchJob:
    """The Invoke form's answers as an invocation of batch_services, made as the REST API makes it."""
    data = form.cleaned_data
    options = {
        "deployment_name": data.get("deployment_name") or None,
        "output_file_name": data.get("output_file_name") or None,
    }
    if data["source"] == DATA_ASSET:
        return batch_services.invoke(endpoint, form.input(), user=user, **options)
    if data.get("file"):
        return batch_services.invoke(endpoint, form.input(), user=user, upload=data["file"], **options)
    archive = data.get("archive") or _archive_of(data["folder_files"])
    return batch_services.invoke(endpoint, form.input(), user=user, archive=archive, **options)


class BatchCredentialsView(StudioPageMixin, View):
    """POST (Contributors): the keys, or a fresh token, through the service the REST API uses (audited)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        found = batch_services.get_credentials(endpoint, request.user)
        context = {"object": endpoint, "credentials": found, "token": "accessToken" in found}
        template = "endpoints/batch/inc/credentials.html"
        if not request.htmx:
            template = BatchEndpointView.template_name
            context = BatchEndpointView.context(request, endpoint, credentials=found)
        response = render(request, template, context)
        # Secrets must not be kept by a browser or proxy cache.
        response["Cache-Control"] = "no-store"
        return response


class BatchRegenerateKeyView(StudioPageMixin, View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        key_type = request.POST.get("key_type", "")
        try:
            batch_services.regenerate_keys(endpoint, key_type, request.user)
        except Refused as exc:
            messages.error(request, _refusal_text(exc))
        else:
            messages.success(
                request, f"The {key_type} key of {name} is new; invocations with the old one now get 401."
            )
        return redirect(f"{endpoint.get_absolute_url()}#consume")


# One deployment


class BatchDeploymentView(StudioPageMixin, View):
    template_name = "endpoints/batch/batchdeployment.html"

    def get(self, request: HttpRequest, name: str, deployment: str) -> HttpResponse:
        found = get_object_or_404(
            BatchDeployment.objects.select_related(
                "endpoint", "model_version__model", "environment_version__environment"
            ),
            endpoint__name=name,
            name=deployment,
        )
        jobs = list(found.jobs.all()[:RECENT_JOBS])
        return render(
            request,
            self.template_name,
            {
                "object": found,
                "endpoint": found.endpoint,
                "is_default": found.endpoint.default_deployment == found.name,
                "code": CodeSnapshot.objects.filter(digest=found.code_digest).first()
                if found.code_digest
                else None,
                "jobs": [(job, batch_job_badge(job.state)) for job in jobs],
            },
        )


# One job


def job_context(job: BatchJob) -> dict:
    """What the job page's live panel draws: the engine's progress, the latest events and logs, failed
    mini-batches, and the output links once there is output."""
    failed = MiniBatch.objects.filter(job=job, state=MiniBatchStateChoices.FAILED).order_by("index")
    output_name = job.spec.get("output_file_name") or "predictions.csv"
    append = job.spec.get("output_action", "append_row") == "append_row"
    outputs = []
    if job.finished and job.output_prefix:
        if append:
            outputs.append((output_name, outputs_url(job, output_name)))
        outputs.append(("summary.json", outputs_url(job, "summary.json")))
    took = None
    if job.finished_at and job.started_at:
        took = (job.finished_at - job.started_at).total_seconds()
    return {
        "job": job,
        "job_badge": batch_job_badge(job.state),
        "took": took,
        "progress": batch_execution.progress(job),
        "events": list(reversed(job.events[-20:])),
        "log": batch_execution.log_text(job, LOG_LINES),
        "failed": [
            {"row": row, "badge": mini_batch_badge(row.state), "items": len(row.files)}
            for row in failed[:FAILED_SHOWN]
        ],
        "failed_count": failed.count(),
        "outputs": outputs,
        "outputs_zip": outputs_url(job) if outputs else None,
    }


def _job(pk) -> BatchJob:
    return get_object_or_404(BatchJob.objects.select_related("endpoint", "deployment", "created_by"), pk=pk)


class BatchJobView(StudioPageMixin, View):
    template_name = "endpoints/batch/batchjob.html"

    def get(self, request: HttpRequest, pk) -> HttpResponse:
        job = _job(pk)
        return render(request, self.template_name, {**job_context(job), "object": job})


class BatchJobProgressView(StudioPageMixin, View):
    """The job page's live panel, which htmx polls while the job runs; a finished job's panel carries no
    trigger, so polling stops with it."""

    template_name = "endpoints/batch/inc/job_progress.html"

    def get(self, request: HttpRequest, pk) -> HttpResponse:
        job = _job(pk)
        if not request.htmx:
            return redirect(job.get_absolute_url())
        response = render(request, self.template_name, job_context(job))
        patch_vary_headers(response, ["HX-Request"])
        return response


class BatchJobCancelView(StudioPageMixin, View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, pk) -> HttpResponse:
        job = _job(pk)
        try:
            job = batch_services.cancel_job(job, request.user)
        except Refused as exc:
            messages.error(request, _refusal_text(exc))
        else:
            if not job.finished:
                messages.success(
                    request, "Cancelling: runners stop claiming mini-batches; the one in flight stops."
                )
        return redirect(job.get_absolute_url())


# The creation wizard


STEPS = (
    WizardStep("endpoint", "Endpoint", "Name and authentication"),
    WizardStep("model", "Model", "A registered version"),
    WizardStep("code", "Code and environment", "No-code or a scoring script"),
    WizardStep("settings", "Settings", "Parallelism, output, retries"),
    WizardStep("review", "Review", "Check, then create"),
)
STEP_SLUGS = [step.slug for step in STEPS]
SESSION_KEY = "batch_endpoint_wizard"


def deployment_body(state: dict) -> dict:
    """The wizard's answers as the batch deployment body of the REST API and `az ml` YAML."""
    endpoint = state["endpoint"]
    body: dict = {
        "name": endpoint["deployment"],
        "endpoint_name": endpoint["name"] if endpoint["mode"] == NEW else endpoint["existing"],
        "type": "model",
        "model": f"azureml:{state['model']['model']}",
    }
    code = state.get("code") or {}
    if code.get("code_mode") == SCRIPT:
        body["code_configuration"] = {
            "code": f"azureml:code:{code.get('digest', '')}",
            "scoring_script": code.get("scoring_script", ""),
        }
    if code.get("env_mode") == REGISTERED_ENV:
        body["environment"] = code.get("environment_version")
    elif code.get("env_mode") == CONDA_ENV:
        body["environment"] = {"conda_file": code.get("conda")}
    body.update((state.get("settings") or {}).get("body") or {})
    return body


def deployment_yaml(state: dict) -> str:
    """The same deployment as YAML for `studio batch-deployment create -f`, shown on the review step."""
    import yaml

    return yaml.safe_dump(deployment_body(state), sort_keys=False, default_flow_style=False)


class BatchWizardView(CodeStepMixin, StudioPageMixin, View):
    """Creating a batch deployment (and its endpoint) in steps, each its own URL, as the online wizard does:
    answers live in the session, a later step sends back to the first unanswered one, and nothing is
    created before the review step's "Create"."""

    template_name = "endpoints/batch/wizard.html"
    required_role = RoleChoices.CONTRIBUTOR

    @property
    def state(self) -> dict:
        return self.request.session.setdefault(SESSION_KEY, {})

    def save(self, state: dict) -> None:
        self.request.session[SESSION_KEY] = state
        self.request.session.modified = True

    @staticmethod
    def first_missing(state: dict) -> str:
        return next((slug for slug in STEP_SLUGS[:-1] if slug not in state), "review")

    def reachable(self, step: str, state: dict) -> bool:
        return STEP_SLUGS.index(step) <= STEP_SLUGS.index(self.first_missing(state))

    def get(self, request: HttpRequest, step: str | None = None) -> HttpResponse:
        if step is None:
            return self.start(request)
        if step not in STEP_SLUGS:
            raise Http404(f"The wizard has no step {step!r}.")
        state = self.state
        if not self.reachable(step, state):
            return redirect("endpoints:batchendpoint_new_step", self.first_missing(state))
        if step == "model" and request.htmx and not request.htmx.history_restore_request:
            chosen = request.GET.get("model") or (state.get("model") or {}).get("model", "")
            response = render(request, "endpoints/inc/model_picker.html", model_picker(request, chosen))
        else:
            response = self.render_step(step, self.form(step, state))
        patch_vary_headers(response, ["HX-Request"])
        return response

    def start(self, request: HttpRequest) -> HttpResponse:
        """`new/` starts over; `new/?endpoint=NAME` starts with a deployment for that batch endpoint."""
        state: dict = {}
        existing = request.GET.get("endpoint")
        if existing and BatchEndpoint.objects.filter(name=existing).exists():
            taken = set(
                BatchDeployment.objects.filter(endpoint__name=existing).values_list("name", flat=True)
            )
            name = next((n for n in ("default", "blue", "green", "next") if n not in taken), "")
            state["endpoint"] = {
                "mode": EXISTING,
                "existing": existing,
                "deployment": name,
                "set_default": False,
            }
        self.save(state)
        return redirect("endpoints:batchendpoint_new_step", "endpoint")

    def post(self, request: HttpRequest, step: str | None = None) -> HttpResponse:
        if step not in STEP_SLUGS:
            raise Http404(f"The wizard has no step {step!r}.")
        state = self.state
        if not self.reachable(step, state):
            return redirect("endpoints:batchendpoint_new_step", self.first_missing(state))
        if step == "review":
            return self.create(request, state)
        form = self.form(step, state, request.POST, request.FILES)
        if form.is_valid():
            answer = getattr(self, f"accept_{step}")(form, state)
            if answer is not None:
                previous = state.get(step) or {}
                if step == "model" and previous.get("type") != answer.get("type"):
                    state.pop("code", None)
                    state.pop("uploaded_code", None)
                state[step] = answer
                self.save(state)
                following = STEP_SLUGS[STEP_SLUGS.index(step) + 1]
                missing = self.first_missing(state)
                if STEP_SLUGS.index(missing) < STEP_SLUGS.index(following):
                    following = missing
                return redirect("endpoints:batchendpoint_new_step", following)
        return self.render_step(step, form, status=400)

    def form(self, step: str, state: dict, data=None, files=None):
        answer = state.get(step) or {}
        if step == "endpoint":
            return BatchEndpointStepForm(data, initial=answer or None)
        if step == "model":
            return ModelStepForm(data, initial=answer or None)
        if step == "code":
            mlflow = state["model"]["type"] == ModelTypeChoices.MLFLOW
            # Code uploaded on an earlier try of this step is kept, even if that try was refused.
            code = state.get("uploaded_code") or answer
            return CodeStepForm(data, files, initial=answer or None, mlflow=mlflow, code=code)
        if step == "settings":
            initial = BatchSettingsStepForm.initial_from(answer.get("body") or {}) if answer else None
            return BatchSettingsStepForm(data, initial=initial)
        return None

    # Each step's answer, checked by the code the API uses; None when the form got errors

    def accept_endpoint(self, form: BatchEndpointStepForm, state: dict) -> dict | None:
        data = form.cleaned_data
        answer = {"mode": data["mode"], "deployment": data["deployment"], "set_default": data["set_default"]}
        if data["mode"] == NEW:
            answer.update(name=data["name"], auth_mode=data["auth_mode"], description=data["description"])
            try:
                batch_specs.parse_batch_endpoint(
                    {"name": data["name"], "auth_mode": data["auth_mode"], "description": data["description"]}
                )
            except Refused as exc:
                add_service_errors(form, exc)
                return None
        else:
            answer["existing"] = data["existing"]
        return answer

    def accept_model(self, form: ModelStepForm, state: dict) -> dict:
        return {"model": form.cleaned_data["model"], "type": form.version.type}

    def check_deployment(self, state: dict) -> None:
        batch_specs.parse_batch_deployment(deployment_body(state))

    def accept_settings(self, form: BatchSettingsStepForm, state: dict) -> dict | None:
        body = form.settings_body()
        try:
            batch_specs.parse_batch_deployment(body, partial=True)
        except Refused as exc:
            add_service_errors(form, exc, _settings_fields())
            return None
        return {"body": body}

    # Review and create

    def create(self, request: HttpRequest, state: dict) -> HttpResponse:
        answer = state["endpoint"]
        try:
            with transaction.atomic():
                if answer["mode"] == NEW:
                    endpoint = batch_services.create_endpoint(
                        {
                            "name": answer["name"],
                            "auth_mode": answer["auth_mode"],
                            "description": answer.get("description", ""),
                        },
                        request.user,
                    )
                else:
                    endpoint = BatchEndpoint.objects.filter(name=answer["existing"]).first()
                    if endpoint is None:
                        return self.refuse(
                            f"The batch endpoint {answer['existing']!r} is gone; choose another."
                        )
                deployment = batch_services.create_deployment(
                    endpoint,
                    deployment_body(state),
                    request.user,
                    set_default=answer.get("set_default", False),
                )
        except Refused as exc:
            return self.refuse(_refusal_text(exc), status=exc.status)
        request.session.pop(SESSION_KEY, None)
        messages.success(
            request, f"Created deployment {deployment.name} of {endpoint.name}; invoke it below."
        )
        return redirect(endpoint.get_absolute_url())

    def refuse(self, message: str, status: int = 400) -> HttpResponse:
        return self.render_step("review", None, status=status, create_error=message)

    def render_step(self, step: str, form, status: int = 200, **extra) -> HttpResponse:
        state = self.state
        first_missing = self.first_missing(state)
        context = {
            "steps": STEPS,
            "step": STEPS[STEP_SLUGS.index(step)],
            "step_number": STEP_SLUGS.index(step) + 1,
            "done": [slug for slug in STEP_SLUGS if slug in state],
            "reachable": STEP_SLUGS[: STEP_SLUGS.index(first_missing) + 1],
            "form": form,
            "wizard": state,
            "previous_step": STEP_SLUGS[STEP_SLUGS.index(step) - 1] if step != STEP_SLUGS[0] else None,
            "no_models": step == "model" and not ModelVersion.objects.filter(archived=False).exists(),
            **extra,
        }
        if "model" in state:
            try:
                context["version"] = resolve_version(state["model"]["model"])
            except Exception:  # noqa: BLE001 -- a version deleted meanwhile is asked for again on its step
                context["version"] = None
        if step == "review":
            context["body_yaml"] = deployment_yaml(state)
        if step == "model":
            chosen = self.request.GET.get("model") or (form["model"].value() if form is not None else "")
            context.update(model_picker(self.request, chosen or ""))
        return render(self.request, self.template_name, context, status=status)


def _settings_fields() -> dict[str, str]:
    """The YAML names of the settings step's fields, so a refusal lands on the field it is about."""
    fields = {"resources.instance_count": "instance_count", "instance_count": "instance_count"}
    for name in BatchSettingsStepForm.base_fields:
        fields[f"settings.{name}"] = name
    fields["settings.retry_settings.max_retries"] = "max_retries"
    fields["settings.retry_settings.timeout"] = "timeout"
    return fields
