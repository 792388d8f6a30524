"""Prefect flows: one per procedure; they compose tasks and do no I/O of their own.

Importing the package makes two changes to Prefect's flow engine that every flow run of ours
pays for otherwise (docs/BENCHMARKS.md, goal 4): no join of the heartbeat thread when a run ends,
and no FastAPI import to record parameters of JSON's own types."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


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


_JSON_SCALARS = (str, int, float, bool, type(None))


def _plain_json(value: Any) -> bool:
    """Exactly JSON's own types (no subclasses: an enum is left to FastAPI's encoder)."""
    if type(value) in _JSON_SCALARS:
        return True
    if type(value) is list:
        return all(_plain_json(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain_json(v) for k, v in value.items())
    return False


def _parameters_without_fastapi() -> None:
    """Prefect serialises a flow run's parameters with FastAPI's ``jsonable_encoder``, imported
    on the first flow run of a process: 0.12-0.17 s of CPU in every CLI command that runs a flow,
    before the flow starts. For parameters of JSON's own types (``kind="full"``,
    ``retention_dry_run=False``: what our flows take) that encoder returns them unchanged, so
    they are passed as they are; anything else still goes through Prefect's own method."""
    from prefect.flows import Flow

    original = Flow.serialize_parameters
    if getattr(original, "bvh_ops_plain", False):
        return

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        if not (self.ismethod or self.isclassmethod) and all(_plain_json(v) for v in parameters.values()):
            return dict(parameters)
        return original(self, parameters)

    serialize_parameters.bvh_ops_plain = True  # type: ignore[attr-defined]
    Flow.serialize_parameters = serialize_parameters


_heartbeats_without_join()
_parameters_without_fastapi()
