"""JSON log lines, one per line, in the runbook's categories (section 2): security, application,
performance, audit, debug. Each line: ``timestamp`` (UTC, ISO 8601), ``level``, ``category``,
``event``, ``service`` and the event's own fields. Secrets never reach the file: fields whose
name says password, token, secret or authorization are refused by the writer itself."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

CATEGORIES = ("security", "application", "performance", "audit", "debug")
LEVELS = ("debug", "info", "warning", "error")
_SECRET_WORDS = ("password", "token", "secret", "authorization", "dsn")


class JsonLog:
    """Appends JSON lines to ``path`` (created with its directory); thread-safe."""

    def __init__(self, path: str | Path, *, service: str = "lottery-api", debug: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.service = service
        self.debug_enabled = debug
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # line-buffered  # noqa: SIM115

    def write(self, category: str, event: str, *, level: str = "info", **fields: object) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown log category {category!r}")
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}")
        if category == "debug" and not self.debug_enabled:
            return
        leaked = [k for k in fields if any(w in k.lower() for w in _SECRET_WORDS)]
        if leaked:
            raise ValueError(f"refusing to log secret-looking fields {leaked}")
        line = {"timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": level, "category": category, "event": event, "service": self.service, **fields}
        text = json.dumps(line, default=str, separators=(",", ":"))
        with self._lock:
            self._file.write(text + "\n")

    def reopen(self) -> None:
        """Open ``path`` again (a new file once the old one was renamed away by a log rotation)
        and close the old one: what the reopen signal asks for (``reopen_on``). If the open fails
        the old file stays in use."""
        new = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        with self._lock:
            old, self._file = self._file, new
        old.close()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def reopen_on(signum: int, logs: list[JsonLog]) -> None:
    """Reopen ``logs`` when the process gets ``signum`` (main thread only). The handler takes no
    lock (a signal arriving inside a handler that holds one — threading.Event.set's — waits on
    itself for ever): it writes a byte to a pipe a reopening thread reads (a self-pipe), and a
    burst of signals is one reopen or a few."""
    import os
    import signal

    r, w = os.pipe()
    os.set_blocking(w, False)

    def reopener() -> None:
        while os.read(r, 4096):
            for log in logs:
                try:
                    log.reopen()
                except OSError:
                    pass  # the old file stays in use; the rotator sees no new file and says so

    def handler(_signum, _frame) -> None:
        try:
            os.write(w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: a reopen is already due

    threading.Thread(target=reopener, name="log-reopen", daemon=True).start()
    signal.signal(signum, handler)


def read_lines(path: str | Path) -> list[dict]:
    """Every JSON line of a platform log (for tests and the demo)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
