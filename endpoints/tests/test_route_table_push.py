"""Held route-table polls are woken by one watcher per web process, not by a database poll per request."""

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from django.db import connection, transaction
from django.db.backends.signals import connection_created

from endpoints import notify
from endpoints.models import GatewayAck, RouteTableVersion
from studio.testkit import GATEWAY_SECRET, free_port, until

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]
HELD = 16
WORKERS = 2


def _hold_polls(url: str, version: int, count: int, wait: float = 20) -> tuple[ThreadPoolExecutor, list]:
    """`count` gateways' polls holding `version`, each in its own thread; returns their futures, whose
    results are (status, ETag, monotonic time of the answer)."""

    def poll(index: int):
        response = httpx.get(
            f"{url}/internal/route-table/",
            params={"wait": wait},
            headers={
                "Authorization": f"Bearer {GATEWAY_SECRET}",
                "If-None-Match": f'"{version}"',
                "X-Studio-Gateway": f"push-{index}",
            },
            timeout=wait + 15,
        )
        return response.status_code, response.headers.get("ETag"), time.monotonic()

    pool = ThreadPoolExecutor(count)
    return pool, [pool.submit(poll, index) for index in range(count)]


def _bump() -> int:
    with transaction.atomic():
        RouteTableVersion.bump()
    return RouteTableVersion.current()


class QueryLog:
    """Counts the SQL statements that read the route table version, per thread, on every connection this
    process opens from now on (the live server's request threads and the watcher thread included)."""

    def __init__(self):
        self.by_thread: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, execute, sql, params, many, context):
        if RouteTableVersion._meta.db_table in sql:
            name = threading.current_thread().name
            with self._lock:
                self.by_thread[name] = self.by_thread.get(name, 0) + 1
        return execute(sql, params, many, context)

    def attach(self, sender, connection, **kwargs):
        connection.execute_wrappers.append(self)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.by_thread)


def test_held_polls_share_one_watcher_and_the_database_sees_only_its_reads(live_server, monkeypatch):
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    version = _bump()
    log = QueryLog()
    connection_created.connect(log.attach)
    try:
        pool, answers = _hold_polls(live_server.url, version, HELD)

        def all_held() -> bool:
            # Subscribed to the watcher, and past the version read each does once after subscribing.
            watcher = notify.current_watcher()
            requests = [thread for thread in log.snapshot() if watcher and thread != watcher.name]
            return watcher is not None and watcher.waiting == HELD and len(requests) == HELD

        assert until(all_held, timeout=15)
        watcher = notify.current_watcher()

        before, reads_before = log.snapshot(), watcher.reads
        window_started = time.monotonic()
        # Not a sleep to let something happen: the window in which nothing may poll per request.
        time.sleep(1.0)
        window = time.monotonic() - window_started
        after, reads = log.snapshot(), watcher.reads - reads_before
        by_requests = sum(n - before.get(t, 0) for t, n in after.items() if t != watcher.name)
        assert by_requests == 0, f"held requests read the version themselves: {after}"
        if connection.vendor == "postgresql":
            assert watcher.listening
            assert reads <= 1, "listening: no row reads but the periodic recheck"
        else:
            assert reads <= window / notify.POLL_INTERVAL_S + 2, "one watcher's reads, not one per request"
        assert notify.current_watcher() is watcher and watcher.waiting == HELD

        bumped_at = time.monotonic()
        new_version = _bump()
        results = [answer.result(timeout=10) for answer in answers]
        pool.shutdown()
    finally:
        connection_created.disconnect(log.attach)
    assert {(status, etag) for status, etag, _ in results} == {(200, f'"{new_version}"')}
    assert max(at for _, _, at in results) - bumped_at < 2.0


# --- the production shape: uvicorn with two worker processes -------------------------------------------


def _database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(settings['NAME']).resolve()}"
    credentials = quote(settings["USER"] or "", safe="")
    if settings["PASSWORD"]:
        credentials += ":" + quote(settings["PASSWORD"], safe="")
    host = settings["HOST"] or "127.0.0.1"
    port = settings["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{settings['NAME']}"


@pytest.fixture
def web(tmp_path, settings):
    """The control plane as production runs it (uvicorn, 2 workers) on this test's database."""
    port = free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("STUDIO_")},
        "DATABASE_URL": _database_url(),
        "STUDIO_HOME": str(tmp_path / "home"),
        "SECRET_KEY": settings.SECRET_KEY,
        "STUDIO_GATEWAY_SECRET": GATEWAY_SECRET,
        "DJANGO_SETTINGS_MODULE": "studio.settings",
        "PYTHONPATH": str(REPO),
    }
    argv = [
        sys.executable, "-m", "uvicorn", "studio.asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(WORKERS), "--no-access-log", "--lifespan", "off",
    ]  # fmt: skip
    process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"uvicorn exited: {process.stderr.read().decode()[-2000:]}")
        try:
            headers = {"Authorization": f"Bearer {GATEWAY_SECRET}"}
            return httpx.get(f"{url}/internal/route-table/", headers=headers, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert until(answers, timeout=60), "the control plane starts"
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _a_bump_answers_every_held_poll(web: str) -> int:
    """Hold polls on the workers, bump from this process's connection; every poll answers the new table
    promptly. Returns the new version."""
    version = _bump()
    pool, answers = _hold_polls(web, version, 8)
    # Each poll's acknowledgement is written after it subscribed to its worker's watcher: once all are
    # there, all are held.
    assert until(lambda: GatewayAck.objects.filter(version=version).count() == 8, timeout=15)
    bumped_at = time.monotonic()
    new_version = _bump()
    results = [answer.result(timeout=25) for answer in answers]
    pool.shutdown()
    assert {(status, etag) for status, etag, _ in results} == {(200, f'"{new_version}"')}
    slowest = max(at for _, _, at in results) - bumped_at
    assert slowest < 1.0, f"the last held poll answered {slowest:.2f} s after the bump"
    return new_version


@pytest.mark.skipif(
    connection.vendor != "sqlite",
    reason="The tests run on PostgreSQL (DATABASE_URL); this one tests the watcher that reads the SQLite row.",
)
def test_a_bump_wakes_the_held_polls_of_every_worker_on_sqlite(web):
    _a_bump_answers_every_held_poll(web)


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="LISTEN/NOTIFY needs PostgreSQL: run with DATABASE_URL=postgres://... to test it "
    "(the embedded SQLite has no notifications).",
)
def test_a_bump_wakes_the_held_polls_of_every_worker_on_postgresql(web):
    _a_bump_answers_every_held_poll(web)
    # One LISTEN connection per worker process that held a poll, whatever the number of polls.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [notify.APPLICATION_NAME],
        )
        listeners = cursor.fetchone()[0]
    assert 1 <= listeners <= WORKERS


# --- when the watcher loses its connection or stops ---------------------------------------------------


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="Only PostgreSQL has a LISTEN connection to lose."
)
def test_a_lost_listen_connection_falls_back_to_polling_and_reconnects(live_server, monkeypatch):
    import psycopg

    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    version = _bump()
    pool, answers = _hold_polls(live_server.url, version, 1)
    assert until(lambda: (w := notify.current_watcher()) is not None and w.listening and w.waiting == 1)
    watcher = notify.current_watcher()

    # The database goes away for the watcher: its connection is killed and reconnecting fails for now.
    refuse = threading.Event()
    refuse.set()
    connect = notify.Watcher._connect

    def flaky_connect(self):
        if refuse.is_set():
            raise psycopg.OperationalError("connection refused (test)")
        return connect(self)

    monkeypatch.setattr(notify.Watcher, "_connect", flaky_connect)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [watcher.backend_pid])
    assert until(lambda: not watcher.listening, timeout=5)

    # Meanwhile the watcher reads the row: a bump still answers the held poll.
    bumped_at = time.monotonic()
    new_version = _bump()
    status, etag, answered_at = answers[0].result(timeout=10)
    pool.shutdown()
    assert (status, etag) == (200, f'"{new_version}"')
    assert answered_at - bumped_at < 2.0
    assert not watcher.listening

    # Once the database takes connections again, the watcher listens again.
    refuse.clear()
    pool, answers = _hold_polls(live_server.url, new_version, 1)
    assert until(lambda: watcher.listening, timeout=10)
    assert notify.current_watcher() is watcher
    newest = _bump()
    assert answers[0].result(timeout=10)[:2] == (200, f'"{newest}"')
    pool.shutdown()


def test_held_polls_end_at_once_when_the_watcher_stops(live_server, monkeypatch):
    monkeypatch.setenv("STUDIO_GATEWAY_SECRET", GATEWAY_SECRET)
    version = _bump()
    pool, answers = _hold_polls(live_server.url, version, 3, wait=30)
    assert until(lambda: (w := notify.current_watcher()) is not None and w.waiting == 3)
    stopped_at = time.monotonic()
    notify.stop()
    results = [answer.result(timeout=10) for answer in answers]
    pool.shutdown()
    assert {(status, etag) for status, etag, _ in results} == {(304, f'"{version}"')}
    assert max(at for _, _, at in results) - stopped_at < 2.0
