"""Progress of long work (bytes done of a known or unknown total), reported by the domain code
to whoever listens: the CLI's live display on a terminal (bvh_ops.cli.progress), a Prefect
task's log line every few hundred MB (``LogEvery``). Listeners are process-wide, not per
thread: a flow run from the CLI runs its tasks on worker threads of the same process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, int, "int | None"], None]

_listeners: list[Listener] = []
_lock = threading.Lock()

LOG_STEP = 256 << 20


def report(what: str, done: int, total: int | None = None) -> None:
    """``what`` (e.g. "dump", "restore", "verify dump.pgcustom") has ``done`` bytes of ``total``
    (None: unknown; an estimate may be exceeded)."""
    for listener in tuple(_listeners):
        listener(what, done, total)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


class LogEvery:
    """A listener writing one line per ``step`` bytes of each piece of work (and at its end
    where the total is known)."""

    def __init__(self, log: Callable[[str], None], step: int = LOG_STEP) -> None:
        self._log = log
        self._step = step
        self._last: dict[str, int] = {}

    def __call__(self, what: str, done: int, total: int | None) -> None:
        last = self._last.get(what, 0)
        finished = total is not None and done >= total > last
        if done - last < self._step and not finished:
            return
        self._last[what] = done
        of = f" of {total / 1e6:,.0f} MB ({min(100, 100 * done // max(total, 1))} %)" if total else ""
        self._log(f"{what}: {done / 1e6:,.0f} MB{of}")
