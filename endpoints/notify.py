"""Wakes held route-table long-polls when the version changes: one watcher per web process.

A gateway's long-poll (endpoints/routetable.py) is held until the route table's version differs from the
one the gateway has applied. Instead of every held request reading the version row on a short interval,
each web process runs one watcher thread that learns of changes and wakes the requests waiting on it:

- PostgreSQL: `RouteTableVersion.bump()` sends `NOTIFY studio_route_table, '<version>'` inside the
  transaction that changed routing; PostgreSQL delivers it when that transaction commits, never if it
  rolls back. The watcher holds one LISTEN connection, and reads the row through it every `RECHECK_S`,
  which both proves the connection alive and covers a notification that could have been missed.
- SQLite (the embedded mode) has no notifications: the watcher reads the row every `POLL_INTERVAL_S`,
  and only while some request waits.
- When the LISTEN connection is lost, the watcher polls the row as on SQLite while it reconnects (backing
  off to `RECONNECT_MAX_S`); once listening again it reads the row once, to catch up with the gap.

Whatever the number of held requests, the database sees one watcher's queries per process.

A wake-up is a hint, not an answer: a woken request reads the row itself before it answers. No change can
be missed because a request subscribes *before* it reads the version: a change committed after that read
is notified to, or polled by, a watcher that already counts the request among its waiters.

Waiters are coroutines on whichever event loop serves their request (one per uvicorn worker; one per
request when an async view runs under WSGI), so the watcher, a thread, wakes them with
`loop.call_soon_threadsafe`. A watcher with no waiter for `IDLE_EXIT_S` closes its connections and ends;
the next waiter starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time

import psycopg
from django.db import DatabaseError, connections, router
from psycopg import sql

from endpoints.models import RouteTableVersion

logger = logging.getLogger(__name__)

CHANNEL = RouteTableVersion.CHANNEL
POLL_INTERVAL_S = 0.05  # SQLite, or PostgreSQL while not listening: one row read per process this often
LISTEN_TICK_S = 0.2  # how long a wait for notifications blocks before the watcher checks stop and idleness
RECHECK_S = 30.0  # while listening: a row read through the LISTEN connection this often
RECONNECT_MIN_S = 0.25
RECONNECT_MAX_S = 5.0
IDLE_EXIT_S = 30.0
# Lets an operator find the watchers in pg_stat_activity (one per web process).
APPLICATION_NAME = "studio-route-table-watcher"
# A half-open TCP connection would otherwise look like a quiet channel until the next recheck.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


class Subscription:
    """One held request's registration with its process's watcher.

    `wait()` returns when the version may no longer be `held`, or when the watcher stopped (`closed`:
    the request should end its hold now rather than wait for a watcher that is gone).
    """

    __slots__ = ("held", "closed", "_loop", "_event", "_watcher")

    def __init__(self, held: int, loop: asyncio.AbstractEventLoop) -> None:
        self.held = held
        self.closed = False
        self._loop = loop
        self._event = asyncio.Event()
        self._watcher: Watcher | None = None

    async def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a wake-up; True if woken (then read the version again)."""
        if self.closed:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        # Cleared before the caller reads the row again, so a change during that read wakes the next wait.
        self._event.clear()
        return True

    def close(self) -> None:
        """Leave the watcher's waiters; call when the request stops waiting."""
        if self._watcher is not None:
            self._watcher.remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wake(self) -> None:
        # Called from the watcher thread. A closed loop means the request is gone: nothing to wake.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._event.set)


class Watcher:
    """The one thread of a process that watches the route-table version for every waiting request."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.listens = connections[alias].vendor == "postgresql"
        self.pid = os.getpid()
        self.version: int | None = None  # the last version seen, from the row or a notification
        self.listening = False
        self.backend_pid: int | None = None  # the LISTEN session's, while listening (pg_stat_activity.pid)
        self.reads = 0  # row reads so far: what this process's waiting costs the database
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription] = set()
        self._open = True  # accepts subscriptions until it stops or leaves for idleness
        self._idle_since = time.monotonic()
        self._wanted = threading.Event()  # set while anyone waits (the SQLite poll runs only then)
        self._stopping = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="route-table-watcher", daemon=True)

    @property
    def name(self) -> str:
        """The watcher thread's name."""
        return self._thread.name

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def waiting(self) -> int:
        """How many requests wait on this watcher now."""
        with self._lock:
            return len(self._subscriptions)

    def add(self, subscription: Subscription) -> bool:
        """Count `subscription` among the waiters; False if this watcher no longer accepts any."""
        with self._lock:
            if not self._open:
                return False
            self._subscriptions.add(subscription)
            subscription._watcher = self
            self._wanted.set()
            return True

    def remove(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)
            if not self._subscriptions:
                self._wanted.clear()
                self._idle_since = time.monotonic()

    def stop(self) -> None:
        """End the watcher: its waiters are woken with `closed` set, its connections close as it exits."""
        with self._lock:
            self._open = False
            orphans = list(self._subscriptions)
            for subscription in orphans:
                subscription.closed = True
        self._stopping.set()
        self._wanted.set()
        for subscription in orphans:
            subscription._wake()

    # --- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.listens:
                self._listen()
            else:
                self._poll_until(None)
        except Exception:
            logger.exception("The route table watcher failed; the requests it held end their wait now.")
        finally:
            # Whatever ended the thread, no request may keep waiting on it: each ends its hold, and the
            # gateway's next poll starts a new watcher.
            self.stop()
            connections.close_all()  # this thread's own connections

    def _leave_if_idle(self) -> bool:
        with self._lock:
            if self._open and not self._subscriptions and time.monotonic() - self._idle_since > IDLE_EXIT_S:
                self._open = False
                self._stopping.set()
        return self._stopping.is_set()

    def _seen(self, version: int | None) -> None:
        """Wake the waiters a change to `version` concerns (all of them when it is unknown)."""
        with self._lock:
            if version is not None:
                if version == self.version:
                    return
                self.version = version
            targets = [s for s in self._subscriptions if version is None or s.held != version]
        for subscription in targets:
            subscription._wake()

    def _poll_until(self, deadline: float | None) -> None:
        """Read the row every POLL_INTERVAL_S while anyone waits, until `deadline` (monotonic) or the end."""
        while not self._leave_if_idle():
            if deadline is not None and time.monotonic() >= deadline:
                return
            if not self._wanted.is_set():
                wake_at = IDLE_EXIT_S if deadline is None else max(0.0, deadline - time.monotonic())
                self._wanted.wait(min(wake_at, IDLE_EXIT_S))
                continue
            self._refresh()
            self._stopping.wait(POLL_INTERVAL_S)

    def _refresh(self) -> None:
        """One row read on this thread's Django connection (SQLite; PostgreSQL while not listening)."""
        try:
            version = RouteTableVersion.current()
        except DatabaseError as exc:
            self._report_failure(f"cannot read the route table version: {exc}")
            # A broken connection stays broken: drop it, so the next read connects again.
            with contextlib.suppress(DatabaseError):
                connections[self.alias].close()
            return
        self.reads += 1
        if not self.listens:  # on PostgreSQL, recovery is listening again, not a read in between
            self._report_recovery()
        self._seen(version)

    def _listen(self) -> None:
        backoff = RECONNECT_MIN_S
        while not self._stopping.is_set():
            try:
                connection = self._connect()
            except psycopg.Error as exc:
                self._report_failure(f"cannot LISTEN on {CHANNEL}: {exc}; polling meanwhile")
                self._poll_until(time.monotonic() + backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
                continue
            backoff = RECONNECT_MIN_S
            try:
                self.backend_pid = connection.info.backend_pid
                self.listening = True
                self._report_recovery()
                self._serve(connection)
            except psycopg.Error as exc:
                self._report_failure(f"lost the LISTEN connection: {exc}; polling until it is back")
            finally:
                self.listening = False
                self.backend_pid = None
                with contextlib.suppress(psycopg.Error):
                    connection.close()

    def _connect(self) -> psycopg.Connection:
        params = connections[self.alias].get_connection_params()
        params.setdefault("connect_timeout", 5)
        params["application_name"] = APPLICATION_NAME
        for key, value in _KEEPALIVES.items():
            params.setdefault(key, value)
        connection = psycopg.connect(**params, autocommit=True)
        try:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        except psycopg.Error:
            connection.close()
            raise
        return connection

    def _serve(self, connection: psycopg.Connection) -> None:
        """Wake waiters on notifications until stopped or idle; raises psycopg.Error when the link fails."""
        query = sql.SQL("SELECT version FROM {} WHERE id = 1").format(
            sql.Identifier(RouteTableVersion._meta.db_table)
        )

        def read_row() -> None:
            row = connection.execute(query).fetchone()
            self.reads += 1
            self._seen(row[0] if row else 0)

        # Changes committed before LISTEN took effect were notified to nobody: the row has them.
        read_row()
        recheck_at = time.monotonic() + RECHECK_S
        while not self._leave_if_idle():
            for notification in connection.notifies(timeout=LISTEN_TICK_S):
                try:
                    version: int | None = int(notification.payload)
                except ValueError:
                    version = None  # not ours to parse: wake everyone, they read the row
                self._seen(version)
            if time.monotonic() >= recheck_at:
                read_row()
                recheck_at = time.monotonic() + RECHECK_S

    def _report_failure(self, message: str) -> None:
        # Once per outage, not once per retry.
        if not self._failing:
            self._failing = True
            logger.warning("Route table watcher: %s", message)

    def _report_recovery(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("Route table watcher: %s again.", "listening" if self.listening else "reading")


_registry_lock = threading.Lock()
_watcher: Watcher | None = None


def subscribe(held: int) -> Subscription:
    """Register the calling coroutine to be woken when the version may differ from `held`.

    Subscribe *before* reading the version, and close the subscription when done waiting; then no change
    committed after that read can go unnoticed. Starts this process's watcher if none runs.
    """
    global _watcher
    subscription = Subscription(held, asyncio.get_running_loop())
    with _registry_lock:
        # A watcher inherited through fork() has no thread in this process; one that stopped takes no one.
        if _watcher is None or _watcher.pid != os.getpid() or not _watcher.add(subscription):
            _watcher = Watcher(router.db_for_write(RouteTableVersion))
            _watcher.add(subscription)
            _watcher.start()
    return subscription


def current_watcher() -> Watcher | None:
    """This process's watcher, if one runs (for diagnostics and tests)."""
    with _registry_lock:
        watcher = _watcher
    if watcher is None or watcher.pid != os.getpid() or not watcher.is_alive():
        return None
    return watcher


def stop(timeout: float = 5.0) -> None:
    """Stop this process's watcher and wait up to `timeout` s for its connections to close.

    The requests it held end their wait at once; a later request starts a new watcher.
    """
    global _watcher
    with _registry_lock:
        watcher, _watcher = _watcher, None
    if watcher is not None and watcher.pid == os.getpid():
        watcher.stop()
        if watcher.is_alive():
            watcher.join(timeout)
