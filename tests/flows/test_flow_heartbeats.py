"""Flow runs keep Prefect's heartbeats (the server's zombie-run detection) with flows/'s change
that no longer joins the heartbeat thread when a run ends."""

from __future__ import annotations

import threading

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
