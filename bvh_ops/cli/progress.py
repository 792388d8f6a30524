"""The live progress display of long commands (backup, restore, verify --deep, drill): bytes
done, rate, elapsed and, where the size is known, a bar and the time left. Drawn with rich on
stderr, only when stdout and stderr are both terminals and --json was not asked for."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from bvh_ops import progress


def wanted(as_json: bool) -> bool:
    return not as_json and sys.stdout.isatty() and sys.stderr.isatty()


@contextmanager
def live_progress(*, as_json: bool) -> Iterator[None]:
    if not wanted(as_json):
        yield
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                   console=Console(stderr=True), refresh_per_second=4)
    tasks: dict[str, object] = {}
    lock = threading.Lock()

    def show(what: str, done: int, total: int | None) -> None:
        with lock:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
        # An estimate (the backup's: the tables' size on disk) may be passed: never show > 100 %.
        bar.update(tasks[what], completed=done, total=max(total, done) if total else None)

    with bar, progress.listening(show):
        yield
