"""The shipper: closed gateway spool segments -> immutable gzip JSON-lines objects in the telemetry store.

Promises (docs/monitoring.md):
- Only closed segments (`*.jsonl`) are read; `*.jsonl.open` is still being written.
- A segment's events are split by endpoint, deployment, kind and hour into objects named after the
  segment (`monitoring.layout`). Lines are copied byte for byte and compressed with a fixed gzip header
  (mtime 0), so shipping a segment twice writes the same names with the same bytes.
- A segment is deleted only after the store confirmed every object of it and `on_shipped` returned;
  a crash anywhere before that leaves the segment to be shipped again.
- Objects are written create-only: a resend finds the same bytes and moves on. An object that exists with
  other bytes is never overwritten: the error is logged and the segment is kept aside in `conflicts/` of
  the spool, for a person to look at; its other objects are shipped.

Django-free on purpose: the Celery task runs it on the control plane's host, and `python -m
monitoring.shipper` runs it on a gateway host that has only the spool and the store.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from monitoring.layout import Partition, partition_of
from studio.objectstore import ObjectExists, ObjectStore, store_from_url

logger = logging.getLogger(__name__)

CLOSED_SUFFIX = ".jsonl"
LOCK_NAME = ".shipper.lock"
CONFLICTS = "conflicts"


@dataclass(frozen=True)
class ShippedObject:
    """One object the store confirmed: what the rollup needs to find and check it."""

    key: str
    partition: Partition
    size: int
    md5: str  # of the gzip bytes: the ETag S3 gives a single-part upload
    events: int


@dataclass
class ShipReport:
    segments: int = 0
    objects: int = 0
    events: int = 0
    skipped_lines: int = 0


def closed_segments(spool_dir: Path) -> list[Path]:
    """Closed segments in name order (for one gateway id, that is write order)."""
    try:
        entries = list(os.scandir(spool_dir))
    except FileNotFoundError:
        return []
    return sorted(
        Path(entry.path)
        for entry in entries
        if entry.name.endswith(CLOSED_SUFFIX) and not entry.name.startswith(".") and entry.is_file()
    )


def split_segment(path: Path) -> tuple[dict[Partition, list[bytes]], int]:
    """The segment's lines grouped by partition, and how many lines were skipped as unreadable.

    Only a last line cut short by a full disk is expected to be unreadable (docs/gateway.md); any other
    unreadable line is skipped too, and counted, because one bad line must not block the spool.
    """
    groups: dict[Partition, list[bytes]] = {}
    skipped = 0
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
                partition = partition_of(event)
            except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
                skipped += 1
                continue
            groups.setdefault(partition, []).append(line if line.endswith(b"\n") else line + b"\n")
    return groups, skipped


def compress(lines: list[bytes]) -> bytes:
    """Deterministic gzip: the same lines always give the same bytes (no timestamp, no file name)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0, filename="") as handle:
        for line in lines:
            handle.write(line)
    return buffer.getvalue()


def ship_segment(
    path: Path, store: ObjectStore, on_shipped: Callable[[list[ShippedObject]], None] | None = None
) -> tuple[list[ShippedObject], int]:
    """Upload one closed segment's objects, tell `on_shipped`, then delete the segment.

    Returns the objects and the count of skipped lines. Raises whatever the store raises; the segment
    stays on disk then.
    """
    segment = path.name[: -len(CLOSED_SUFFIX)]
    groups, skipped = split_segment(path)
    shipped, conflicts = [], []
    for partition, lines in sorted(groups.items(), key=lambda item: item[0].key(segment)):
        body = compress(lines)
        key = partition.key(segment)
        try:
            store.put_new(key, body)
        except ObjectExists as exc:
            logger.error("%s: segment %s kept aside in %s", exc, path.name, CONFLICTS)
            conflicts.append(key)
            continue
        shipped.append(
            ShippedObject(
                key, partition, len(body), hashlib.md5(body, usedforsecurity=False).hexdigest(), len(lines)
            )
        )
    if on_shipped is not None:
        on_shipped(shipped)
    if conflicts:
        keep_aside(path)
    else:
        remove_segment(path)
    return shipped, skipped


def keep_aside(path: Path) -> None:
    """Move a segment whose objects collide with other content out of the shipper's way, keeping it."""
    folder = path.parent / CONFLICTS
    folder.mkdir(exist_ok=True)
    os.replace(path, folder / path.name)


def remove_segment(path: Path) -> None:
    """The last step of shipping a segment; a separate function so tests can crash right before it."""
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def spool_lock(spool_dir: Path) -> Iterator[bool]:
    """Yields whether this process holds the spool's shipper lock. One shipper at a time per spool saves
    uploading a segment twice; correctness does not depend on it (a resend is harmless)."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(spool_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing drops the lock


def ship_spool(
    spool_dir: Path,
    store: ObjectStore,
    on_shipped: Callable[[list[ShippedObject]], None] | None = None,
    *,
    max_seconds: float | None = None,
) -> ShipReport:
    """Ship every closed segment of the spool, oldest first; stops early after `max_seconds`.

    When another shipper holds the spool, returns an empty report at once.
    """
    report = ShipReport()
    started = time.monotonic()
    with spool_lock(spool_dir) as held:
        if not held:
            return report
        for path in closed_segments(spool_dir):
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                break
            try:
                shipped, skipped = ship_segment(path, store, on_shipped)
            except FileNotFoundError:
                continue  # shipped and removed by a shipper that did not take the lock (an old version)
            report.segments += 1
            report.objects += len(shipped)
            report.events += sum(item.events for item in shipped)
            report.skipped_lines += skipped
            if skipped:
                logger.warning("skipped %d unreadable line(s) of %s", skipped, path.name)
    return report


def main(argv: list[str] | None = None) -> None:
    """`python -m monitoring.shipper`: ship a spool forever, for a gateway host without the control plane.

    The control plane discovers these objects by listing the store (`discover_telemetry` task)."""
    parser = argparse.ArgumentParser(prog="python -m monitoring.shipper", description=main.__doc__)
    home = Path(os.environ.get("STUDIO_HOME", ".studio"))
    parser.add_argument("--spool-dir", default=os.environ.get("STUDIO_GATEWAY_SPOOL_DIR") or None)
    parser.add_argument("--store", default=os.environ.get("STUDIO_TELEMETRY_STORE") or None)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between passes")
    args = parser.parse_args(argv)
    spool_dir = Path(args.spool_dir) if args.spool_dir else home / "spool" / "gateway"
    store = store_from_url(args.store or f"file://{(home / 'telemetry').resolve()}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    while True:
        try:
            report = ship_spool(spool_dir, store)
            if report.segments:
                logger.info("shipped %d segment(s), %d event(s)", report.segments, report.events)
        except Exception:
            logger.exception("shipping failed; the segments stay in the spool and are retried")
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
