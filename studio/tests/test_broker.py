"""The broker that needs no server: messages another process publishes reach a consumer whole, each once.

kombu's own filesystem transport lets a consumer read a message its publisher has created but not yet
written; with large messages sent while a consumer polls, most of them are read empty (measured here: 1,362
of 2,000 messages of 200 kB), and a Celery worker's consumer stops at the first.
"""

import subprocess
import sys
import textwrap
import time
from queue import Empty

from kombu import Connection

from studio import broker

MESSAGES = 300
BODY = "x" * 200_000  # a large message takes long enough to write that a polling consumer meets it


def test_a_message_is_taken_whole_or_not_at_all_while_another_process_publishes(tmp_path):
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                from pathlib import Path
                from kombu import Connection
                from studio import broker
                options = broker.transport_options(Path({str(tmp_path)!r}))
                with Connection("filesystem://", transport=broker.TRANSPORT, transport_options=options) as c:
                    queue = c.SimpleQueue("jobs")
                    for number in range({MESSAGES}):
                        queue.put({{"number": number, "body": "x" * {len(BODY)}}})
                """
            ),
        ]
    )
    received = []
    deadline = time.monotonic() + 120
    options = broker.transport_options(tmp_path)
    with Connection("filesystem://", transport=broker.TRANSPORT, transport_options=options) as consuming:
        queue = consuming.SimpleQueue("jobs")
        while len(received) < MESSAGES and time.monotonic() < deadline:
            try:
                message = queue.get(timeout=0.05)  # a message read cut short raises here
            except Empty:
                continue
            assert message.payload["body"] == BODY
            received.append(message.payload["number"])
            message.ack()
    assert publisher.wait(timeout=60) == 0
    assert received == list(range(MESSAGES))
    assert not list((tmp_path / "queue").iterdir()), "nothing is left half-written in the queue"
