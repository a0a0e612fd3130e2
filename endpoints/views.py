"""Endpoint pages: the list, the creation wizard, an endpoint's tabs, and the job panel they poll.

Views stay thin: rules and changes are endpoints.services' (which also write the audit log), fields are
read by endpoints.specs, and the forms carry their messages back to the page.
"""

import contextlib
import json
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from typing import BinaryIO
from urllib.parse import urlencode

import httpx
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views import View
from django_htmx.http import HttpResponseClientRedirect
from rest_framework.exceptions import APIException

from endpoints import autoscale, credentials, logfiles, loglines, samples, services, specs, targets
from endpoints.choices import (
    AuthModeChoices,
    EndpointHealthChoices,
    JobKindChoices,
    JobStateChoices,
    ProvisioningStateChoices,
    TargetChoices,
)
from endpoints.code import upload_code
from endpoints.failures import explain
from endpoints.filtersets import OnlineEndpointFilterSet
from endpoints.forms import (
    ALL_TRAFFIC,
    CONDA_ENV,
    EXISTING,
    NEW,
    NO_TRAFFIC,
    REGISTERED_ENV,
    SCRIPT,
    AdvancedStepForm,
    CodeStepForm,
    DeploymentEditForm,
    EndpointStepForm,
    ModelStepForm,
    ScoringTestForm,
    TargetStepForm,
    TrafficForm,
    TrafficStepForm,
    add_service_errors,
    resolve_version,
    service_errors,
)
from endpoints.models import CodeSnapshot, Job, OnlineDeployment, OnlineEndpoint, Replica
from endpoints.tables import (
    OnlineEndpointTable,
    endpoint_state_badges,
    job_state_badge,
    replica_badge,
    state_badge,
)
from endpoints.targets.base import TargetUnavailable
from registry.choices import ModelTypeChoices
from registry.filtersets import ModelVersionFilterSet
from registry.models import ModelVersion
from studio.choices import RoleChoices
from studio.errors import Refused
from studio.views import ObjectListView, StudioPageMixin

LOG_LINES = (100, 500, 2000)
JOB_EVENTS_SHOWN = 8
SAMPLE_LANGUAGES = (
    ("curl", "curl"),
    ("python", "Python (requests)"),
    ("python_urllib", "Python (urllib)"),
    ("javascript", "JavaScript (fetch)"),
    ("csharp", "C# (HttpClient)"),
    ("java", "Java (java.net.http)"),
)


def _endpoint(name: str) -> OnlineEndpoint:
    return get_object_or_404(OnlineEndpoint, name=name)


def _deployments(endpoint: OnlineEndpoint) -> list[OnlineDeployment]:
    return list(
        endpoint.deployments.select_related(
            "model_version__model", "environment_version__environment"
        ).prefetch_related(Prefetch("replicas", queryset=Replica.objects.order_by("revision", "index")))
    )


def _refusal_text(exc: Refused | APIException) -> str:
    """A services refusal as one sentence for a message, worded as the API's error envelope words it."""
    parts = []
    for key, texts in service_errors(exc).items():
        text = " ".join(texts)
        parts.append(text if key in (None, "non_field_errors") else f"{key}: {text}")
    return " ".join(parts)


def sample_body(version: ModelVersion | None) -> str:
    """A request body the model accepts: from an MLflow signature, else the shape Azure's samples use."""
    if version is None or version.type != ModelTypeChoices.MLFLOW:
        return samples.readable(samples.PLACEHOLDER)
    return samples.signature_body(version) or samples.readable({"input_data": {"data": [[1.0]]}})


def _main_deployment(
    deployments: list[OnlineDeployment], endpoint: OnlineEndpoint
) -> OnlineDeployment | None:
    """The deployment most requests go to: the one with the most traffic, else the first."""
    if not deployments:
        return None
    return max(deployments, key=lambda d: endpoint.traffic.get(d.name, 0))


# The list


class OnlineEndpointListView(ObjectListView):
    filterset_class = OnlineEndpointFilterSet
    table_class = OnlineEndpointTable
    template_name = "endpoints/onlineendpoint_list.html"
    empty_template = "endpoints/inc/onlineendpoint_empty.html"
    filter_params = ("q", "name", "auth_mode", "state", "health", "tag")

    def get_queryset(self):
        return OnlineEndpoint.objects.prefetch_related("deployments__replicas")

    def get_extra_context(self) -> dict:
        return {
            "auth_modes": AuthModeChoices.choices,
            "states": ProvisioningStateChoices.choices,
            "healths": EndpointHealthChoices.choices,
            "endpoint_total": OnlineEndpoint.objects.count(),
        }


# The creation wizard


class WizardStep:
    def __init__(self, slug: str, title: str, summary: str):
        self.slug, self.title, self.summary = slug, title, summary


STEPS = (
    WizardStep("endpoint", "Endpoint", "Name and authentication"),
    WizardStep("model", "Model", "A registered version"),
    WizardStep("code", "Code and environment", "No-code or a scoring script"),
    WizardStep("target", "Target", "Where, and how many"),
    WizardStep("advanced", "Advanced", "Timeouts, probes, scale"),
    WizardStep("traffic", "Traffic", "Live traffic share"),
    WizardStep("review", "Review", "Check, then create"),
)
STEP_SLUGS = [step.slug for step in STEPS]
# Steps whose defaults are a complete answer: offered in turn, but never required to go on.
OPTIONAL_STEPS = {"advanced"}
SESSION_KEY = "endpoint_wizard"
PICKER_PAGE_SIZE = 10
PICKER_PARAMS = ("q", "type", "tag")


def deployment_body(state: dict) -> dict:
    """The wizard's answers as the deployment body the API and `az ml` YAML use."""
    body: dict = {"model": f"azureml:{state['model']['model']}"}
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
    target = state.get("target") or {}
    for key in ("target", "instance_count", "instance_type"):
        if target.get(key) not in (None, ""):
            body[key] = target[key]
    body.update((state.get("advanced") or {}).get("body") or {})
    return body


def model_picker(request: HttpRequest, chosen: str) -> dict:
    """One page of active versions for the wizard's picker: filtered as the registry's lists filter them,
    newest first, each with its deployments; `chosen` stays offered when the filters hide it.

    A page is read as PICKER_PAGE_SIZE + 1 rows, so no count runs over a registry of any size.
    """
    filterset = ModelVersionFilterSet(
        request.GET, queryset=ModelVersion.objects.filter(archived=False), request=request
    )
    try:
        page = max(int(request.GET.get("page") or 1), 1)
    except ValueError:
        page = 1
    errors = [message for texts in filterset.errors.values() for message in texts]
    rows: list[ModelVersion] = []
    if not errors:
        start = (page - 1) * PICKER_PAGE_SIZE
        rows = list(
            filterset.qs.select_related("model")
            .prefetch_related(
                Prefetch("deployments", queryset=OnlineDeployment.objects.select_related("endpoint"))
            )
            .order_by("-created_at", "-pk")[start : start + PICKER_PAGE_SIZE + 1]
        )
    more = len(rows) > PICKER_PAGE_SIZE
    rows = rows[:PICKER_PAGE_SIZE]
    pinned = None
    if chosen and chosen not in {str(version) for version in rows}:
        with contextlib.suppress(ValidationError):
            pinned = resolve_version(chosen)
    query = {key: request.GET.getlist(key) for key in PICKER_PARAMS if any(request.GET.getlist(key))}

    def link(number: int) -> str:
        return f"?{urlencode({**query, 'page': number}, doseq=True)}"

    return {
        "picker_rows": rows,
        "picker_pinned": pinned,
        "picker_chosen": chosen,
        "picker_errors": errors,
        "picker_page": page,
        "picker_previous": link(page - 1) if page > 1 else None,
        "picker_next": link(page + 1) if more else None,
        "picker_filters": {
            "q": request.GET.get("q", ""),
            "type": request.GET.get("type", ""),
            "tag": request.GET.get("tag", ""),
        },
        "picker_filtered": bool(query),
        "model_types": ModelTypeChoices.choices,
    }


def deployment_yaml(state: dict) -> str:
    """The same deployment as YAML for `studio online-deployment create -f`, shown on the review step."""
    import yaml

    endpoint = state["endpoint"]
    name = endpoint["name"] if endpoint["mode"] == NEW else endpoint["existing"]
    body = {"name": endpoint["deployment"], "endpoint_name": name, **deployment_body(state)}
    return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def _archive_of(files: list[tuple[str, BinaryIO]]) -> File:
    """A browser's folder pick as one zip, so it goes through upload_code's archive checks unchanged."""
    # Closed by upload_code, which reads it as an upload; the file vanishes from disk when closed.
    packed = tempfile.TemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="code-", suffix=".zip")  # noqa: SIM115
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_STORED) as archive:
        for path, stream in files:
            info = zipfile.ZipInfo(path.replace("\\", "/"))
            info.external_attr = 0o644 << 16
            with archive.open(info, "w") as out:
                for chunk in iter(lambda s=stream: s.read(1 << 20), b""):
                    out.write(chunk)
    packed.seek(0)
    return File(packed, name="code.zip")


class CodeStepMixin:
    """The code and environment step that the online and batch wizards share: the uploaded code is kept as
    a snapshot at once (so a refused step keeps it), the scoring script must be in it, and the deployment
    the answers make is checked by the wizard's own parser (`check_deployment`, raising Refused)."""

    def check_deployment(self, state: dict) -> None:
        raise NotImplementedError

    def accept_code(self, form: CodeStepForm, state: dict) -> dict | None:
        data = form.cleaned_data
        answer = {
            "code_mode": data["code_mode"],
            "scoring_script": data["scoring_script"] if data["code_mode"] == SCRIPT else "",
            "env_mode": data["env_mode"],
            "environment_version": data.get("environment_version") or "",
            "conda_yaml": data.get("conda_yaml") or "",
            "conda": data.get("conda"),
            "digest": form.code.get("digest", ""),
            "files": form.code.get("files", []),
        }
        upload = data.get("archive") or (
            _archive_of(data["folder_files"]) if data.get("folder_files") else None
        )
        if data["code_mode"] == SCRIPT and upload is not None:
            try:
                with transaction.atomic():
                    snapshot, _ = upload_code(upload, self.request.user)
            except (Refused, APIException) as exc:
                add_service_errors(form, exc, {"archive": "archive"})
                return None
            answer.update(digest=snapshot.digest, files=[item["path"] for item in snapshot.files][:20])
            form.code = state["uploaded_code"] = {"digest": answer["digest"], "files": answer["files"]}
            self.save(state)
        if data["code_mode"] == SCRIPT:
            snapshot = CodeSnapshot.objects.filter(digest=answer["digest"]).first()
            paths = [item["path"] for item in snapshot.files] if snapshot else []
            # The job would fail on this later; say it while the person is on this step.
            if snapshot and answer["scoring_script"] not in paths:
                form.add_error(
                    "scoring_script",
                    f"{answer['scoring_script']!r} is not in the uploaded code; it holds "
                    f"{', '.join(paths[:8])}{', …' if len(paths) > 8 else ''}.",
                )
                return None
        try:
            self.check_deployment({**state, "code": answer})
        except Refused as exc:
            add_service_errors(form, exc, {"code_configuration": "code_mode", "environment": "env_mode"})
            return None
        return answer


class OnlineEndpointWizardView(CodeStepMixin, StudioPageMixin, View):
    """Creating a deployment (and its endpoint) in steps, each its own URL; the answers live in the session.

    A step can be revisited from the steps bar; a step whose earlier steps are not done sends the person
    back to the first one missing. Nothing is created before the review step's "Create".
    """

    template_name = "endpoints/wizard.html"
    required_role = RoleChoices.CONTRIBUTOR

    @property
    def state(self) -> dict:
        return self.request.session.setdefault(SESSION_KEY, {})

    def save(self, state: dict) -> None:
        self.request.session[SESSION_KEY] = state
        self.request.session.modified = True

    def first_missing(self, state: dict) -> str:
        return next(
            (slug for slug in STEP_SLUGS[:-1] if slug not in state and slug not in OPTIONAL_STEPS), "review"
        )

    def get(self, request: HttpRequest, step: str | None = None) -> HttpResponse:
        if step is None:
            return self.start(request)
        state = self.state
        if step not in STEP_SLUGS:
            raise Http404(f"The wizard has no step {step!r}.")
        missing = self.first_missing(state)
        if STEP_SLUGS.index(step) > STEP_SLUGS.index(missing):
            return redirect("endpoints:onlineendpoint_new_step", missing)
        if step == "model" and request.htmx and not request.htmx.history_restore_request:
            chosen = request.GET.get("model") or (state.get("model") or {}).get("model", "")
            response = render(request, "endpoints/inc/model_picker.html", model_picker(request, chosen))
            patch_vary_headers(response, ["HX-Request"])
            return response
        response = self.render_step(step, self.form(step, state))
        patch_vary_headers(response, ["HX-Request"])
        return response

    def start(self, request: HttpRequest) -> HttpResponse:
        """`new/` starts over; `new/?endpoint=NAME` starts with a deployment for an existing endpoint."""
        state: dict = {}
        existing = request.GET.get("endpoint")
        if existing and OnlineEndpoint.objects.filter(name=existing).exists():
            taken = set(
                OnlineDeployment.objects.filter(endpoint__name=existing).values_list("name", flat=True)
            )
            name = next((n for n in ("blue", "green", "red", "yellow") if n not in taken), "")
            state["endpoint"] = {
                "mode": EXISTING,
                "existing": existing,
                "deployment": name,
                "auth_mode": "key",
            }
            self.save(state)
            return redirect("endpoints:onlineendpoint_new_step", "endpoint")
        if request.GET.get("continue") and self.state:
            return redirect("endpoints:onlineendpoint_new_step", self.first_missing(self.state))
        self.save(state)
        return redirect("endpoints:onlineendpoint_new_step", "endpoint")

    def post(self, request: HttpRequest, step: str | None = None) -> HttpResponse:
        state = self.state
        if step not in STEP_SLUGS:
            raise Http404(f"The wizard has no step {step!r}.")
        missing = self.first_missing(state)
        if STEP_SLUGS.index(step) > STEP_SLUGS.index(missing):
            return redirect("endpoints:onlineendpoint_new_step", missing)
        if step == "review":
            return self.create(request, state)
        form = self.form(step, state, request.POST, request.FILES)
        if form.is_valid():
            answer = getattr(self, f"accept_{step}")(form, state)
            if answer is not None:
                state = self.forget_stale(step, state, answer)
                state[step] = answer
                self.save(state)
                following = STEP_SLUGS[STEP_SLUGS.index(step) + 1]
                return redirect(
                    "endpoints:onlineendpoint_new_step", self.first_missing_from(state, following)
                )
        return self.render_step(step, form, status=400)

    def first_missing_from(self, state: dict, following: str) -> str:
        missing = self.first_missing(state)
        return missing if STEP_SLUGS.index(missing) < STEP_SLUGS.index(following) else following

    @staticmethod
    def forget_stale(step: str, state: dict, answer: dict) -> dict:
        """Answers that a changed earlier answer makes wrong are asked again."""
        previous = state.get(step) or {}
        if step == "endpoint" and (
            previous.get("mode"),
            previous.get("existing"),
            previous.get("deployment"),
        ) != (
            answer.get("mode"),
            answer.get("existing"),
            answer.get("deployment"),
        ):
            state.pop("traffic", None)
        if step == "model" and previous.get("type") != answer.get("type"):
            state.pop("code", None)
            state.pop("uploaded_code", None)
        return state

    # One form per step, filled with the answer given before

    def form(self, step: str, state: dict, data=None, files=None):
        answer = state.get(step) or {}
        if step == "endpoint":
            return EndpointStepForm(data, initial=answer or None)
        if step == "model":
            return ModelStepForm(data, initial=answer or None)
        if step == "code":
            mlflow = state["model"]["type"] == ModelTypeChoices.MLFLOW
            # Code uploaded on an earlier try of this step is kept, even if that try was refused.
            code = state.get("uploaded_code") or answer
            return CodeStepForm(data, files, initial=answer or None, mlflow=mlflow, code=code)
        if step == "target":
            return TargetStepForm(data, initial=answer or None)
        if step == "advanced":
            initial = AdvancedStepForm.initial_from(answer.get("body") or {}) if answer else None
            return AdvancedStepForm(data, initial=initial)
        if step == "traffic":
            initial = None
            if answer:
                initial = {"mode": answer["mode"], **{f"traffic-{k}": v for k, v in answer["split"].items()}}
            return TrafficStepForm(
                data,
                initial=initial,
                deployment=state["endpoint"]["deployment"],
                current=self.current_traffic(state),
            )
        return None

    @staticmethod
    def current_traffic(state: dict) -> dict[str, int]:
        endpoint = state.get("endpoint") or {}
        if endpoint.get("mode") != EXISTING:
            return {}
        found = OnlineEndpoint.objects.filter(name=endpoint.get("existing")).first()
        if found is None:
            return {}
        return {name: found.traffic.get(name, 0) for name in found.deployments.values_list("name", flat=True)}

    # Each step's answer, checked by the same code the API uses; None when the form got errors

    def accept_endpoint(self, form: EndpointStepForm, state: dict) -> dict:
        data = form.cleaned_data
        answer = {"mode": data["mode"], "deployment": data["deployment"], "auth_mode": data["auth_mode"]}
        if data["mode"] == NEW:
            answer.update(name=data["name"], description=data["description"])
        else:
            answer["existing"] = data["existing"]
        return answer

    def accept_model(self, form: ModelStepForm, state: dict) -> dict:
        return {"model": form.cleaned_data["model"], "type": form.version.type}

    def check_deployment(self, state: dict) -> None:
        specs.parse_deployment(deployment_body(state))

    def accept_target(self, form: TargetStepForm, state: dict) -> dict | None:
        answer = {key: form.cleaned_data[key] for key in ("target", "instance_count", "instance_type")}
        try:
            specs.parse_deployment(answer, partial=True)
        except Refused as exc:
            add_service_errors(form, exc)
            return None
        return answer

    def accept_advanced(self, form: AdvancedStepForm, state: dict) -> dict | None:
        body = form.fields_body()
        try:
            specs.parse_deployment(body, partial=True)
        except Refused as exc:
            add_service_errors(form, exc)
            return None
        return {"body": body}

    def accept_traffic(self, form: TrafficStepForm, state: dict) -> dict | None:
        mode, name = form.cleaned_data["mode"], form.deployment
        traffic = self.traffic_for(mode, name, form.current, form.split())
        names = {*form.current, name}
        mirror = {}
        existing = OnlineEndpoint.objects.filter(name=state["endpoint"].get("existing")).first()
        if existing is not None:
            mirror = {key: value for key, value in existing.mirror_traffic.items() if key in names}
        try:
            services.check_traffic(traffic, mirror, dict.fromkeys(names))
        except Refused as exc:
            add_service_errors(form, exc)
            return None
        return {"mode": mode, "split": traffic}

    @staticmethod
    def traffic_for(mode: str, name: str, current: dict[str, int], split: dict[str, int]) -> dict[str, int]:
        if mode == ALL_TRAFFIC:
            return {**dict.fromkeys(current, 0), name: 100}
        if mode == NO_TRAFFIC:
            return {**current, name: 0}
        return split

    # Review and create

    def create(self, request: HttpRequest, state: dict) -> HttpResponse:
        answer, traffic = state["endpoint"], state["traffic"]
        try:
            with transaction.atomic():
                if answer["mode"] == NEW:
                    endpoint = services.create_endpoint(
                        {
                            "name": answer["name"],
                            "auth_mode": answer["auth_mode"],
                            "description": answer.get("description", ""),
                        },
                        request.user,
                    )
                else:
                    endpoint = OnlineEndpoint.objects.filter(name=answer["existing"]).first()
                    if endpoint is None:
                        return self.refuse(
                            state, f"The endpoint {answer['existing']!r} is gone; choose another."
                        )
                spec = specs.parse_deployment(deployment_body(state))
                # The split applies when the deployment first succeeds; until then traffic stays.
                job = services.create_deployment(
                    endpoint,
                    answer["deployment"],
                    spec,
                    request.user,
                    all_traffic=traffic["mode"] == ALL_TRAFFIC,
                    traffic=traffic["split"] if any(traffic["split"].values()) else None,
                )
        except Refused as exc:
            return self.refuse(state, _refusal_text(exc), status=exc.status)
        except TargetUnavailable as exc:
            return self.refuse(state, str(exc))
        request.session.pop(SESSION_KEY, None)
        messages.success(
            request,
            f"Creating deployment {answer['deployment']} of {endpoint.name}; its progress shows below.",
        )
        return redirect(f"{reverse('endpoints:onlineendpoint_details', args=[endpoint.name])}#job-{job.pk}")

    def refuse(self, state: dict, message: str, status: int = 400) -> HttpResponse:
        return self.render_step("review", None, status=status, create_error=message)

    def render_step(self, step: str, form, status: int = 200, **extra) -> HttpResponse:
        state = self.state
        context = {
            "steps": STEPS,
            "step": STEPS[STEP_SLUGS.index(step)],
            "step_number": STEP_SLUGS.index(step) + 1,
            "done": [slug for slug in STEP_SLUGS if slug in state],
            "reachable": STEP_SLUGS[: STEP_SLUGS.index(self.first_missing(state)) + 1],
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
        if step == "target":
            context["target_options"] = [
                (value, label, targets.unusable_reason(value)) for value, label in TargetChoices.choices
            ]
        if step == "review":
            context.update(body_yaml=deployment_yaml(state), sample=sample_body(context.get("version")))
        if step == "model":
            chosen = self.request.GET.get("model") or (form["model"].value() if form is not None else "")
            context.update(model_picker(self.request, chosen or ""))
        return render(self.request, self.template_name, context, status=status)


# One endpoint: its tabs


class OnlineEndpointView(StudioPageMixin, View):
    """`/endpoints/NAME/` is the details tab; each tab has its own address."""

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        return redirect("endpoints:onlineendpoint_details", _endpoint(name).name)


class EndpointTabMixin:
    tab: str

    def tab_context(self, endpoint: OnlineEndpoint, **extra) -> dict:
        reasons = endpoint.health_reasons
        return {
            "object": endpoint,
            "tab": self.tab,
            "deleting": endpoint.provisioning_state == ProvisioningStateChoices.DELETING,
            "state_badge": endpoint_state_badges(endpoint, reasons),
            "health_reasons": reasons,
            **extra,
        }


class OnlineEndpointDetailsView(EndpointTabMixin, StudioPageMixin, View):
    template_name = "endpoints/onlineendpoint_details.html"
    tab = "details"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        return render(request, self.template_name, self.context(_endpoint(name)))

    def context(self, endpoint: OnlineEndpoint, traffic_form: TrafficForm | None = None) -> dict:
        deployments = _deployments(endpoint)
        names = [deployment.name for deployment in deployments]
        cards = [
            {
                "deployment": deployment,
                "state_badge": state_badge(deployment.provisioning_state),
                "replicas": [
                    (replica, replica_badge(replica.state)) for replica in deployment.replicas.all()
                ],
                "traffic": endpoint.traffic.get(deployment.name, 0),
                "mirror": endpoint.mirror_traffic.get(deployment.name, 0),
                **job_panel_context(deployment.job),
                "autoscaling": autoscale.card(deployment),
                "edit_form": DeploymentEditForm(
                    initial={"instance_count": deployment.instance_count},
                    current=deployment.model_version,
                    auto_id=f"id_{deployment.name}_%s",
                ),
            }
            for deployment in deployments
        ]
        endpoint_job = None
        if endpoint.provisioning_state == ProvisioningStateChoices.DELETING:
            endpoint_job = Job.objects.filter(
                endpoint_name=endpoint.name, kind=JobKindChoices.DELETE_ENDPOINT
            ).first()
        from endpoints.rollout_pages import panel_context  # it builds on this module's views

        return self.tab_context(
            endpoint,
            cards=cards,
            traffic_form=traffic_form or TrafficForm(endpoint=endpoint, names=names),
            endpoint_job=job_panel_context(endpoint_job) if endpoint_job else None,
            **panel_context(endpoint),
        )


class OnlineEndpointTrafficView(OnlineEndpointDetailsView):
    """POST the traffic sliders: the rules are services.update_endpoint's, refused with its message."""

    partial_template = "endpoints/inc/traffic_card.html"

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        names = list(endpoint.deployments.values_list("name", flat=True))
        form = TrafficForm(request.POST, endpoint=endpoint, names=names)
        if form.is_valid():
            try:
                endpoint = services.update_endpoint(endpoint, form.values(), request.user)
            except Refused as exc:
                add_service_errors(form, exc, {"mirror_traffic": "mirror_percent"})
        if not form.is_valid():
            context = self.context(endpoint, traffic_form=form)
            template = self.partial_template if request.htmx else self.template_name
            return render(request, template, context, status=400)
        if request.htmx:
            context = self.context(endpoint)
            context["saved"] = True
            return render(request, self.partial_template, context)
        messages.success(request, f"Saved the traffic of {endpoint.name}; the gateway routes by it at once.")
        return redirect("endpoints:onlineendpoint_details", endpoint.name)


class OnlineEndpointDeleteView(EndpointTabMixin, StudioPageMixin, View):
    """GET asks for confirmation, POST deletes the endpoint and with it every deployment."""

    template_name = "endpoints/onlineendpoint_delete.html"
    required_role = RoleChoices.CONTRIBUTOR
    tab = "details"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        return render(
            request, self.template_name, self.tab_context(endpoint, deployments=_deployments(endpoint))
        )

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        try:
            services.delete_endpoint(endpoint, request.user)
        except Refused as exc:
            messages.error(request, _refusal_text(exc))
            return redirect("endpoints:onlineendpoint_details", name)
        messages.success(request, f"Deleting {name}: its deployments stop, then the endpoint is gone.")
        return redirect("endpoints:onlineendpoint_list")


def _deployment(name: str, deployment: str) -> OnlineDeployment:
    return get_object_or_404(
        OnlineDeployment.objects.select_related("endpoint"), endpoint__name=name, name=deployment
    )


class OnlineDeploymentEditView(StudioPageMixin, View):
    """POST a deployment card's edit: model version and instances, through services.update_deployment."""

    def post(self, request: HttpRequest, name: str, deployment: str) -> HttpResponse:
        found = _deployment(name, deployment)
        form = DeploymentEditForm(request.POST, current=found.model_version)
        if not form.is_valid():
            errors = [f"{form.fields[key].label}: {' '.join(texts)}" for key, texts in form.errors.items()]
            messages.error(request, f"{found.name} was not changed. " + " ".join(errors))
            return redirect("endpoints:onlineendpoint_details", name)
        data = {"instance_count": form.cleaned_data["instance_count"]}
        # The model changes only when another one was picked: the version served now may be archived.
        if form.cleaned_data["model"] != str(found.model_version):
            data["model"] = f"azureml:{form.cleaned_data['model']}"
        try:
            job = services.update_deployment(found, specs.parse_deployment(data, partial=True), request.user)
        except Refused as exc:
            messages.error(request, f"{found.name} was not changed: {_refusal_text(exc)}")
            return redirect("endpoints:onlineendpoint_details", name)
        if job is None:
            messages.info(request, f"{found.name} already serves that; nothing changed.")
        else:
            messages.success(
                request, f"{job.get_kind_display()}: {found.name} rolls over without dropping requests."
            )
        return redirect(f"{reverse('endpoints:onlineendpoint_details', args=[name])}#deployment-{found.name}")


class OnlineDeploymentDeleteView(StudioPageMixin, View):
    def post(self, request: HttpRequest, name: str, deployment: str) -> HttpResponse:
        found = _deployment(name, deployment)
        try:
            services.delete_deployment(found, request.user)
        except Refused as exc:
            messages.error(request, _refusal_text(exc))
        else:
            messages.success(
                request, f"Deleting deployment {found.name}: its replicas stop, then it is gone."
            )
        return redirect("endpoints:onlineendpoint_details", name)


def job_panel_context(job: Job | None) -> dict:
    """What inc/job_panel.html draws: the job, its badge, and its latest events first."""
    if job is None:
        return {"job": None}
    events = [
        # The first line only: a failure's event repeats the error, whose log tail shows in full below.
        {
            "time": event["t"][11:19],
            "level": event.get("level", "info"),
            "message": event["message"].splitlines()[0],
        }
        for event in job.events[-JOB_EVENTS_SHOWN:]
        if event.get("message")
    ]
    took = None
    if job.finished_at and job.started_at:
        took = (job.finished_at - job.started_at).total_seconds()
    failure = explain(job.error) if job.state == JobStateChoices.FAILED and job.error else None
    return {
        "job": job,
        "job_badge": job_state_badge(job.state),
        "events": events,
        "job_took": took,
        "failure": failure,
    }


class JobPanelView(StudioPageMixin, View):
    """A job's progress as a panel that htmx polls every second until the job has finished."""

    template_name = "endpoints/inc/job_panel.html"

    def get(self, request: HttpRequest, pk) -> HttpResponse:
        job = get_object_or_404(Job, pk=pk)
        endpoint = OnlineEndpoint.objects.filter(name=job.endpoint_name).first()
        if not request.htmx:
            return redirect(
                endpoint.get_absolute_url() if endpoint else reverse("endpoints:onlineendpoint_list")
            )
        response = render(request, self.template_name, job_panel_context(job))
        if job.finished and request.GET.get("poll"):
            # The page around the panel (states, replicas) is stale now: reload it, once.
            if endpoint is None:
                return HttpResponseClientRedirect(reverse("endpoints:onlineendpoint_list"))
            response["HX-Refresh"] = "true"
        return response


class OnlineEndpointTestView(EndpointTabMixin, StudioPageMixin, View):
    """Send a body to the endpoint through the gateway from the server, and show the answer and its timing."""

    template_name = "endpoints/onlineendpoint_test.html"
    partial_template = "endpoints/inc/test_result.html"
    tab = "test"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        deployments = _deployments(endpoint)
        main = _main_deployment(deployments, endpoint)
        sample = samples.sample_for(endpoint, main)
        form = ScoringTestForm(initial={"body": sample.body}, names=[d.name for d in deployments])
        return render(
            request,
            self.template_name,
            self.tab_context(endpoint, form=form, deployments=deployments, sample=sample),
        )

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        deployments = _deployments(endpoint)
        form = ScoringTestForm(request.POST, names=[d.name for d in deployments])
        result = None
        if form.is_valid():
            data = form.cleaned_data
            result = send_test_request(endpoint, deployments, data["body"], data["deployment"], request.user)
        context = self.tab_context(endpoint, form=form, deployments=deployments, result=result)
        status = 200 if form.is_valid() else 400
        return render(
            request, self.partial_template if request.htmx else self.template_name, context, status=status
        )


class OnlineEndpointRequestLogView(EndpointTabMixin, StudioPageMixin, View):
    """The log lines one request left in the replicas of the deployment that answered it, found by its
    request id (the model server writes it on every line about a request)."""

    template_name = "endpoints/onlineendpoint_request.html"
    tab = "test"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        request_id = request.GET.get("request_id", "").strip()
        if not request_id or len(request_id) > 128:
            return HttpResponse(
                "Give the request id to look for as ?request_id=<the x-request-id of the answer>.",
                status=400,
                content_type="text/plain; charset=utf-8",
            )
        deployments = _deployments(endpoint)
        chosen = [d for d in deployments if d.name == request.GET.get("deployment")] or deployments
        found, problems, searched = [], [], 0
        for deployment in chosen:
            for replica in deployment.replicas.all():
                try:
                    text = targets.get_target(deployment.target).logs(replica, LOG_LINES[-1])
                except TargetUnavailable as exc:
                    problems.append(f"{replica.replica_id}: {exc}")
                    continue
                searched += 1
                lines = [line for line in loglines.parse(text) if request_id in line.raw]
                if lines:
                    found.append({"deployment": deployment, "replica": replica, "log_lines": lines})
        context = self.tab_context(
            endpoint,
            request_id=request_id,
            found=found,
            problems=problems,
            searched=searched,
            deployment_names=[d.name for d in chosen],
            lines_read=LOG_LINES[-1],
        )
        return render(request, self.template_name, context)


def _secret(endpoint: OnlineEndpoint, user) -> str:
    if endpoint.auth_mode == AuthModeChoices.AML_TOKEN:
        return services.get_credentials(endpoint, user)["accessToken"]
    # Used here on the server only, never shown: the key itself, without an audit entry per test.
    return credentials.decrypt(endpoint.primary_key)


def send_test_request(
    endpoint: OnlineEndpoint, deployments: list[OnlineDeployment], body: str, deployment: str, user
) -> dict:
    """POST the body to the scoring URI as a client would; the answer, or what stopped it, and the time."""
    headers = {"Authorization": f"Bearer {_secret(endpoint, user)}", "Content-Type": "application/json"}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    limits = [d.request_settings.get("request_timeout_ms", 5000) for d in deployments] or [5000]
    # A little over the longest request timeout, so the gateway's own 408 arrives first.
    timeout = max(limits) / 1000 + 5
    started = time.perf_counter()
    try:
        response = httpx.post(endpoint.scoring_uri, content=body.encode(), headers=headers, timeout=timeout)
    except httpx.ConnectError:
        return {
            "problem": f"The gateway at {settings.STUDIO_GATEWAY_URL} is not reachable, so the request was "
            "not sent. Start it (`studio up` runs it with the control plane) or set STUDIO_GATEWAY_URL to "
            "where it listens."
        }
    except httpx.TimeoutException:
        return {
            "problem": f"The gateway did not answer within {timeout:.0f} s; the request may still be running."
        }
    except httpx.HTTPError as exc:
        return {"problem": f"The request to the gateway failed: {exc}."}
    elapsed_ms = (time.perf_counter() - started) * 1000
    text = response.text
    with contextlib.suppress(ValueError):
        text = json.dumps(response.json(), indent=2)
    return {
        "status": response.status_code,
        "reason": response.reason_phrase,
        "ok": response.is_success,
        "elapsed_ms": elapsed_ms,
        "deployment": response.headers.get("azureml-model-deployment", ""),
        "request_id": response.headers.get("x-request-id", ""),
        "model_error": response.headers.get("ms-azureml-model-error-reason", ""),
        "body": text,
        "sent_to": deployment,
    }


class OnlineEndpointConsumeView(EndpointTabMixin, StudioPageMixin, View):
    """How clients call the endpoint: URIs, credentials (revealed on request), ready-to-paste samples."""

    template_name = "endpoints/onlineendpoint_consume.html"
    tab = "consume"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        return render(request, self.template_name, self.context(_endpoint(name)))

    def context(self, endpoint: OnlineEndpoint, **extra) -> dict:
        deployments = _deployments(endpoint)
        main = _main_deployment(deployments, endpoint)
        token = endpoint.auth_mode == AuthModeChoices.AML_TOKEN
        sample = {
            "uri": endpoint.scoring_uri,
            "body": sample_body(main.model_version if main else None),
            "variable": "ENDPOINT_TOKEN" if token else "ENDPOINT_KEY",
            "token": token,
        }
        samples = [
            {
                "slug": slug,
                "label": label,
                "code": render_to_string(f"endpoints/samples/{slug}.txt", sample).strip(),
            }
            for slug, label in SAMPLE_LANGUAGES
        ]
        return self.tab_context(endpoint, samples=samples, sample=sample, deployments=deployments, **extra)


class OnlineEndpointCredentialsView(OnlineEndpointConsumeView):
    """POST (Contributors): the keys, or a fresh token; fetched through services.get_credentials, audited."""

    partial_template = "endpoints/inc/credentials.html"
    http_method_names = ["post"]

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        found = services.get_credentials(endpoint, request.user)
        if "expiryTimeUtc" in found:
            found = {
                **found,
                "expires": datetime.fromtimestamp(found["expiryTimeUtc"], tz=UTC),
                "refresh_after": datetime.fromtimestamp(found["refreshAfterTimeUtc"], tz=UTC),
            }
        context = self.context(endpoint, credentials=found)
        response = render(request, self.partial_template if request.htmx else self.template_name, context)
        # Secrets must not be kept by a browser or proxy cache.
        response["Cache-Control"] = "no-store"
        return response


class OnlineEndpointRegenerateKeyView(StudioPageMixin, View):
    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        key_type = request.POST.get("key_type", "")
        try:
            services.regenerate_key(endpoint, key_type, request.user)
        except Refused as exc:
            messages.error(request, _refusal_text(exc))
        else:
            messages.success(
                request,
                f"The {key_type} key of {name} is new; clients still sending the old one now get 401.",
            )
        return redirect("endpoints:onlineendpoint_consume", name)


def _log_choice(request: HttpRequest, endpoint: OnlineEndpoint) -> tuple[list, object, list, object]:
    """The deployments, the one chosen (?deployment=, else the first), its replicas and the replica chosen
    (?replica=, else the first): what the Logs tab shows and what its download sends."""
    deployments = _deployments(endpoint)
    chosen = next((d for d in deployments if d.name == request.GET.get("deployment")), None)
    chosen = chosen or (deployments[0] if deployments else None)
    replicas: list = list(chosen.replicas.all()) if chosen else []
    if chosen is not None:
        # A failed revision's replicas are gone; the logs they left say why it failed.
        replicas += logfiles.kept_logs(chosen, {r.replica_id for r in replicas})
    replica = next((r for r in replicas if r.replica_id == request.GET.get("replica")), None)
    replica = replica or (replicas[0] if replicas else None)
    return deployments, chosen, replicas, replica


class OnlineEndpointLogsView(EndpointTabMixin, StudioPageMixin, View):
    """The last lines of one replica's log, read through its target's driver, as time, level and message;
    htmx refreshes the panel while the reader follows the end (endpoints/static/endpoints/logs.js)."""

    template_name = "endpoints/onlineendpoint_logs.html"
    partial_template = "endpoints/inc/log_panel.html"
    tab = "logs"

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        deployments, chosen, replicas, replica = _log_choice(request, endpoint)
        try:
            lines = int(request.GET.get("lines", LOG_LINES[0]))
        except ValueError:
            lines = LOG_LINES[0]
        lines = min(max(lines, 1), LOG_LINES[-1])
        log, problem = "", ""
        if isinstance(replica, logfiles.KeptLog):
            log = replica.tail(lines)
        elif replica is not None:
            try:
                log = targets.get_target(chosen.target).logs(replica, lines)
            except TargetUnavailable as exc:
                problem = str(exc)
        context = self.tab_context(
            endpoint,
            deployments=deployments,
            chosen=chosen,
            replicas=replicas,
            replica=replica,
            lines=lines,
            line_choices=LOG_LINES,
            log=log,
            log_lines=loglines.parse(log),
            problem=problem,
            read_at=timezone.now(),
        )
        partial = bool(request.htmx) and not request.htmx.history_restore_request
        response = render(request, self.partial_template if partial else self.template_name, context)
        patch_vary_headers(response, ["HX-Request"])
        return response


class OnlineEndpointLogDownloadView(StudioPageMixin, View):
    """One replica's whole log as a file, from its first line (the tab shows the last 2000 at most)."""

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        endpoint = _endpoint(name)
        _, chosen, _, replica = _log_choice(request, endpoint)
        if replica is None:
            raise Http404(f"{endpoint.name} has no replica whose log could be downloaded.")
        try:
            chunks = logfiles.whole_log(targets.get_target(chosen.target), replica)
        except TargetUnavailable as exc:
            return HttpResponse(str(exc), status=503, content_type="text/plain; charset=utf-8")
        response = StreamingHttpResponse(chunks, content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{endpoint.name}-{replica.replica_id}.log"'
        response["Cache-Control"] = "no-store"
        return response
