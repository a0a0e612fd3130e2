"""A failed job's panel names the cause first, whatever wrote the error: a replica's JSON log, a Python
traceback, uv, pip, a Docker image build, or a message with no log at all. Read through the page, as the
Details tab and the job panel's own URL (which htmx polls) serve it.
"""

import json

import pytest

from endpoints.choices import JobKindChoices, JobStateChoices
from endpoints.models import Job, OnlineDeployment
from endpoints.tests.test_pages import make_endpoint
from studio.testing import signed_in

pytestmark = pytest.mark.django_db

JSON_LOG = "\n".join(
    json.dumps({"ts": f"2026-11-30T20:00:0{n}.000Z", "level": level, "message": message, "event": "x"})
    for n, (level, message) in enumerate(
        [
            ("info", "starting"),
            ("warning", "numpy is older than the model expects"),
            ("error", "Model load failed: OSError: model.onnx is not a valid ONNX file"),
            ("error", "No worker can serve this model; stopping"),
        ]
    )
)
CASES = [
    (
        "Replica green-2-0 could not load the model or run init(). Its log ends with:\n"
        + JSON_LOG
        + "\nRevision 1 of green keeps serving.",
        "Replica green-2-0 could not load the model or run init().",
        "Model load failed: OSError: model.onnx is not a valid ONNX file",
        "Revision 1 of green keeps serving.",
    ),
    (
        "Replica green-2-0 exited while starting. Its log ends with:\n"
        "Traceback (most recent call last):\n"
        '  File "/code/score.py", line 4, in <module>\n'
        "    import lightgbm\n"
        "ModuleNotFoundError: No module named 'lightgbm'",
        "Replica green-2-0 exited while starting.",
        "ModuleNotFoundError: No module named 'lightgbm'",
        "",
    ),
    (
        "The environment's requirements could not be installed; fix the conda file or pip requirements.\n"
        "--- build log (last lines) ---\n"
        "Collecting torch==9.9\n"
        "ERROR: Could not find a version that satisfies the requirement torch==9.9 (from versions: 2.4.0)\n"
        "ERROR: No matching distribution found for torch==9.9",
        "The environment's requirements could not be installed; fix the conda file or pip requirements.",
        "Could not find a version that satisfies the requirement torch==9.9 (from versions: 2.4.0)",
        "",
    ),
    (
        "The image build failed at Step 4/7 : RUN /opt/venv/bin/pip install -r requirements.txt: "
        "The command returned a non-zero code: 1\n"
        "--- build log (last lines) ---\n"
        "Step 4/7 : RUN /opt/venv/bin/pip install -r requirements.txt\n"
        " ---> Running in 5f3a\n"
        "error: externally-managed-environment\n",
        "The image build failed at Step 4/7 : RUN /opt/venv/bin/pip install -r requirements.txt: The "
        "command returned a non-zero code: 1",
        "externally-managed-environment",
        "",
    ),
    (
        "Studio hit an unexpected error (KeyError: 'weights'); it has been logged.",
        "Studio hit an unexpected error (KeyError: 'weights'); it has been logged.",
        "",
        "",
    ),
]


@pytest.mark.parametrize(("error", "summary", "cause", "note"), CASES)
def test_a_failed_jobs_panel_says_what_failed_and_why_first(team, error, summary, cause, note):
    from html import unescape

    make_endpoint(team, blue=100, green=0)
    job = Job.objects.create(
        kind=JobKindChoices.UPDATE_DEPLOYMENT,
        endpoint_name="fraud",
        deployment=OnlineDeployment.objects.get(name="green"),
        deployment_name="green",
        state=JobStateChoices.FAILED,
        error=error,
    )
    reader = signed_in(team.reader.user)
    for html in (
        reader.get("/endpoints/fraud/details/").content.decode(),
        reader.get(f"/endpoints/jobs/{job.pk}/", HTTP_HX_REQUEST="true").content.decode(),
    ):
        panel = unescape(html[html.index(f'id="job-{job.pk}"') :])
        assert f'<p class="strong" data-job-summary>{summary}</p>' in panel
        if cause:
            assert f"Cause: <code data-job-cause-text>{cause}</code>" in panel
            assert panel.index("data-job-cause-text") < panel.index("data-job-log")
        else:
            assert "data-job-cause-text" not in panel
        if note:
            assert f"<p>{note}</p>" in panel
        assert '{"ts"' not in panel


def test_the_log_of_a_replica_that_logged_nothing_downloads_as_an_empty_file(team):
    make_endpoint(team, blue=100, green=0)
    reader = signed_in(team.reader.user)
    response = reader.get("/endpoints/fraud/logs/download/?deployment=blue")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="fraud-blue-1-0.log"'
    assert b"".join(response.streaming_content) == b""
    missing = reader.get("/endpoints/nowhere/logs/download/")
    assert missing.status_code == 404
