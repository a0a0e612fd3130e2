"""The data asset pages, as people use them in a browser: lists with filters, a version with its files
and a preview, and the register form."""

import io

import pyarrow
import pyarrow.parquet
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry import data
from registry.models import DataVersion
from registry.tests.factories import zip_bytes
from studio.testing import PageChecks, page_resource, signed_in

pytestmark = pytest.mark.django_db

CSV = b"sepal,petal,label\n5.1,1.4,setosa\n6.2,4.5,versicolor\n"


def parquet_bytes(rows: int = 30) -> bytes:
    buffer = io.BytesIO()
    table = pyarrow.table({"id": list(range(rows)), "city": [f"city-{i}" for i in range(rows)]})
    pyarrow.parquet.write_table(table, buffer)
    return buffer.getvalue()


def register(name: str, files: dict[str, bytes], user=None, **fields) -> DataVersion:
    spec = data.NewData(name=name, **fields)
    return data.register_upload(spec, io.BytesIO(zip_bytes(files)), f"{name}.zip", "folder", user)


@page_resource
class TestDataPages(PageChecks):
    def make(self, team) -> None:
        register("iris", {"iris.csv": CSV}, team.admin.user, tags={"stage": "prod"})

    def pages(self) -> list[str]:
        return [
            "/data/",
            "/data/?tag=stage=prod",
            "/data/iris/",
            "/data/iris/?archived=true",
            "/data/iris/versions/1/",
            "/data/iris/versions/1/?preview=iris.csv",
        ]

    def contributor_pages(self) -> list[str]:
        return ["/data/register/"]

    def list_pages(self) -> list[str]:
        return ["/data/?q=iris", "/data/iris/?tag=stage=prod"]

    def writes(self) -> list[tuple[str, dict]]:
        return [("/data/iris/versions/1/archive/", {"archived": "true"})]


def test_the_list_filters_by_tag_and_says_what_is_wrong_with_a_bad_filter(team):
    register("iris", {"iris.csv": CSV}, tags={"stage": "prod"})
    register("cities", {"c.csv": CSV}, tags={"stage": "dev"})
    reader = signed_in(team.reader.user)

    page = reader.get("/data/", {"tag": "stage=prod"}).content.decode()
    assert 'href="/data/iris/"' in page and 'href="/data/cities/"' not in page
    assert 'href="/data/cities/"' in reader.get("/data/").content.decode()

    bad = reader.get("/data/", {"tag": "stage"})
    assert bad.status_code == 400
    assert "is not of the form key=value" in bad.content.decode()


def test_the_version_page_lists_files_and_previews_the_table_chosen(team):
    register("mixed", {"a.csv": CSV, "b.parquet": parquet_bytes(), "notes.txt": b"hi"})
    reader = signed_in(team.reader.user)

    first = reader.get("/data/mixed/versions/1/").content.decode()
    # Without a choice, the first table file is shown.
    assert "<th>sepal</th>" in first and "<td>setosa</td>" in first
    assert "notes.txt" in first and "?preview=b.parquet" in first

    chosen = reader.get("/data/mixed/versions/1/", {"preview": "b.parquet"}).content.decode()
    assert "<th>city</th>" in chosen and "<td>city-19</td>" in chosen and "city-20" not in chosen

    refused = reader.get("/data/mixed/versions/1/", {"preview": "notes.txt"}).content.decode()
    assert "only those can be previewed" in refused

    latest = reader.get("/data/mixed/versions/latest/")
    assert latest.status_code == 302 and latest.url == "/data/mixed/versions/1/"


def test_a_contributor_registers_an_upload_and_a_path_in_the_store_from_the_form(team, settings, tmp_path):
    contributor = signed_in(team.contributor.user)
    uploaded = contributor.post(
        "/data/register/",
        {
            "name": "iris",
            "type": "uri_folder",
            "file": SimpleUploadedFile("iris.zip", zip_bytes({"train/iris.csv": CSV})),
            "tags": "stage=raw",
        },
    )
    assert uploaded.status_code == 302, uploaded.content.decode()
    assert uploaded.url == "/data/iris/versions/1/"
    version = DataVersion.objects.get(asset__name="iris")
    assert version.files == [{"path": "train/iris.csv", "size": len(CSV)}] and version.tags == {
        "stage": "raw"
    }

    landing = tmp_path / "artifacts" / "landing"
    landing.mkdir(parents=True)
    (landing / "day.csv").write_bytes(CSV)
    referenced = contributor.post(
        "/data/register/", {"name": "day", "type": "uri_file", "path": f"file://{landing}/day.csv"}
    )
    assert referenced.status_code == 302, referenced.content.decode()
    assert not DataVersion.objects.get(asset__name="day").uploaded

    outside = contributor.post(
        "/data/register/", {"name": "leak", "type": "uri_folder", "path": f"file://{tmp_path}"}
    )
    assert outside.status_code == 400
    assert "outside Studio&#x27;s artifact store" in outside.content.decode()
    assert contributor.post("/data/register/", {"name": "register", "type": "uri_file"}).status_code == 400


def test_the_top_navigation_leads_to_data(team):
    page = signed_in(team.reader.user).get("/data/").content.decode()
    assert '<a href="/data/" aria-current="page">Data</a>' in page
    assert '<a href="/models/" >Models</a>' in page or '<a href="/models/">Models</a>' in page
