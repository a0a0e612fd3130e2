"""The broker that needs no server: kombu's filesystem transport, each message published whole.

A queue is a folder of message files, one per message, named `<milliseconds>_<uuid>.<queue>.msg` so that
their names sort in the order they were sent. kombu's own channel creates a message's file in the queue's
folder and then writes it; a worker polling the folder may take the file in between, read it empty or cut
short, and its consumer then stops on the JSON error, losing the message (celery/kombu#1551; seen here as a
worker that stopped while a batch job was being queued). Here a message is written under a name no consumer
takes (the queue's suffix plus `.partial`) and renamed into place once whole: a rename within a folder is
atomic, so a consumer sees the whole message or none of it.

Selected with CELERY_BROKER_TRANSPORT = TRANSPORT (settings do so for `filesystem://`); the folders are
the transport options `transport_options` gives.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

TRANSPORT = "studio.broker:Transport"


def transport_options(folder: Path) -> dict:
    """The transport options of a broker kept in `folder` (its `queue`, `processed` and `control`
    folders, made here if missing)."""
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        # Without control_folder, kombu keeps its fanout tables in ./control of whatever the current
        # directory is, so a worker and `celery inspect` started from different folders never meet.
        "control_folder": str(folder / "control"),
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        # The default one-second poll would add up to a second to every job's start.
        "polling_interval": 0.1,
    }


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs) -> None:
        """Put `payload` on `queue`: written aside, then renamed into the queue's folder."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        partial = f"{path}.partial"
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add the message {path!r} to its queue: {exc}") from exc


class Transport(filesystem.Transport):
    Channel = Channel
