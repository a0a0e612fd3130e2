"""One worker process: limits math-library threads, captures output as JSON logs, serves the app.

Started by the supervisor (`serving.server`) with the shared listening socket and its metrics slot:
spawned (a fresh interpreter) by default, or forked from a supervisor that itself came from the warm
template (`serving.warm`), in which case the libraries are loaded already and only need their limits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
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
# The variable that sizes each thread pool threadpoolctl can resize, by its `internal_api` name.
_POOL_VARIABLES = {
    "openmp": "OMP_NUM_THREADS",
    "openblas": "OPENBLAS_NUM_THREADS",
    "mkl": "MKL_NUM_THREADS",
    "blis": "BLIS_NUM_THREADS",
}


def limit_math_threads(threads: int) -> None:
    """Default every math library to `threads` threads (values the operator set win).

    Must run before numpy or any BLAS is imported: the libraries read these once, at load. N workers
    each starting one thread per core oversubscribe the machine and make scoring many times slower.
    """
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))


def apply_math_thread_limits(threads: int) -> None:
    """Resize the thread pools of math libraries loaded already to what the environment now asks for.

    A forked worker inherits libraries that read their thread variables when the template loaded them,
    so the deployment's values (set by `limit_math_threads`) are applied at run time instead. OpenMP's
    setting belongs to the calling thread: call this in every thread that runs the model.
    """
    limit_math_threads(threads)
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # no math library that it could resize is installed either
        return
    controller = ThreadpoolController()
    for pool, name in _POOL_VARIABLES.items():
        try:
            wanted = max(1, int(os.environ[name]))
        except ValueError:
            continue  # the library ignored a value it could not read, so this does too
        selected = controller.select(internal_api=pool)
        if selected.lib_controllers:
            selected.limit(limits=wanted)
    numexpr = sys.modules.get("numexpr")
    if numexpr is not None:
        with contextlib.suppress(ValueError):
            numexpr.set_num_threads(max(1, int(os.environ["NUMEXPR_NUM_THREADS"])))


def _forked_start(settings: Settings) -> None:
    """Make a forked worker start as a spawned one would: default signals, own randomness, its limits."""
    # The supervisor's handlers came along with the fork; a spawned worker starts with the defaults.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        # numpy's global generator is not reseeded on fork: every worker would draw the same numbers.
        numpy.random.seed()
    apply_math_thread_limits(settings.threads_per_worker)


def uvicorn_choices() -> dict[str, str]:
    """The event loop and HTTP parser workers run: the C implementations when they are installed."""
    return {
        "loop": "uvloop" if _has("uvloop") else "asyncio",
        "http": "httptools" if _has("httptools") else "h11",
    }


def run_worker(settings: Settings, slot: int, sock: socket.socket, cells: Any, forked: bool = False) -> None:
    """Entry point of a worker process; returns when the server stops."""
    if forked:
        _forked_start(settings)
    else:
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
    if forked:
        # The model is loaded and run in the app's model thread: give that thread the limits too.
        app.executor.submit(apply_math_thread_limits, settings.threads_per_worker).result()
    config = uvicorn.Config(
        app,
        **uvicorn_choices(),
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
