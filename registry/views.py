"""Registry pages: models, their versions, one version, and registering a new one.

Views stay thin: filtering is the FilterSets', rules and changes are registry.services'.
"""

import json

from django.contrib import messages
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from registry import optimize, profile, services
from registry.choices import ContentKindChoices
from registry.filtersets import ModelVersionFilterSet, RegisteredModelFilterSet
from registry.forms import ModelVersionDescriptionForm, ModelVersionRegisterForm, ModelVersionTagsForm
from registry.models import ModelVersion, RegisteredModel
from registry.tables import ModelVersionTable, RegisteredModelTable
from studio.api.errors import PayloadTooLarge
from studio.choices import RoleChoices
from studio.errors import Invalid, Refused
from studio.roles import has_role
from studio.views import ObjectListView, StudioPageMixin

FILES_SHOWN = 200


class RegisteredModelListView(ObjectListView):
    filterset_class = RegisteredModelFilterSet
    table_class = RegisteredModelTable
    template_name = "registry/registeredmodel_list.html"
    empty_template = "registry/inc/registeredmodel_empty.html"

    def get_queryset(self):
        # The table summarizes the models of the page it shows (RegisteredModelTable).
        return RegisteredModel.objects.all()

    def get_extra_context(self) -> dict:
        return {"model_total": RegisteredModel.objects.count()}


class RegisteredModelView(ObjectListView):
    """One model's versions, filtered like the API's /models/{name}/versions/."""

    filterset_class = ModelVersionFilterSet
    table_class = ModelVersionTable
    template_name = "registry/registeredmodel.html"
    filter_params = ("q", "type", "tag", "archived")

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        self.model = get_object_or_404(RegisteredModel, name=name)
        return super().get(request)

    def get_queryset(self):
        # The related manager hands each version this model, so no join (nor a query per row) for it.
        return self.model.versions.select_related("created_by").order_by("-created_at", "-pk")

    def get_extra_context(self) -> dict:
        versions = self.model.versions
        counts = versions.aggregate(all=Count("pk"), active=Count("pk", filter=Q(archived=False)))
        counts["archived"] = counts["all"] - counts["active"]
        return {
            "object": self.model,
            "archived_filter": self.request.GET.get("archived", ""),
            "counts": counts,
            "latest": versions.filter(archived=False).order_by("-created_at", "-pk").first(),
        }


def _get_version(name: str, version: str) -> ModelVersion:
    try:
        return ModelVersion.objects.select_related("model", "created_by").resolve(name, version)
    except ModelVersion.DoesNotExist:
        if not RegisteredModel.objects.filter(name=name).exists():
            raise Http404(f"There is no model named {name!r}.") from None
        raise Http404(f"Model {name!r} has no version {version!r}.") from None


class ModelVersionView(StudioPageMixin, View):
    template_name = "registry/modelversion.html"

    def get(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        found = _get_version(name, version)
        if version == "latest":
            # `latest` moves; the page of a version should be a stable, shareable address.
            return redirect(found)
        mlflow = found.mlflow or {}
        signature = mlflow.get("signature") or {}
        context = {
            "object": found,
            "model": found.model,
            "files": found.files[:FILES_SHOWN],
            "files_hidden": max(0, len(found.files) - FILES_SHOWN),
            "mlflow": mlflow,
            "signature": [
                (part, signature.get(part)) for part in ("inputs", "outputs", "params") if signature.get(part)
            ],
            "flavors": mlflow.get("flavors") or {},
            "deployments": services.deployments_using(found),
            "deployment_links": deployment_links(found),
            "download_url": reverse(
                "registry-api:modelversion-download", args=[found.model.name, found.version]
            ),
            "package_url": reverse(
                "endpoints-api:modelversion-package", args=[found.model.name, found.version]
            ),
            "profile": ModelVersionProfileView.context(found),
            "optimize": ModelVersionOptimizeView.context(found),
            "tags_form": ModelVersionTagsForm(initial={"tags": found.tags}),
            "description_form": ModelVersionDescriptionForm(initial={"description": found.description}),
        }
        return render(request, self.template_name, context)


class ModelVersionEditView(StudioPageMixin, View):
    """Inline edit of one changeable part of a version (htmx): GET shows it or its form, POST saves it.

    The answer is the part's partial; without htmx (no JavaScript), a POST goes back to the version page.
    """

    form_class: type
    field: str
    partial_template: str

    def context(self, version: ModelVersion, form=None, editing: bool = False) -> dict:
        form = form or self.form_class(initial={self.field: getattr(version, self.field)})
        return {"object": version, "form": form, "editing": editing}

    def get(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        found = _get_version(name, version)
        if not request.htmx:
            return redirect(found)
        editing = request.GET.get("edit") == "1" and has_role(request.user, RoleChoices.CONTRIBUTOR)
        return render(request, self.partial_template, self.context(found, editing=editing))

    def post(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        found = _get_version(name, version)
        form = self.form_class(request.POST)
        if not form.is_valid():
            if not request.htmx:
                messages.error(request, " ".join(form.errors.get(self.field, form.non_field_errors())))
                return redirect(found)
            return render(request, self.partial_template, self.context(found, form, editing=True), status=400)
        with transaction.atomic():
            services.update_version(found, request.user, **{self.field: form.cleaned_data[self.field]})
        if not request.htmx:
            messages.success(request, f"Saved the {self.field} of {found}.")
            return redirect(found)
        return render(request, self.partial_template, self.context(found))


class ModelVersionTagsView(ModelVersionEditView):
    form_class = ModelVersionTagsForm
    field = "tags"
    partial_template = "registry/inc/version_tags.html"


class ModelVersionDescriptionView(ModelVersionEditView):
    form_class = ModelVersionDescriptionForm
    field = "description"
    partial_template = "registry/inc/version_description.html"


def deployment_links(version: ModelVersion) -> list[tuple[str, str]]:
    """The deployments serving `version` as (endpoint/deployment, the address of its card)."""
    related = getattr(version, "deployments", None)
    if related is None:
        return []
    return [
        (
            str(deployment),
            f"{reverse('endpoints:onlineendpoint_details', args=[deployment.endpoint.name])}"
            f"#deployment-{deployment.name}",
        )
        for deployment in related.select_related("endpoint").order_by("endpoint__name", "name")
    ]


class ModelVersionArchiveView(StudioPageMixin, View):
    """POST archived=true|false: archive a version (it stays, but `latest` skips it) or restore it.

    Archiving a version that deployments serve asks first, naming them: they keep serving it, but
    `latest` and the pages' pickers no longer offer it."""

    template_name = "registry/modelversion_archive.html"

    def post(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        found = _get_version(name, version)
        archived = request.POST.get("archived") == "true"
        if archived and not found.archived and request.POST.get("confirmed") != "yes":
            links = deployment_links(found)
            if links:
                return render(request, self.template_name, {"object": found, "deployment_links": links})
        with transaction.atomic():
            services.update_version(found, request.user, archived=archived)
        if archived:
            messages.success(request, f"{found} is archived. It stays downloadable; `latest` now skips it.")
        else:
            messages.success(request, f"{found} is restored.")
        return redirect(found)


class ModelVersionDeleteView(StudioPageMixin, View):
    """GET asks for confirmation, POST deletes; both only for Contributors."""

    template_name = "registry/modelversion_delete.html"
    required_role = RoleChoices.CONTRIBUTOR

    def get(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        found = _get_version(name, version)
        context = {"object": found, "deployments": services.deployments_using(found)}
        return render(request, self.template_name, context)

    def post(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        found = _get_version(name, version)
        try:
            services.delete_version(found, request.user)
        except services.VersionInUse as exc:
            messages.error(request, str(exc))
            return redirect(found)
        messages.success(request, f"Deleted {name}:{version} and its files.")
        if RegisteredModel.objects.filter(name=name).exists():
            return redirect("registry:registeredmodel", name)
        return redirect("registry:registeredmodel_list")


class ModelJobPanelView(StudioPageMixin, View):
    """A version's newest job of one kind as a card (htmx polls it while it runs); POST starts one with
    the form's `fields`, and a refusal (bad input, or another job at work) shows on the card."""

    template_name = ""
    key = ""  # the name the template draws the context under, and the runner module's
    kind = ""
    started = ""  # the message once started, for a page without htmx

    def asked(self, request: HttpRequest) -> dict:
        raise NotImplementedError

    def get(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        found = _get_version(name, version)
        if not request.htmx:
            return redirect(found)
        return render(request, self.template_name, {"object": found, self.key: self.context(found)})

    def post(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        found = _get_version(name, version)
        asked = self.asked(request)
        try:
            with transaction.atomic():
                RUNNERS[self.key].start(found, request.user, **asked)
        except Refused as exc:
            if not request.htmx:
                messages.error(request, exc.message)
                return redirect(found)
            # A refusal of the request as a whole (another job at work) shows above the form.
            errors = {"general" if key is None else key: texts for key, texts in exc.errors.items()}
            context = {"object": found, self.key: self.context(found, errors=errors, asked=asked)}
            # 400 whatever the refusal: the pages' htmx swaps in a 400's card, not a 409's.
            return render(request, self.template_name, context, status=400)
        if not request.htmx:
            messages.success(request, self.started.format(version=found))
            return redirect(found)
        return render(request, self.template_name, {"object": found, self.key: self.context(found)})

    @classmethod
    def context(cls, version: ModelVersion, errors: dict | None = None, asked: dict | None = None) -> dict:
        """What the card draws: the newest job of the kind, the form's values and errors, and what the
        kind adds (extra_context)."""
        from endpoints.jobs import latest_model_job
        from endpoints.views import job_panel_context

        return {
            **job_panel_context(latest_model_job(version, cls.kind)),
            **cls.extra_context(version, asked or {}),
            "errors": errors or {},
        }

    @classmethod
    def extra_context(cls, version: ModelVersion, asked: dict) -> dict:
        return {}


class ModelVersionProfileView(ModelJobPanelView):
    template_name = "registry/inc/version_profile.html"
    key, kind = "profile", "profile_model"
    started = "Profiling {version}: the figures appear on this page when it ends."

    def asked(self, request: HttpRequest) -> dict:
        return {
            "instance_types": request.POST.getlist("instance_types") or None,
            "duration": request.POST.get("duration") or None,
            "target_rps": request.POST.get("target_rps") or None,
        }

    @classmethod
    def extra_context(cls, version: ModelVersion, asked: dict) -> dict:
        from endpoints.targets.instance_types import INSTANCE_TYPES

        chosen = asked.get("instance_types") or profile.DEFAULT_INSTANCE_TYPES
        return {
            "instance_types": [(size.name, size.name in chosen) for size in INSTANCE_TYPES.values()],
            "duration": asked.get("duration") or f"{profile.DEFAULT_DURATION_S:g}s",
            "target_rps": asked.get("target_rps") or "",
        }


class ModelVersionOptimizeView(ModelJobPanelView):
    template_name = "registry/inc/version_optimize.html"
    key, kind = "optimize", "optimize_model"
    started = "Optimizing {version}: the result appears on this page when it ends."

    def asked(self, request: HttpRequest) -> dict:
        return {"tolerance": request.POST.get("tolerance") or None}

    @classmethod
    def extra_context(cls, version: ModelVersion, asked: dict) -> dict:
        """Whether the version can be converted at all, and the tolerance asked."""
        try:
            optimize.optimizable(version)
            refusal = ""
        except Invalid as exc:
            refusal = exc.message
        return {
            "refusal": refusal,
            "tolerance": asked.get("tolerance") or f"{optimize.DEFAULT_TOLERANCE:g}",
        }


RUNNERS = {"profile": profile, "optimize": optimize}


def _upload_problem(request: HttpRequest) -> tuple[str, int] | None:
    """Parse the upload now, so that limits it breaks become a message on the form, not an error page."""
    try:
        request.POST, request.FILES  # noqa: B018 -- reading them is what parses the body
    except PayloadTooLarge as exc:
        return str(exc.detail), 413
    except TooManyFilesSent:
        return (
            "The folder has more files than a browser upload may carry. Zip it and register it with "
            "`studio model create --path`, or ask an admin to raise DATA_UPLOAD_MAX_NUMBER_FILES.",
            400,
        )
    except (TooManyFieldsSent, RequestDataTooBig):
        return "The form is larger than Studio accepts; register this model with the CLI instead.", 400
    return None


def chosen_content(request: HttpRequest) -> str:
    """What a refused registration had chosen as content, in words ("" when nothing was chosen)."""
    single = [item for item in request.FILES.getlist("file") if item.name]
    folder = [item for item in request.FILES.getlist("folder") if item.name]
    if single:
        return f"the file {single[0].name}"
    if folder:
        try:
            paths = json.loads(request.POST.get("paths") or "[]")
        except json.JSONDecodeError:
            paths = []
        top = paths[0].replace("\\", "/").split("/")[0] if paths and isinstance(paths[0], str) else ""
        count = f"{len(folder)} file{'s' if len(folder) != 1 else ''}"
        return f"the folder {top} ({count})" if top and "/" in paths[0] else f"a folder of {count}"
    return ""


# The body is parsed in the view, where its limits can be reported; CSRF is checked right after.
@method_decorator(csrf_exempt, name="dispatch")
class ModelVersionRegisterView(StudioPageMixin, View):
    template_name = "registry/modelversion_register.html"
    required_role = RoleChoices.CONTRIBUTOR

    def get(self, request: HttpRequest) -> HttpResponse:
        form = ModelVersionRegisterForm(initial={"name": request.GET.get("name", "")})
        return render(request, self.template_name, {"form": form})

    def post(self, request: HttpRequest) -> HttpResponse:
        problem = _upload_problem(request)
        if problem is not None:
            form = ModelVersionRegisterForm()
            message, status = problem
            return render(request, self.template_name, {"form": form, "upload_error": message}, status=status)
        return csrf_protect(self.register)(request)

    def refused(self, request: HttpRequest, form: ModelVersionRegisterForm, status: int) -> HttpResponse:
        """The form again with every field but the content as sent; browsers cannot refill a file input,
        so the page names what was chosen and asks for it again."""
        context = {"form": form, "files_again": chosen_content(request)}
        if context["files_again"]:
            # The paths described the files of this try; the next choice sends its own.
            form.data = form.data.copy()
            form.data["paths"] = ""
        return render(request, self.template_name, context, status=status)

    def register(self, request: HttpRequest) -> HttpResponse:
        form = ModelVersionRegisterForm(request.POST, request.FILES)
        if not form.is_valid():
            return self.refused(request, form, 400)
        data = form.cleaned_data
        spec = services.NewVersion(
            name=data["name"],
            version=data["version"] or None,
            type=data["type"],
            description=data["description"],
            tags=data["tags"],
            source=data["source"],
        )
        try:
            if data.get("file"):
                upload = data["file"]
                version = services.register_version(
                    spec, upload, upload.name, ContentKindChoices.FILE, request.user
                )
            else:
                version = services.register_folder(spec, data["folder_files"], request.user)
        except services.RegistrationError as exc:
            form.add_error(None, str(exc))
            return self.refused(request, form, exc.status)
        messages.success(request, f"Registered {version} ({version.asset_id}).")
        return redirect(version)
