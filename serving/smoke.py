"""The smoke test of a built environment: `python -m serving.smoke '<json>'` run by its interpreter.

It imports what the environment installs for a deployment (the top-level modules of each distribution
it requires, and the library of the model's flavor), then loads an MLflow model as a replica would. A
package built for another numpy ABI fails here, at build time, rather than at a replica's first request.
The last line says what happened: `SMOKE-OK`, or `SMOKE-FAILED <what>: <error>`.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import json
import sys
from pathlib import Path

SKIPPED = {"tests", "test", "docs", "examples", "benchmarks"}


def top_level_modules(name: str) -> list[str]:
    """The importable top-level modules of the installed distribution `name` (none when not installed)."""
    try:
        distribution = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return []
    names = (distribution.read_text("top_level.txt") or "").split()
    if not names:
        found = set()
        for item in distribution.files or []:
            parts = item.parts
            if len(parts) == 2 and parts[1] == "__init__.py":
                found.add(parts[0])
            elif len(parts) == 1 and parts[0].endswith(".py"):
                found.add(parts[0].removesuffix(".py"))
        names = sorted(found)
    return [m for m in names if m.isidentifier() and not m.startswith("_") and m not in SKIPPED]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def main(argv: list[str]) -> int:
    wanted = json.loads(argv[0])
    modules = list(wanted.get("modules") or [])
    for name in wanted.get("distributions") or []:
        modules += top_level_modules(name)
    for module in dict.fromkeys(modules):
        try:
            importlib.import_module(module)
        except BaseException as exc:  # noqa: BLE001 -- any failure to import is the answer
            print(f"SMOKE-FAILED importing {module}: {_first_line(exc)}", flush=True)
            return 3
    if wanted.get("model"):
        from serving.mlflow_model import MlflowScorer, find_mlmodel_folder

        try:
            MlflowScorer(find_mlmodel_folder(Path(wanted["model"]))).load()
        except BaseException as exc:  # noqa: BLE001
            print(f"SMOKE-FAILED loading the model: {_first_line(exc)}", flush=True)
            return 3
    print("SMOKE-OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
