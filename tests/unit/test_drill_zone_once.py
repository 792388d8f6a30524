"""The drill's checks ask the live source's time zone once, whichever of their threads asks
first: the PITR check and freshness asking together must not each ask the source (one could get
the restored copy's zone where the source failed it once)."""

from __future__ import annotations

import threading
import time

from tasks.drill_tasks import _once


def test_threads_asking_together_get_one_answer():
    asked = []

    def zone() -> str:
        asked.append(1)
        time.sleep(0.2)
        return "UTC" if len(asked) == 1 else "Europe/Vienna"

    once = _once(zone)
    got = []
    threads = [threading.Thread(target=lambda: got.append(once())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == ["UTC", "UTC"] and len(asked) == 1


def test_a_failure_is_asked_again():
    calls = []

    def zone() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("source unreachable")
        return "UTC"

    once = _once(zone)
    try:
        once()
    except OSError:
        pass
    assert once() == "UTC" and once() == "UTC" and len(calls) == 2
