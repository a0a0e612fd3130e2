"""A replica's whole log, for a download: streamed in chunks from its first line, never held in memory.

Targets answer `logs(replica, lines)` with a tail, which is what pages and the API show. A download
wants everything the replica wrote: a local replica's log file is read from its start, a container's
log is streamed by the engine; a target with neither gives the longest tail it has.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from endpoints.choices import ProvisioningStateChoices, ReplicaStateChoices, TargetChoices
from endpoints.targets.local import tail

CHUNK_BYTES = 64 * 1024
# For a target that only answers tails: more lines than any replica log a download is meant for.
LONGEST_TAIL = 1_000_000


@dataclass(frozen=True)
class KeptLog:
    """The log a replica of a failed revision left behind (endpoints.reconcile keeps it), shown where a
    running replica's log is: the replica itself is gone."""

    replica_id: str
    path: Path
    state: str = ReplicaStateChoices.FAILED
    url: str = ""

    def tail(self, lines: int) -> str:
        return tail(self.path, lines)


def kept_logs(deployment, running: set[str]) -> list[KeptLog]:
    """A failed deployment's kept logs of the revision that failed, but for replicas in `running`."""
    if deployment.provisioning_state != ProvisioningStateChoices.FAILED:
        return []
    from endpoints.reconcile import log_folder

    paths = sorted(log_folder(deployment).glob(f"{deployment.name}-{deployment.revision}-*.log"))
    return [KeptLog(path.stem, path) for path in paths if path.stem not in running and path.is_file()]


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def whole_log(target, replica) -> Iterator[bytes]:
    """Everything the replica logged, as bytes, in order; an empty iterator when it logged nothing.

    The first chunk is read before this returns, so a log that cannot be read fails here, where the
    caller can still answer with an error, not half way through a download."""
    chunks = _chunks(target, replica)
    first = next(chunks, None)
    if first is None:
        return iter(())
    return _prepend(first, chunks)


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _chunks(target, replica) -> Iterator[bytes]:
    if isinstance(replica, KeptLog):
        yield from _file_chunks(replica.path)
        return
    if target.name == TargetChoices.LOCAL:
        path = replica.handle.get("log")
        if path and Path(path).is_file():
            yield from _file_chunks(Path(path))
        return
    if target.name == TargetChoices.DOCKER and hasattr(target, "_container"):
        container = target._container(replica)  # noqa: SLF001 -- the driver's own lookup, kept in one place
        if container is not None:
            yield from container.logs(stream=True, follow=False)
        return
    text = target.logs(replica, LONGEST_TAIL)
    if text:
        yield text.encode() + b"\n"
