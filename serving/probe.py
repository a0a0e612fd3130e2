"""`python -m serving.probe`: the readiness check a container runtime runs inside a replica.

The model server answers its readiness route only to callers with the replica key (serving.replica_key),
so a kubelet's HTTP probe, which could carry the key only in the pod's spec for every reader of it to see,
cannot ask. This runs in the replica's container, where the key is in the environment the container was
given, asks the server on loopback, and exits 0 when it is ready, 1 otherwise (saying why on stderr).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from serving import replica_key
from serving.settings import DEFAULT_PORT

TIMEOUT_S = 2.0


def ready(port: int, key: str) -> tuple[bool, str]:
    url = f"http://127.0.0.1:{port}/health/ready"
    request = urllib.request.Request(url, headers=replica_key.headers(key))
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:  # noqa: S310 (loopback only)
            return answer.status == 200, ""
    except urllib.error.HTTPError as exc:
        return False, exc.read(2000).decode(errors="replace")
    except OSError as exc:
        return False, str(exc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    port = int(argv[0]) if argv else DEFAULT_PORT
    ok, why = ready(port, os.environ.get(replica_key.VARIABLE, ""))
    if not ok:
        print(f"not ready: {why}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
