"""Profiling a model version before deploying it, through the REST API and the CLI.

The model runs as a local replica under each instance type's limits; a watcher reads, from /proc, the
CPUs the replica's threads were allowed while it served (or the cgroup it was in), so the limits are
checked as the kernel applied them, not as the job says it applied them. Each load level runs half a
second: the figures are real, only their precision is low.
"""

import json
import math
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from endpoints.tests.support import register, wait_for_template
from registry.tests.factories import save_sklearn_mlflow_model
from registry.tests.test_optimize import zipped
from serving import warm
from studio.cli.main import cli
from studio.testkit import process_stat

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("eager_jobs")]

TWO_TYPES = ["Standard_DS1_v2", "Standard_DS2_v2"]


@pytest.fixture(autouse=True)
def local_profiles(settings):
    """These profile local processes under taskset/cgroup limits, engine or not (test_profile_docker
    profiles on the Docker engine)."""
    settings.STUDIO_PROFILE_TARGET = "local"


@pytest.fixture(scope="module", autouse=True)
def warm_template():
    """One warm template for the module: each profile's replicas fork from it, as they would in an
    installation that has served before, instead of each test waiting for a cold start."""
    from endpoints.targets.local import start_template, template_socket

    path = template_socket()
    start_template(path)
    wait_for_template(path)
    yield
    warm.stop_template(path)


@pytest.fixture(scope="module")
def model_zip(tmp_path_factory) -> bytes:
    """A LogisticRegression saved by MLflow with its signature, zipped as the CLI uploads a folder."""
    return zipped(save_sklearn_mlflow_model(tmp_path_factory.mktemp("profile") / "model"))


PF_EXITING = 0x4  # in a process's flags (field 9 of /proc/<pid>/stat) from the moment it starts exiting


class ReplicaWatcher(threading.Thread):
    """Samples the model servers' processes (a process group led by a process running `serving`): for
    each process, by its group, the CPUs its threads were last seen allowed, its cgroup and its uid."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: dict[int, dict[int, dict]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            groups = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and (fields := process_stat(int(entry.name))):
                    groups[int(entry.name)] = fields
            leaders = {int(fields[2]) for fields in groups.values()}
            leaders = {pgid for pgid in leaders if self._serves(pgid)}
            for pid, fields in groups.items():
                if int(fields[2]) in leaders:
                    self._sample(pid, fields)

    @staticmethod
    def _serves(pgid: int) -> bool:
        try:
            return b"serving" in Path(f"/proc/{pgid}/cmdline").read_bytes()
        except OSError:
            return False

    def _sample(self, pid: int, listed: list[str]) -> None:
        try:
            cpus: set[int] = set()
            for task in Path(f"/proc/{pid}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("Cpus_allowed_list:"):
                        cpus |= _cpu_list(line.split(":", 1)[1].strip())
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
            uid = Path(f"/proc/{pid}").stat().st_uid
        except OSError:
            return
        # Kept only if the very process listed was not exiting yet once it was read: an exiting process
        # shows the root of every cgroup v1 hierarchy (the kernel's proc_cgroup_show), and its pid may be
        # another process's by now on a busy host.
        fields = process_stat(pid)
        if not fields or (fields[2], fields[19]) != (listed[2], listed[19]) or int(fields[6]) & PF_EXITING:
            return
        pgid = int(fields[2])
        self.seen.setdefault(pgid, {})[pid] = {"cpus": cpus, "cgroup": cgroup, "uid": uid}

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def _cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus |= set(range(int(first), int(last or first) + 1))
    return cpus


def _profile(client, name: str, **body):
    return client.post(f"/api/v1/models/{name}/versions/1/profile/", body, format="json")


def _check_limits_applied(job: dict, watcher: ReplicaWatcher) -> None:
    for figures in job["result"]["instance_types"]:
        processes = watcher.seen[figures["replica_pid"]]
        assert len(processes) >= 2, "the supervisor and its worker(s) were all seen"
        if os.geteuid() == 0:
            # Studio as root sandboxes replicas: the profiled one runs as a user of its own, as a deployment's.
            assert figures["isolation"] == "sandboxed"
            assert all(seen["uid"] not in (0, os.getuid()) for seen in processes.values()), processes
        limits = figures["limits"]
        wanted = set(limits["cpu_list"])
        assert len(wanted) == max(1, math.ceil(figures["cpus"]))
        assert all(seen["cpus"] == wanted for seen in processes.values()), processes
        assert limits["method"] in ("cgroup-v2", "cgroup-v1", "cpu-affinity+memory-watch")
        for seen in processes.values():
            # /proc/<pid>/cgroup has a line per hierarchy, "id:controllers:path" (on v2, "0::path")
            joined = set()
            for line in seen["cgroup"].splitlines():
                _, controllers, path = line.split(":", 2)
                if path != "/" and any(folder.endswith(path) for folder in limits.get("cgroups", [])):
                    joined |= set(controllers.split(","))
            if limits["method"] == "cgroup-v2":
                assert joined == {""}, seen["cgroup"]
            elif limits["method"] == "cgroup-v1":
                assert {"cpu", "memory"} <= joined, seen["cgroup"]


def test_a_profile_measures_each_instance_type_under_its_limits_and_recommends_one(team, model_zip):
    client = team.contributor.client()
    register(client, "clf", model_zip, "mlflow_model")
    with ReplicaWatcher() as watcher:
        started = _profile(client, "clf", instance_types=TWO_TYPES, duration="0.5s", target_rps=500)
    assert started.status_code == 202, started.json()
    job = client.get(started["Location"]).json()
    assert job["kind"] == "profile_model" and job["state"] == "succeeded", job
    result = job["result"]
    assert result["request_source"] == "an example built from the signature"
    assert [f["instance_type"] for f in result["instance_types"]] == TWO_TYPES
    host_cpus = result["host"]["cpus"]
    for figures, cores in zip(result["instance_types"], (1, 2), strict=True):
        assert figures["cpus"] == min(cores, host_cpus) and figures["worker_count"] == figures["cpus"]
        assert figures["throughput_rps"] > 0 and 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"]
        assert figures["levels"][0]["concurrency"] == 1 and figures["levels"][0]["errors"] == 0
        assert figures["max_concurrent_requests_per_instance"] in [
            lv["concurrency"] for lv in figures["levels"]
        ]
        assert 20 * 2**20 < figures["peak_memory_bytes"] < figures["memory_bytes"]
        assert not figures["out_of_memory"]
    _check_limits_applied(job, watcher)
    chosen = result["recommendation"]
    assert chosen["instance_type"] in TWO_TYPES
    measured = next(f for f in result["instance_types"] if f["instance_type"] == chosen["instance_type"])
    assert chosen["instance_count"] * measured["throughput_rps"] * 0.7 >= 500
    assert chosen["deployment"]["request_settings"] == {
        "max_concurrent_requests_per_instance": measured["max_concurrent_requests_per_instance"]
    }
    latest = team.reader.client().get("/api/v1/models/clf/versions/1/profile/")
    assert latest.status_code == 200 and latest.json()["id"] == job["id"]


def test_a_type_the_model_does_not_fit_in_is_stopped_and_marked_out_of_memory(team, tmp_path):
    import cloudpickle

    from registry.tests import hostile

    folder = save_sklearn_mlflow_model(tmp_path / "model", serialization_format="cloudpickle")
    estimator = cloudpickle.loads((folder / "model.pkl").read_bytes())
    cloudpickle.register_pickle_by_value(hostile)  # the replica's sandbox does not show Studio's tests
    try:
        hog = hostile.MemoryHog(estimator, 6 * 2**30)  # Standard_DS1_v2 has 3.5 GiB
        (folder / "model.pkl").write_bytes(cloudpickle.dumps(hog))
    finally:
        cloudpickle.unregister_pickle_by_value(hostile)
    client = team.contributor.client()
    register(client, "big", zipped(folder), "mlflow_model")

    started = _profile(client, "big", instance_types=["Standard_DS1_v2"], duration="0.5s")
    assert started.status_code == 202, started.json()
    job = client.get(started["Location"]).json()
    assert job["state"] == "succeeded", job
    figures = job["result"]["instance_types"][0]
    assert figures["out_of_memory"] and figures["throughput_rps"] == 0, figures
    assert 3 * 2**30 < figures["peak_memory_bytes"] < 5 * 2**30, "it filled its size and was stopped"
    assert "No instance type served the model" in job["result"]["recommendation"]["reason"]
    assert any("needs more than 3.5 GiB to load" in event["message"] for event in job["events"]), job[
        "events"
    ]


def test_an_unknown_instance_type_is_refused_naming_the_known_ones(team, model_zip):
    client = team.contributor.client()
    register(client, "clf", model_zip, "mlflow_model")
    answer = _profile(client, "clf", instance_types=["Standard_DS1_v2", "Standard_NC6"])
    assert answer.status_code == 400
    message = json.dumps(answer.json())
    assert "'Standard_NC6' is not a known instance type" in message
    assert "Standard_DS2_v2" in message and "Standard_E64s_v3" in message
    assert client.get("/api/v1/models/clf/versions/1/profile/").status_code == 404, "no job was left"


@pytest.mark.parametrize(
    ("request_body", "words"),
    [
        ("{not json", "is not JSON"),
        ([1, 2], "must be a JSON object"),
        ({"input_data": "x" * (1024 * 1024)}, "is larger than 1024 KiB"),
    ],
)
def test_a_bad_request_body_is_refused(team, model_zip, request_body, words):
    client = team.contributor.client()
    register(client, "clf", model_zip, "mlflow_model")
    answer = _profile(client, "clf", instance_types=TWO_TYPES, request=request_body)
    assert answer.status_code == 400 and words in json.dumps(answer.json()), answer.json()


def test_other_refusals_say_what_to_change(team, model_zip):
    client = team.contributor.client()
    register(client, "clf", model_zip, "mlflow_model")
    register(client, "scripted", model_zip, "custom_model")
    answer = _profile(client, "scripted")
    assert answer.status_code == 400 and "is served by its scoring script" in json.dumps(answer.json())
    for body, words in (
        ({"duration": "soon"}, "is not a duration"),
        ({"duration": "10m"}, "runs 0.5s to 300s"),
        ({"target_rps": -3}, "positive number"),
        ({"workers": 3}, "is not a profile setting"),
    ):
        answer = _profile(client, "clf", **body)
        assert answer.status_code == 400 and words in json.dumps(answer.json()), (body, answer.json())
    assert (
        team.reader.client().post("/api/v1/models/clf/versions/1/profile/", {}, format="json").status_code
        == 403
    )


def test_the_cli_profiles_with_a_request_file_and_prints_the_figures(live_server, team, model_zip, tmp_path):
    client = team.contributor.client()
    register(client, "clf", model_zip, "mlflow_model")
    good = tmp_path / "request.json"
    good.write_text(json.dumps({"input_data": {"columns": [0, 1], "data": [[0.2, 0.8], [0.9, 0.1]]}}))
    env = {
        "STUDIO_URL": live_server.url,
        "STUDIO_TOKEN": team.contributor.token,
        "STUDIO_CONFIG": str(tmp_path / "c"),
    }
    runner = CliRunner(env=env)
    args = ["model", "profile", "--name", "clf", "--version", "1", "--duration", "0.5s"]
    for instance_type in TWO_TYPES:
        args += ["--instance-type", instance_type]
    with ReplicaWatcher() as watcher:
        done = runner.invoke(cli, [*args, "--request-file", str(good)], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    cells = [[cell.strip() for cell in line.split("│")] for line in done.stdout.splitlines() if "│" in line]
    rows = {row[0]: row for row in cells}
    assert set(TWO_TYPES) <= set(rows) and rows["Standard_DS1_v2"][1] == "1"
    assert "Max concurrent requests per instance" in done.stdout
    job = client.get("/api/v1/models/clf/versions/1/profile/").json()
    assert job["state"] == "succeeded" and job["result"]["request_source"] == "the request given"
    assert [f["instance_type"] for f in job["result"]["instance_types"]] == TWO_TYPES
    assert rows["Standard_DS2_v2"][2] == f"{job['result']['instance_types'][1]['throughput_rps']:g}"
    _check_limits_applied(job, watcher)

    rejected = tmp_path / "rejected.json"
    rejected.write_text(json.dumps({"input_data": {"columns": ["a"], "data": [["x"]]}}))
    failed = runner.invoke(cli, [*args[:-2], "--request-file", str(rejected)], catch_exceptions=False)
    assert failed.exit_code != 0 and "The model would refuse this request" in failed.output

    bad = tmp_path / "bad.json"
    bad.write_text("input_data=1")
    refused = runner.invoke(cli, [*args, "--request-file", str(bad)], catch_exceptions=False)
    assert refused.exit_code != 0 and "The request is not JSON" in refused.output

    unknown = runner.invoke(
        cli, ["model", "profile", "--name", "clf", "--version", "1", "--instance-type", "Huge"]
    )
    assert unknown.exit_code != 0 and "'Huge' is not a known instance type" in unknown.output


def test_the_version_page_starts_a_profile_and_shows_the_newest_one(team, model_zip):
    from studio.testing import signed_in

    register(team.contributor.client(), "clf", model_zip, "mlflow_model")
    contributor = signed_in(team.contributor.user)
    url = "/models/clf/versions/1/profile/"
    refused = contributor.post(
        url, {"instance_types": ["Standard_DS1_v2"], "duration": "soon"}, HTTP_HX_REQUEST="true"
    )
    assert refused.status_code == 400 and "is not a duration" in refused.content.decode()

    card = contributor.post(
        url, {"instance_types": ["Standard_DS1_v2"], "duration": "0.5"}, HTTP_HX_REQUEST="true"
    )
    html = card.content.decode()
    assert card.status_code == 200 and '<section class="card" id="profile"' in html and "<html" not in html
    assert 'id="profile-figures"' in html and "<code>Standard_DS1_v2</code>" in html
    assert "Recommended" in html and "hx-trigger" not in html, "a finished profile is not polled"

    page = signed_in(team.reader.user).get("/models/clf/versions/1/")
    assert page.status_code == 200 and 'id="profile-figures"' in page.content.decode()
    assert "<form" not in page.content.decode().split('id="profile"')[1].split("</section>")[0], (
        "readers see no form"
    )


def test_an_input_example_over_a_mebibyte_is_refused_not_cut(team, tmp_path):
    import yaml

    folder = save_sklearn_mlflow_model(tmp_path / "model")
    rows = [[0.5, 0.5]] * 100_000  # about 1.2 MB as JSON
    (folder / "serving_input_example.json").write_text(json.dumps({"inputs": rows}))
    document = yaml.safe_load((folder / "MLmodel").read_text())
    document["saved_input_example_info"] = {"serving_input_path": "serving_input_example.json"}
    (folder / "MLmodel").write_text(yaml.safe_dump(document))
    client = team.contributor.client()
    register(client, "big", zipped(folder), "mlflow_model")
    answer = _profile(client, "big", instance_types=TWO_TYPES[:1], duration="0.5s")
    assert answer.status_code == 202, answer.json()
    job = client.get(answer["Location"]).json()
    assert job["state"] == "failed" and "input example is larger than 1024 KiB" in job["error"], job[
        "events"
    ][-1]
