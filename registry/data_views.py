"""Data asset pages: the assets, one asset's versions, one version with its files and a preview of a
table file, and registering a new version.

Views stay thin: filtering is the FilterSets', rules and changes are registry.data's.
"""

from django.contrib import messages
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from registry import data
from registry.choices import ContentKindChoices, DataTypeChoices
from registry.filtersets import DataAssetFilterSet, DataVersionFilterSet
from registry.forms import DataRegisterForm
from registry.models import DataAsset, DataVersion
from registry.tables import DataAssetTable, DataVersionTable
from registry.views import FILES_SHOWN, _upload_problem
from studio.choices import RoleChoices
from studio.errors import Refused
from studio.views import ObjectListView, StudioPageMixin

ARCHIVES = (".zip", ".tar.gz", ".tgz", ".tar")


class DataAssetListView(ObjectListView):
    filterset_class = DataAssetFilterSet
    table_class = DataAssetTable
    template_name = "registry/dataasset_list.html"
    empty_template = "registry/inc/dataasset_empty.html"

    def get_queryset(self):
        # The table summarizes the assets of the page it shows (DataAssetTable).
        return DataAsset.objects.all()


class DataAssetView(ObjectListView):
    """One data asset's versions, filtered like the API's /data/{name}/versions/."""

    filterset_class = DataVersionFilterSet
    table_class = DataVersionTable
    template_name = "registry/dataasset.html"
    filter_params = ("q", "type", "tag", "archived")

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        self.asset = get_object_or_404(DataAsset, name=name)
        return super().get(request)

    def get_queryset(self):
        return self.asset.versions.select_related("created_by").order_by("-created_at", "-pk")

    def get_extra_context(self) -> dict:
        versions = self.asset.versions
        counts = versions.aggregate(all=Count("pk"), active=Count("pk", filter=Q(archived=False)))
        counts["archived"] = counts["all"] - counts["active"]
        return {
            "object": self.asset,
            "archived_filter": self.request.GET.get("archived", ""),
            "counts": counts,
            "latest": versions.filter(archived=False).order_by("-created_at", "-pk").first(),
        }


def _get_version(name: str, version: str) -> DataVersion:
    try:
        return DataVersion.objects.select_related("asset", "created_by").resolve(name, version)
    except DataVersion.DoesNotExist:
        if not DataAsset.objects.filter(name=name).exists():
            raise Http404(f"There is no data asset named {name!r}.") from None
        raise Http404(f"Data asset {name!r} has no version {version!r}.") from None


class DataVersionView(StudioPageMixin, View):
    """A version: its details, its files, and the first rows of the table file chosen with `?preview=`
    (the first CSV or parquet file when none is chosen), so every preview has its own address."""

    template_name = "registry/dataversion.html"

    def get(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        found = _get_version(name, version)
        if version == "latest":
            # `latest` moves; the page of a version should be a stable, shareable address.
            return redirect(found)
        chosen = request.GET.get("preview") or next(
            (item["path"] for item in found.files if data.previewable(item["path"])), ""
        )
        preview, preview_error = None, ""
        if chosen:
            try:
                preview = data.preview(found, chosen)
            except Refused as exc:
                preview_error = exc.message
        shown = found.files[:FILES_SHOWN]
        context = {
            "object": found,
            "asset": found.asset,
            "files": [{**item, "previewable": data.previewable(item["path"])} for item in shown],
            "files_hidden": max(0, len(found.files) - FILES_SHOWN),
            "chosen": chosen,
            "preview": preview,
            "preview_error": preview_error,
            "download_url": reverse(
                "registry-api:dataversion-download", args=[found.asset.name, found.version]
            ),
        }
        return render(request, self.template_name, context)


class DataVersionArchiveView(StudioPageMixin, View):
    """POST archived=true|false: archive a version (it stays, but `latest` skips it) or restore it."""

    def post(self, request: HttpRequest, name: str, version: str) -> HttpResponse:
        found = _get_version(name, version)
        archived = request.POST.get("archived") == "true"
        with transaction.atomic():
            data.update_version(found, request.user, archived=archived)
        if archived:
            messages.success(request, f"{found} is archived. It stays readable; `latest` now skips it.")
        else:
            messages.success(request, f"{found} is restored.")
        return redirect(found)


# The body is parsed in the view, where its limits can be reported; CSRF is checked right after.
@method_decorator(csrf_exempt, name="dispatch")
class DataRegisterView(StudioPageMixin, View):
    template_name = "registry/dataversion_register.html"
    required_role = RoleChoices.CONTRIBUTOR

    def get(self, request: HttpRequest) -> HttpResponse:
        form = DataRegisterForm(initial={"name": request.GET.get("name", "")})
        return render(request, self.template_name, {"form": form})

    def post(self, request: HttpRequest) -> HttpResponse:
        problem = _upload_problem(request)
        if problem is not None:
            message, status = problem
            context = {"form": DataRegisterForm(), "upload_error": message}
            return render(request, self.template_name, context, status=status)
        return csrf_protect(self.register)(request)

    def register(self, request: HttpRequest) -> HttpResponse:
        form = DataRegisterForm(request.POST, request.FILES)
        if not form.is_valid():
            return render(request, self.template_name, {"form": form}, status=400)
        fields = form.cleaned_data
        spec = data.NewData(
            name=fields["name"],
            version=fields["version"] or None,
            type=fields["type"],
            description=fields["description"],
            tags=fields["tags"],
        )
        try:
            if fields.get("path"):
                version = data.register_reference(spec, fields["path"].strip(), request.user)
            else:
                upload = fields["file"]
                # An archive is a folder's content, except for a uri_file, which is the file itself.
                is_archive = upload.name.lower().endswith(ARCHIVES) and spec.type != DataTypeChoices.URI_FILE
                kind = ContentKindChoices.FOLDER if is_archive else ContentKindChoices.FILE
                version = data.register_upload(spec, upload, upload.name, kind, request.user)
        except Refused as exc:
            for field, texts in exc.errors.items():
                form.add_error(field if field in form.fields else None, texts)
            return render(request, self.template_name, {"form": form}, status=exc.status)
        messages.success(request, f"Registered {version} ({version.azureml_id}).")
        return redirect(version)
