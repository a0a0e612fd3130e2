"""The model server's configuration: command-line flags over environment variables, parsed strictly.

A replica is configured entirely by its environment (the names Azure ML's inference server uses, plus
Studio's own); flags exist for people running the server by hand. A value that does not parse stops the
start with a message naming the variable and what it expected.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from serving import replica_key
from serving.envparse import ConfigError, number, whole_number

DEFAULT_PORT = 5001
DEFAULT_TIMEOUT_MS = 60_000
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024
DEFAULT_INSTALLATION_CHECK_S = 5.0


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to know; picklable so it can be handed to spawned worker processes."""

    model_dir: Path | None
    code_dir: Path | None
    scoring_script: str | None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 1
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch_size: int = 1
    max_batch_delay_ms: float = 0.0
    threads_per_worker: int = 1
    # The file that exists while the Studio installation that started this replica does (STUDIO_INSTALLATION),
    # and how often the supervisor looks (STUDIO_INSTALLATION_CHECK_S): once it is gone, the replica stops.
    installation: Path | None = None
    installation_check_s: float = DEFAULT_INSTALLATION_CHECK_S
    # Where to write the port once listening: with port 0 the kernel picks a free one, so whoever starts
    # the server never races another process for a port it chose.
    port_file: Path | None = None
    # The deployment's replica key (STUDIO_REPLICA_KEY): every request but liveness must present it.
    # None for a server run by hand without it. Kept out of repr, so no log or error message shows it.
    replica_key: bytes | None = field(default=None, repr=False)

    @property
    def batching(self) -> bool:
        """Adaptive batching is on only when a deployment asks for batches larger than one."""
        return self.max_batch_size > 1

    @property
    def script_path(self) -> Path | None:
        """The scoring script's absolute path, or None for a no-code (MLflow) deployment."""
        if not self.scoring_script:
            return None
        script = Path(self.scoring_script)
        if not script.is_absolute() and self.code_dir is not None:
            script = self.code_dir / script
        return script.resolve()


def _first(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Serve one model: an Azure ML scoring script or an MLflow model with no code.",
    )
    parser.add_argument("--model-dir", help="model folder (env AZUREML_MODEL_DIR or STUDIO_MODEL_DIR)")
    parser.add_argument("--code", help="folder holding the scoring script (env AZUREML_SOURCE_DIRECTORY)")
    parser.add_argument(
        "--scoring-script", help="scoring script file (env AZUREML_ENTRY_SCRIPT or STUDIO_SCORING_SCRIPT)"
    )
    parser.add_argument("--host", help="address to listen on (env STUDIO_HOST, default 127.0.0.1)")
    parser.add_argument("--port", help=f"port to listen on (env PORT, default {DEFAULT_PORT})")
    parser.add_argument(
        "--port-file", help="once listening, write the port to this file (use with --port 0: any free port)"
    )
    parser.add_argument("--workers", help="worker processes (env WORKER_COUNT, default 1)")
    return parser


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags (which win) and the environment; raises ConfigError naming a bad value."""
    env = os.environ if env is None else env
    args = _parser().parse_args(argv)

    def pick(flag_value: str | None, flag: str, *names: str) -> tuple[str, str] | None:
        if flag_value:
            return flag, flag_value
        return _first(env, *names)

    model = pick(args.model_dir, "--model-dir", "AZUREML_MODEL_DIR", "STUDIO_MODEL_DIR")
    # AML_APP_ROOT is where Azure's server looks for the scoring script when nothing else names a folder.
    code = pick(args.code, "--code", "AZUREML_SOURCE_DIRECTORY", "STUDIO_SOURCE_DIRECTORY", "AML_APP_ROOT")
    script = pick(args.scoring_script, "--scoring-script", "AZUREML_ENTRY_SCRIPT", "STUDIO_SCORING_SCRIPT")
    host = pick(args.host, "--host", "STUDIO_HOST")
    port = pick(args.port, "--port", "PORT", "STUDIO_PORT")
    workers = pick(args.workers, "--workers", "WORKER_COUNT")
    timeout = _first(env, "SCORING_TIMEOUT_MS")
    body = _first(env, "STUDIO_MAX_BODY_BYTES")
    batch_size = _first(env, "STUDIO_MAX_BATCH_SIZE")
    batch_delay = _first(env, "STUDIO_MAX_BATCH_DELAY_MS")
    threads = _first(env, "STUDIO_THREADS_PER_WORKER")
    installation = _first(env, "STUDIO_INSTALLATION")
    check = _first(env, "STUDIO_INSTALLATION_CHECK_S")
    key = _first(env, replica_key.VARIABLE)

    model_dir = Path(model[1]).resolve() if model else None
    if model_dir is not None and not model_dir.exists():
        raise ConfigError(f"{model[0]}={model[1]!r}: no such file or folder.")
    code_dir = Path(code[1]).resolve() if code else None
    if code_dir is not None and not code_dir.is_dir():
        raise ConfigError(f"{code[0]}={code[1]!r}: no such folder.")
    if model_dir is None and script is None:
        raise ConfigError(
            "Nothing to serve: set --model-dir (or AZUREML_MODEL_DIR) for an MLflow model, "
            "or --scoring-script (or AZUREML_ENTRY_SCRIPT) for a scoring script."
        )

    settings = Settings(
        model_dir=model_dir,
        code_dir=code_dir,
        scoring_script=script[1] if script else None,
        host=host[1] if host else "127.0.0.1",
        port=whole_number(port[0], port[1], 0) if port else DEFAULT_PORT,
        workers=whole_number(workers[0], workers[1], 1) if workers else 1,
        timeout_ms=whole_number(*timeout, 1) if timeout else DEFAULT_TIMEOUT_MS,
        max_body_bytes=whole_number(*body, 1) if body else DEFAULT_MAX_BODY_BYTES,
        max_batch_size=whole_number(*batch_size, 1) if batch_size else 1,
        max_batch_delay_ms=number(*batch_delay, 0.0) if batch_delay else 0.0,
        threads_per_worker=whole_number(*threads, 1) if threads else 1,
        installation=Path(installation[1]) if installation else None,
        installation_check_s=number(*check, 0.1) if check else DEFAULT_INSTALLATION_CHECK_S,
        port_file=Path(args.port_file) if args.port_file else None,
        replica_key=replica_key.parse(*key) if key else None,
    )
    script_path = settings.script_path
    if script_path is not None and not script_path.is_file():
        raise ConfigError(f"{script[0]}={script[1]!r}: the scoring script {script_path} does not exist.")
    return settings
