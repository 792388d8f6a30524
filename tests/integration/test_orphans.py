"""`kill -9` of the CLI mid-backup: its children (pg_dump, the ephemeral Prefect API server) die
with it, and the next run marks the orphaned flow run CRASHED naming the dead process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import psycopg
import pytest

from tests.waiting import wait_until

# The child environment: our own PREFECT_HOME (so the ephemeral API's database outlives one CLI
# run, as in production), no API URL (so the CLI starts the ephemeral server itself).
_PREFECT_UNSET = ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE")


@pytest.fixture(scope="module")
def orphans_db(pg):
    """~60 MB of barely compressible text: at zstd level 19 pg_dump stays alive for seconds."""
    from bvh_ops.pg.catalog import create_database

    create_database(pg.dsn(), "bigdb_orphans")
    with psycopg.connect(pg.dsn("bigdb_orphans"), autocommit=True) as conn:
        conn.execute("CREATE TABLE blobs AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v "
                     "FROM generate_series(1, 800000) g")
    return pg.dsn("bigdb_orphans")


def _env(dsn, repo_dir, pub, tmp_path, level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_") and k not in _PREFECT_UNSET}
    env.update({"BVH_OPS_DATABASE_URL": dsn, "BVH_OPS_REPOSITORY": f"file://{repo_dir}",
                "BVH_OPS_RECIPIENTS": str(pub), "BVH_OPS_STATE_DIR": str(tmp_path / "state"),
                "BVH_OPS_COMPRESSION_LEVEL": level, "PREFECT_HOME": str(tmp_path / "prefect"),
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"})
    return env


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _while_running(cli: subprocess.Popen, condition, what: str):
    """Wait for ``condition`` (its value returned) while the CLI runs; fail at once if it exits."""

    def check():
        found = condition()
        if not found:
            assert cli.poll() is None, f"the CLI exited ({cli.returncode}) before {what}"
        return found

    return wait_until(check, what)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _named(children: list[psutil.Process], needle: str) -> psutil.Process | None:
    for child in children:
        try:
            if needle == child.name() or any(needle in part for part in child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def test_killed_cli_takes_its_children_along_and_the_next_run_crashes_the_orphan_run(
        orphans_db, repo_dir, keypair, tmp_path):
    pub, _ = keypair
    cli = subprocess.Popen([sys.executable, "-m", "bvh_ops.cli", "backup", "--json"],
                           env=_env(orphans_db, repo_dir, pub, tmp_path, "19"), start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched: list[psutil.Process] = []
    try:
        dump = _while_running(cli, lambda: _named(_children(cli.pid), "pg_dump"), "pg_dump to start")
        server = _named(_children(cli.pid), "uvicorn")
        assert server is not None, [c.cmdline() for c in _children(cli.pid)]
        watched = [dump, server]
        # Freeze pg_dump as if it were waiting on the server: without a parent-death signal it
        # would never notice (a running one might die of SIGPIPE on its next write).
        dump.send_signal(signal.SIGSTOP)
        os.kill(cli.pid, signal.SIGKILL)  # the CLI only, not its process group
        cli.wait(timeout=10)
        wait_until(lambda: all(_gone(p) for p in watched), "pg_dump and the Prefect server to die with the CLI")
    finally:
        for p in watched:  # never leave our children behind, whatever happened
            try:
                p.kill()
            except psutil.Error:
                pass
        if cli.poll() is None:
            cli.kill()
            cli.wait()

    nxt = subprocess.run([sys.executable, "-m", "bvh_ops.cli", "backup", "--json"],
                         env=_env(orphans_db, repo_dir, pub, tmp_path, "1"), capture_output=True, text=True,
                         timeout=300)
    assert nxt.returncode == 0, nxt.stderr
    result = json.loads(nxt.stdout)
    assert len(result["orphaned_runs"]) == 1 and str(cli.pid) in result["orphaned_runs"][0]["message"]
    assert len(result["incomplete_removed"]) == 1  # the killed run's half-written backup

    # What the Prefect API (the same PREFECT_HOME) says about both runs.
    code = textwrap.dedent("""
        import json
        from prefect import get_client
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs()
            print(json.dumps([{"id": str(r.id), "state": r.state_type.value, "message": r.state.message,
                               "labels": dict(r.labels)} for r in runs]))
    """)
    env = _env(orphans_db, repo_dir, pub, tmp_path, "1")
    query = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert query.returncode == 0, query.stderr
    runs = json.loads(query.stdout.strip().splitlines()[-1])
    states = sorted(r["state"] for r in runs)
    assert states == ["COMPLETED", "CRASHED"], runs
    crashed = next(r for r in runs if r["state"] == "CRASHED")
    assert crashed["id"] == result["orphaned_runs"][0]["id"]
    assert f"pid {cli.pid}" in crashed["message"] and "gone" in crashed["message"], crashed
