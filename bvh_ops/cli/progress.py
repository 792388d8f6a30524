"""The live progress display of long commands (backup, restore, verify --deep, drill): bytes
done, rate, elapsed and, where the size is known, a bar and the time left. Drawn with rich on
stderr, only when stdout and stderr are both terminals and --json was not asked for."""

from __future__ import annotations

import re
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

    with bar, progress.listening(show), _retries_shown(bar.console):
        yield


_RETRY = re.compile(r"exception: (\w+)\((['\"])(.*)\2\) - Retry (\d+)/(\d+) will start ([\d.]+) second", re.DOTALL)


@contextmanager
def _retries_shown(console) -> Iterator[None]:
    """A task that failed and will be retried says so on the terminal, one line each: a backup
    against a server that is down was silent through all its retries (2 min 40 s by default),
    then printed its one error line. Prefect's own retry notice (INFO on ``prefect.task_runs``)
    is taken and shortened; nothing else of Prefect's logging changes."""
    import logging

    class Notice(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                text = record.getMessage()
            except Exception:  # noqa: BLE001 - a notice is never worth a failure
                return
            if " - Retry " not in text or "will start" not in text:
                return
            m = _RETRY.search(text)
            wait = float(m[6]) if m else 0.0
            line = (f"retry {m[4]}/{m[5]} in {wait:.1f} s: {m[3]}" if m else
                    "retrying: " + " ".join(text.split())[:200])
            console.print(line[:300], markup=False, highlight=False)

    logger = logging.getLogger("prefect.task_runs")
    handler, level = Notice(logging.INFO), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
