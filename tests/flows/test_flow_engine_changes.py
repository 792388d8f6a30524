"""flows/'s two changes to Prefect's flow engine keep what a user sees: runs still emit their
heartbeats (the server's zombie-run detection) though the thread is no longer joined at the end,
and a run's parameters are recorded as before though plain ones skip FastAPI's encoder."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from enum import StrEnum

import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_flow_run_still_emits_heartbeats_and_its_heartbeat_thread_stops_by_itself(monkeypatch):
    from prefect import flow, flow_engine

    import flows  # noqa: F401 - applies the change to Prefect's flow engine

    assert getattr(flow_engine._send_heartbeats, "bvh_ops_no_join", False)
    beats: list[tuple[str, threading.Thread]] = []
    beat = threading.Event()
    emit = flow_engine.FlowRunEngine._emit_flow_run_heartbeat

    def recording_emit(self, *args, **kwargs):
        beats.append((str(self.flow_run.id), threading.current_thread()))
        beat.set()
        return emit(self, *args, **kwargs)

    monkeypatch.setattr(flow_engine.FlowRunEngine, "_emit_flow_run_heartbeat", recording_emit)

    @flow
    def short_flow() -> None:
        assert beat.wait(60), "no heartbeat while the flow ran"

    state = short_flow(return_state=True)
    assert state.is_completed()
    assert [run for run, _ in beats] == [str(state.state_details.flow_run_id)]  # the first, at the start
    heartbeat_thread = beats[0][1]
    assert heartbeat_thread is not threading.current_thread()
    heartbeat_thread.join(30)  # told to stop when the run ended, it leaves within its 1 s step
    assert not heartbeat_thread.is_alive()


class Mode(StrEnum):
    FULL = "full"


def test_a_flow_runs_parameters_are_recorded_as_prefect_records_them():
    from prefect import flow
    from prefect.client.orchestration import get_client

    import flows  # noqa: F401 - applies the change to Prefect's flow engine

    @flow
    def with_parameters(kind: str, dry_run: bool = False, limits: dict | None = None, tags: list | None = None,
                        when: datetime | None = None, mode: Mode | None = None) -> None:
        return None

    plain = with_parameters("full", limits={"keep": 3, "ratio": 0.5, "none": None}, tags=["a", 1],
                            return_state=True)
    other = with_parameters("full", when=datetime(2026, 11, 28, 23, 0, tzinfo=UTC), mode=Mode.FULL,
                            return_state=True)
    with get_client(sync_client=True) as client:
        recorded = [client.read_flow_run(s.state_details.flow_run_id).parameters for s in (plain, other)]
    assert recorded[0] == {"kind": "full", "dry_run": False, "limits": {"keep": 3, "ratio": 0.5, "none": None},
                           "tags": ["a", 1], "when": None, "mode": None}
    # Not JSON's own types: Prefect's encoder as before (a datetime as ISO text, an enum as its value).
    assert recorded[1]["when"].startswith("2026-11-28T23:00:00")
    assert recorded[1]["mode"] == "full"
