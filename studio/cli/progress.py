"""Progress for long transfers, on stderr so that `-o json` output on stdout stays clean."""

import contextlib
from collections.abc import Callable, Iterator

from studio.cli.output import size_text


@contextlib.contextmanager
def transfer(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`: a live bar in a terminal; elsewhere (CI logs, pipes) one line before and after."""
    # Imported here: rich costs a noticeable part of the start time, and --help does not need it.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
        done = [0]

        def count(n: int) -> None:
            done[0] += n

        console.print(f"{label}{f' ({size_text(total)})' if total else ''}...", highlight=False)
        yield count
        console.print(f"{label}: done, {size_text(done[0])}.", highlight=False)
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        yield advance


@contextlib.contextmanager
def job_progress(label: str) -> Iterator[Callable[[int, list[str]], None]]:
    """Yield `report(percent, lines)`: in a terminal a live bar with each line printed above it; elsewhere
    (CI logs, pipes) each line once, prefixed with the percentage reached, so a log reads top to bottom.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:

        def say(percent: int, lines: list[str]) -> None:
            for line in lines:
                # soft_wrap: a log keeps each event on one line, however long, for grep.
                console.print(f"[{percent:3d}%] {line}", highlight=False, markup=False, soft_wrap=True)

        console.print(f"{label}...", highlight=False, markup=False)
        yield say
        return
    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=100)

        def report(percent: int, lines: list[str]) -> None:
            for line in lines:
                progress.console.print(line, highlight=False, markup=False)
            progress.update(task, completed=percent)

        yield report
