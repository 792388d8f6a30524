"""Prefect flows: one per procedure; they compose tasks and do no I/O of their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def _heartbeats_without_join() -> None:
    """A flow run's heartbeat thread (every 180 s by default since PrefectHQ/prefect#21058, for
    the server's zombie-run detection) sleeps in 1 s steps, and the sync engine joins it when the
    run ends: every flow run waited 0-1 s (0.5 s on average) after its last task for nothing. The
    heartbeats are kept; only that join goes, as Prefect's async engine already does
    (``join_on_exit=False``): the thread has been told to stop, emits nothing more and is a
    daemon. Where a Prefect version lacks the hook, nothing changes."""
    from prefect import flow_engine

    original = getattr(flow_engine, "_send_heartbeats", None)
    if original is None or getattr(original, "bvh_ops_no_join", False):
        return

    @contextmanager
    def send_heartbeats(engine, join_on_exit: bool = True) -> Iterator[None]:  # noqa: ARG001 - never joined
        with original(engine, join_on_exit=False):
            yield

    send_heartbeats.bvh_ops_no_join = True  # type: ignore[attr-defined]
    flow_engine._send_heartbeats = send_heartbeats


_heartbeats_without_join()
