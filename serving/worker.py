"""One worker process: limits math-library threads, captures output as JSON logs, serves the app.

Started by the supervisor (`serving.server`) with the shared listening socket and its metrics slot.
"""

from __future__ import annotations

import os
import socket
import traceback
from typing import Any

from serving.settings import Settings

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "BLIS_NUM_THREADS",
)


def limit_math_threads(threads: int) -> None:
    """Default every math library to `threads` threads (values the operator set win).

    Must run before numpy or any BLAS is imported: the libraries read these once, at load. N workers
    each starting one thread per core oversubscribe the machine and make scoring many times slower.
    """
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))


def run_worker(settings: Settings, slot: int, sock: socket.socket, cells: Any) -> None:
    """Entry point of a worker process; returns when the server stops."""
    limit_math_threads(settings.threads_per_worker)

    import uvicorn

    from serving.app import ScoringApp
    from serving.logs import JsonLog, capture_output
    from serving.metrics import WorkerMetrics
    from serving.scorer import build_scorer

    log = JsonLog(worker=slot, pid=os.getpid())
    capture_output(log)
    metrics = WorkerMetrics(cells, slot)
    metrics.started()
    try:
        scorer = build_scorer(settings)
    except Exception as exc:
        from serving.metrics import FAILED

        metrics.set_state(FAILED)
        log.error(f"Cannot serve: {exc}", event="load_failed", traceback=traceback.format_exc())
        raise SystemExit(3) from None
    app = ScoringApp(settings, scorer, metrics, cells, log)
    config = uvicorn.Config(
        app,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=max(5, settings.timeout_ms // 1000),
    )
    uvicorn.Server(config).run(sockets=[sock])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
