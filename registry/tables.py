"""Tables of the registry pages: which columns a list shows, how each cell looks, and which sort.

A table is plain Python: columns render their cells with format_html (so every value is escaped), and
the generic `inc/table.html` partial draws any table, with sort links that keep the current filters.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core.paginator import Page, Paginator
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from registry.models import ModelVersion, RegisteredModel

PAGE_SIZE = 25


def query_with(request: HttpRequest, **changes) -> str:
    """The current query string with some parameters replaced (None removes one), starting with '?'."""
    query = request.GET.copy()
    for key, value in changes.items():
        query.pop(key, None)
        if value is not None:
            query[key] = value
    encoded = query.urlencode()
    return f"?{encoded}" if encoded else request.path


@dataclass(frozen=True)
class Column:
    label: str
    render: Callable[[Any], SafeString | str]
    # The filterset's ordering value for this column, when it can be sorted by.
    order_by: str | None = None
    css: str = ""


class Table:
    """Rows of one page of results, with the headers and sort links of the declared columns."""

    columns: tuple[Column, ...] = ()
    empty_title = "Nothing here yet"
    empty_text = ""

    def __init__(self, rows: Iterable, request: HttpRequest, per_page: int = PAGE_SIZE):
        self.request = request
        self.page: Page = Paginator(rows, per_page).get_page(request.GET.get("page"))

    @property
    def headers(self) -> list[dict]:
        current = self.request.GET.get("ordering", "")
        headers = []
        for column in self.columns:
            header = {"label": column.label, "css": column.css, "url": None, "sorted": None}
            if column.order_by:
                ascending = current == column.order_by
                descending = current == f"-{column.order_by}"
                target = f"-{column.order_by}" if ascending else column.order_by
                # A new sort starts again at the first page.
                header["url"] = query_with(self.request, ordering=target, page=None)
                header["sorted"] = "asc" if ascending else "desc" if descending else None
            headers.append(header)
        return headers

    @property
    def rows(self) -> list[list[dict]]:
        return [
            [{"html": column.render(record), "css": column.css} for column in self.columns]
            for record in self.page.object_list
        ]

    def page_url(self, number: int) -> str:
        return query_with(self.request, page=str(number))

    @property
    def previous_url(self) -> str | None:
        return self.page_url(self.page.previous_page_number()) if self.page.has_previous() else None

    @property
    def next_url(self) -> str | None:
        return self.page_url(self.page.next_page_number()) if self.page.has_next() else None


def _badge(colour: str, label: str) -> SafeString:
    return format_html('<span class="badge badge-{}">{}</span>', colour, label)


def _muted(text: str) -> SafeString:
    return format_html('<span class="muted">{}</span>', text)


def tag_chips(tags: dict, link_base: str | None = None) -> SafeString:
    """Tags as chips; with link_base, each chip links to the list filtered by that tag."""
    if not tags:
        return _muted("—")
    if link_base is None:
        return format_html_join(
            "",
            '<span class="chip"><span class="chip-key">{}</span><span class="chip-value">{}</span></span>',
            ((key, value) for key, value in tags.items()),
        )
    return format_html_join(
        "",
        '<a class="chip" href="{}?{}" title="Show versions tagged {}={}">'
        '<span class="chip-key">{}</span><span class="chip-value">{}</span></a>',
        (
            (link_base, urlencode({"tag": f"{key}={value}"}), key, value, key, value)
            for key, value in tags.items()
        ),
    )


def state_badge(version: ModelVersion) -> SafeString:
    return _badge("muted", "archived") if version.archived else _badge("success", "active")


def type_badge(value: str) -> SafeString:
    return _badge("info", "MLflow") if value == "mlflow_model" else _badge("neutral", "custom")


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _when(value) -> SafeString:
    if value is None:
        return _muted("—")
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        value.strftime("%Y-%m-%d %H:%M UTC"),
        value.strftime("%Y-%m-%d %H:%M"),
    )


class ModelVersionTable(Table):
    empty_title = "No versions match these filters"
    empty_text = "Clear the filters, or register a new version of this model."

    columns = (
        Column(
            "Version",
            lambda v: format_html('<a class="strong" href="{}">{}</a>', v.get_absolute_url(), v.version),
            order_by="version",
        ),
        Column("State", state_badge),
        Column("Type", lambda v: type_badge(v.type)),
        Column(
            "Tags",
            lambda v: tag_chips(v.tags, reverse("registry:registeredmodel", args=[v.model.name])),
            css="cell-tags",
        ),
        Column("Description", lambda v: _first_line(v.description), css="cell-text"),
        Column("Created by", lambda v: v.created_by.username if v.created_by else "—"),
        Column("Created", lambda v: _when(v.created_at), order_by="created_at", css="nowrap"),
        Column(
            "Digest",
            lambda v: format_html('<code title="sha256:{}">{}</code>', v.digest, v.digest[:12]),
        ),
    )


class RegisteredModelTable(Table):
    """Rows are registered models; those of the page shown get version_count, latest_version and
    latest_type (RegisteredModelQuerySet.summarize)."""

    empty_title = "No models match these filters"
    empty_text = "Clear the filters to see every model."

    def __init__(self, rows, request: HttpRequest, per_page: int = PAGE_SIZE):
        super().__init__(rows, request, per_page)
        self.page.object_list = RegisteredModel.objects.summarize(list(self.page.object_list))

    columns = (
        Column(
            "Name",
            lambda m: format_html('<a class="strong" href="{}">{}</a>', m.get_absolute_url(), m.name),
            order_by="name",
        ),
        Column(
            "Latest version",
            lambda m: (
                format_html(
                    '<a href="{}">{}</a>',
                    reverse("registry:modelversion", args=[m.name, m.latest_version]),
                    m.latest_version,
                )
                if m.latest_version
                else _muted("all archived")
            ),
        ),
        Column("Type", lambda m: type_badge(m.latest_type) if m.latest_type else ""),
        Column("Versions", lambda m: m.version_count, css="num"),
        Column("Description", lambda m: _first_line(m.latest_description or m.description), css="cell-text"),
        Column("Updated", lambda m: _when(m.updated_at), order_by="updated_at", css="nowrap"),
    )


def data_type_badge(value: str) -> SafeString:
    return _badge("info" if value == "mltable" else "neutral", value)


class DataVersionTable(Table):
    empty_title = "No versions match these filters"
    empty_text = "Clear the filters, or register a new version of this data asset."

    columns = (
        Column(
            "Version",
            lambda v: format_html('<a class="strong" href="{}">{}</a>', v.get_absolute_url(), v.version),
            order_by="version",
        ),
        Column("State", state_badge),
        Column("Type", lambda v: data_type_badge(v.type)),
        Column(
            "Tags",
            lambda v: tag_chips(v.tags, reverse("registry:dataasset", args=[v.asset.name])),
            css="cell-tags",
        ),
        Column("Files", lambda v: len(v.files), css="num"),
        Column("Size", lambda v: filesizeformat(v.size), css="num nowrap"),
        Column("Stored", lambda v: "uploaded" if v.uploaded else _muted("reference"), css="nowrap"),
        Column("Description", lambda v: _first_line(v.description), css="cell-text"),
        Column("Created", lambda v: _when(v.created_at), order_by="created_at", css="nowrap"),
    )


class DataAssetTable(Table):
    """Rows are data assets; those of the page shown get version_count, latest_version and latest_type
    (registry.data.summarize_assets)."""

    empty_title = "No data assets match these filters"
    empty_text = "Clear the filters to see every data asset."

    def __init__(self, rows, request: HttpRequest, per_page: int = PAGE_SIZE):
        from registry.data import summarize_assets

        super().__init__(rows, request, per_page)
        self.page.object_list = summarize_assets(list(self.page.object_list))

    columns = (
        Column(
            "Name",
            lambda a: format_html('<a class="strong" href="{}">{}</a>', a.get_absolute_url(), a.name),
            order_by="name",
        ),
        Column(
            "Latest version",
            lambda a: (
                format_html(
                    '<a href="{}">{}</a>',
                    reverse("registry:dataversion", args=[a.name, a.latest_version]),
                    a.latest_version,
                )
                if a.latest_version
                else _muted("all archived")
            ),
        ),
        Column("Type", lambda a: data_type_badge(a.latest_type) if a.latest_type else ""),
        Column("Versions", lambda a: a.version_count, css="num"),
        Column("Description", lambda a: _first_line(a.latest_description or a.description), css="cell-text"),
        Column("Updated", lambda a: _when(a.updated_at), order_by="updated_at", css="nowrap"),
    )
