"""What `bvh-ops demo --keep-running` leaves running (bvh_ops.demo.background), in isolation: the
sample platform and the dashboard started detached on free ports answer over HTTP, are recorded
by pid files, survive nothing but their own process, and `stop` ends them and removes the files.
(The platform's database is unreachable here: it is up and says so, which is all this needs.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from bvh_ops.demo import background
from bvh_ops.demo.background import run_dir, start, start_dashboard, start_platform, stop, tracked

NO_DB = "postgresql://nobody:pw-not-shown-7@127.0.0.1:1/nowhere"


@pytest.fixture
def state(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("BVH_OPS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("BVH_OPS_STATE_DIR", str(tmp_path / "state"))
    state = tmp_path / "state"
    yield state
    stop(state)


def _gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if background._start_time(pid) is None or background._zombie(pid):
            return True
        time.sleep(0.05)
    return False


def test_platform_and_dashboard_start_answer_and_stop(state):
    platform = start_platform(state, NO_DB)
    assert httpx.get(platform.url + "/api/health", timeout=30).status_code in (200, 503)
    dash = start_dashboard(state, None, platform.url, interval=5)
    assert dash.url.startswith("http://127.0.0.1:")

    def page_ready():
        r = httpx.get(dash.url, timeout=30)
        return r.status_code == 200 and "api-health" in r.text

    deadline = time.monotonic() + 90
    while not page_ready():
        assert time.monotonic() < deadline, "the dashboard never showed a cycle probing the platform"
        time.sleep(0.5)
    page = httpx.get(dash.url, timeout=30).text
    assert ">p95 " in page and "id='drill-trend'" in page and "error rate (the platform" in page
    assert NO_DB not in page and "pw-not-shown-7" not in page

    names = {b.name: b.pid for b in tracked(state)}
    assert names == {"platform": platform.pid, "dashboard": dash.pid}
    recorded = json.loads((run_dir(state) / "platform.pid").read_text())
    assert recorded["pid"] == platform.pid and "pw-not-shown-7" not in json.dumps(recorded)
    assert os.getsid(platform.pid) == platform.pid, "its own session: it outlives whoever started it"

    assert sorted(stop(state)) == ["dashboard", "platform"]
    assert _gone(platform.pid) and _gone(dash.pid)
    assert not list(run_dir(state).glob("*.pid")) and tracked(state) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(dash.url, timeout=5)
    assert stop(state) == []  # idempotent


def test_a_stale_pid_file_never_signals_another_process(state):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir(state).mkdir(parents=True)
        # The pid of a live process, but a start time that is not its own: a reused pid.
        (run_dir(state) / "platform.pid").write_text(json.dumps({"pid": other.pid, "started": "1"}))
        assert tracked(state) == [] and stop(state) == []
        assert other.poll() is None, "a process that is not ours was signalled"
        assert not (run_dir(state) / "platform.pid").exists()
    finally:
        other.send_signal(signal.SIGTERM)
        other.wait(30)


def test_start_replaces_a_running_process_of_the_same_name(state):
    first = start(state, "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    second = start(state, "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    assert _gone(first.pid) and [b.pid for b in tracked(state)] == [second.pid]
    assert stop(state, "sleeper") == ["sleeper"] and _gone(second.pid)
