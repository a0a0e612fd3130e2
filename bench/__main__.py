"""`python -m bench [NAME...]`: run the `main()` of each benchmark module in this folder (all by default)."""

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path


def available() -> list[str]:
    """Every module in bench/ that is a benchmark, i.e. defines main()."""
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_")]
    return sorted(
        name for name in names if callable(getattr(importlib.import_module(f"bench.{name}"), "main", None))
    )


def main(argv: list[str] | None = None) -> int:
    found = available()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {found})"
    )
    names = parser.parse_args(argv).names or found
    unknown = sorted(set(names) - set(found))
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}; there are: {', '.join(found) or 'none yet'}")
    if not names:
        print("bench: no benchmarks yet (a benchmark is a module in bench/ with a main() function)")
        return 0

    failed = []
    for name in names:
        print(f"bench: running {name}", flush=True)
        started = time.perf_counter()
        # A benchmark's main() may return an exit code; None means success.
        code = importlib.import_module(f"bench.{name}").main()
        elapsed = time.perf_counter() - started
        print(f"bench: {name} {'ok' if not code else f'failed ({code})'} in {elapsed:.1f}s", flush=True)
        if code:
            failed.append(name)
    print(f"bench: ran {', '.join(names)}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
