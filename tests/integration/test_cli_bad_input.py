"""Bad input at the command line, as a sweep of every command found it: one line naming the
problem, a non-zero exit, no traceback, no secret — where each of these printed a traceback,
exited 0 or echoed a password."""

from __future__ import annotations

import json

import pytest

from tests.integration.cli import assert_one_line_error, run_cli


@pytest.mark.parametrize("args, needle", [
    (["audit", "verify-export", "{tmp}"], "not a file"),                      # a directory: IsADirectoryError
    (["audit", "verify-export", "{file}", "--key", "notbase64"], "not a host public key"),   # binascii.Error
    (["audit", "export", "--period", "2026-11", "--out", "{tmp}/no/such/dir/x.jsonl"], "No such file or directory"),
    (["logs", "search", "--since", "999999999d"], "before the year 1"),       # OverflowError
    (["logs", "analyze", "--since", "999999999d"], "before the year 1"),
    (["restore", "latest", "--target-dir", ""], "--target-dir is empty"),   # taken as the current directory
    (["audit", "export", "--period", "2026-11", "--out="], "--out is empty"),
])
def test_one_line_not_a_traceback(tmp_path, ops_env, args, needle):
    (tmp_path / "f.jsonl").write_text("{}\n")
    args = [a.format(tmp=tmp_path, file=tmp_path / "f.jsonl") for a in args]
    assert_one_line_error(run_cli(*args, env=ops_env), needle)


@pytest.mark.parametrize("args, needle", [
    (["backup", "--kind", "weekly"], "--kind 'weekly'"),
    (["drill", "--mode", "nope"], "--mode 'nope'"),
    (["drill", "--scratch", "configured"], "needs drill_scratch_dsn"),   # was a failed drill: "corruption"
    (["drill", "--mode", "physical", "--to-lsn", "zz"], "--to-lsn"),
    (["restore", "latest", "--target-dir", "{tmp}/r", "--to-time", "garbage"], "--to-time"),
    (["restore", "latest", "--target-dir", "{tmp}/r", "--to-lsn", "zz"], "--to-lsn"),
    (["restore", "latest", "--target-dir", "{tmp}/r", "--to-lsn", "0/1", "--to-name", "x"], "at most one of"),
    (["restore", "latest", "--into", "postgresql://u@h/db", "--target-dir", "{tmp}/r"], "exactly one of"),
    (["archive", "monthly", "--physical", "maybe"], "--physical 'maybe'"),
])
def test_a_bad_option_value_is_a_usage_error(tmp_path, ops_env, keypair, args, needle):
    """Each wrong option value: one line and exit 2, as every other usage error (they exited 1,
    as a failed operation does); nothing started, nothing written."""
    pub, key = keypair
    env = {**ops_env, "BVH_OPS_RECIPIENTS": str(pub), "BVH_OPS_IDENTITY": str(key),
           "BVH_OPS_DATABASE_URL": "postgresql://u@127.0.0.1:1/db"}
    proc = run_cli(*[a.format(tmp=tmp_path) for a in args], env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, option", [
    (["audit", "show", "--limit", "99999999999999999999"], "--limit"),        # a bigint error's traceback
    (["logs", "search", "--since", "1m", "--limit", "99999999999999999999"], "--limit"),
    (["standby", "create", "--target-dir", "{tmp}/sb", "--port", "70000"], "--port"),  # exit 0, unstartable
    (["restore", "latest", "--target-dir", "{tmp}/r", "--port", "0"], "--port"),
    (["dashboard", "--port", "70000"], "--port"),                             # uvicorn's traceback
])
def test_out_of_range_numbers_are_usage_errors(tmp_path, ops_env, args, option):
    proc = run_cli(*[a.format(tmp=tmp_path) for a in args], env=ops_env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"Invalid value for '{option}'" in proc.stderr
    assert not (tmp_path / "sb").exists()


def test_the_dashboard_refuses_a_port_in_use_before_saying_it_serves(tmp_path, ops_env):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = run_cli("dashboard", "--port", str(busy.getsockname()[1]), env=ops_env, timeout=60)
    assert "dashboard: http" not in proc.stdout
    assert_one_line_error(proc, "cannot listen on 127.0.0.1", "choose another --port")


def test_config_show_masks_credentials_in_any_url(tmp_path):
    config = tmp_path / "bvh-ops.toml"
    config.write_text('[alerting]\nsms_gateway_url = "https://AC1:s3cr3tPW@sms.example/send?to=1&api_key=K3Y"\n'
                      'sms_account_sid = "AC1"\nsms_auth_token = "T0K3N"\nsms_from = "+15550100"\n'
                      'sms_to = ["+15550101"]\n')
    proc = run_cli("config", "show", env={"BVH_OPS_CONFIG": str(config),
                                                    "BVH_OPS_STATE_DIR": str(tmp_path / "state")})
    assert proc.returncode == 0, proc.stderr
    assert not any(secret in proc.stdout for secret in ("s3cr3tPW", "K3Y", "T0K3N"))
    assert json.loads(proc.stdout)["alerting"]["sms_gateway_url"] == "https://AC1:***@sms.example/send?to=1&api_key=***"


@pytest.fixture
def ops_env(tmp_path, fresh_db):
    return {"BVH_OPS_OPS_DATABASE_URL": fresh_db("_ops"), "BVH_OPS_STATE_DIR": str(tmp_path / "state"),
            "BVH_OPS_REPOSITORY": f"file://{tmp_path / 'repo'}"}


def test_a_mistyped_backup_id_is_not_found_not_corruption(pg, fresh_db, env_settings, repo_dir):
    """`verify nosuchid` said MISSING, exit 8 (integrity), and `drill --backup nosuchid` ran a
    drill that failed its select stage: both told alerting "data corruption detected"."""
    from bvh_ops.config import load_settings
    from bvh_ops.logical.backup import run_logical_backup

    env = env_settings(fresh_db("_src"), f"file://{repo_dir}")
    run_logical_backup(load_settings())
    for args in (["verify", "nosuchid"], ["drill", "--backup", "nosuchid", "--json"]):
        proc = run_cli(*args, env=env)
        assert proc.returncode == 10, (args, proc.stdout, proc.stderr)
        assert_one_line_error(proc, "no backup nosuchid", "bvh-ops backups list")
    # under --json the failure is a document too (it was nothing at all on stdout)
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 10 and "no backup nosuchid" in doc["error"]
    assert run_cli("verify", "latest", "--no-wal", env=env).returncode == 0  # a real one still verifies


def test_a_config_path_that_is_a_directory_is_refused(tmp_path):
    """It was read as no settings at all: `config show` printed the defaults, exit 0, and a backup
    then blamed a missing database_url "in bvh-ops.toml"."""
    assert_one_line_error(run_cli("config", "show", env={"BVH_OPS_CONFIG": str(tmp_path)}), "is not a file")


def test_backups_list_of_a_repository_that_is_not_there_creates_nothing(tmp_path):
    """A mistyped repository path: `backups list` made the whole tree and said "no backups yet",
    exit 0; a regular file as the repository said the same."""
    missing = tmp_path / "nonexist" / "deeper"
    env = {"BVH_OPS_REPOSITORY": f"file://{missing}", "BVH_OPS_STATE_DIR": str(tmp_path / "state")}
    assert_one_line_error(run_cli("backups", "list", env=env), f"no repository at {missing}")
    assert not (tmp_path / "nonexist").exists()
    afile = tmp_path / "afile"
    afile.write_text("")
    env["BVH_OPS_REPOSITORY"] = f"file://{afile}"
    for args in (["backups", "list"], ["verify", "latest"]):
        assert_one_line_error(run_cli(*args, env=env), "is not a directory")


def test_releasing_a_hold_that_is_not_there_is_an_error(tmp_path, ops_env):
    """It printed "no active hold N" on standard output, as if it were a result."""
    proc = run_cli("logs", "release", "999999", env=ops_env)
    assert proc.returncode == 10 and proc.stdout == ""
    assert_one_line_error(proc, "no active hold 999999", "bvh-ops logs holds")


def test_a_deep_verify_with_the_wrong_key_is_a_key_error_not_corruption(pg, fresh_db, env_settings, repo_dir,
                                                                         tmp_path):
    """`verify --deep` with an identity the backup was not sealed to reported every object
    damaged (exit 8) and told alerting "data corruption detected": it is the operator's key —
    one line naming the fix, exit 7 (as restore says it), and the right key still verifies."""
    from bvh_ops.config import load_settings
    from bvh_ops.keys import write_keypair
    from bvh_ops.logical.backup import run_logical_backup

    env = env_settings(fresh_db("_src"), f"file://{repo_dir}")
    run_logical_backup(load_settings())
    _, other = write_keypair(tmp_path / "other")
    proc = run_cli("verify", "latest", "--deep", "--no-wal", env={**env, "BVH_OPS_IDENTITY": str(other)})
    assert proc.returncode == 7, (proc.stdout, proc.stderr)
    assert_one_line_error(proc, "not one backup", "set BVH_OPS_IDENTITY to the right key")
    assert run_cli("verify", "latest", "--deep", "--no-wal", env=env).returncode == 0
    # a newer backup sealed to the other key: `--all` with only that key was a critical alert for
    # the older one ("UNREADABLE"); it is the key, for every backup checked
    pub_other = other.with_name("recipient.pub")
    run_logical_backup(load_settings().model_copy(update={"recipients": [pub_other]}))
    proc = run_cli("verify", "--all", "--deep", "--no-wal", "--json", env={**env, "BVH_OPS_IDENTITY": str(other)})
    assert proc.returncode == 7, (proc.stdout, proc.stderr)  # the key, not damage; the newer one still verified
    doc = json.loads(proc.stdout)
    assert len(doc["not_decrypted"]) == 1 and all(r["status"] == "OK" for r in doc["results"])
    assert any("decrypted" in r["detail"] for r in doc["results"] if r["backup_id"] not in doc["not_decrypted"])
    assert "not decrypted" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["verify"], ["retention"], ["files", "list"], ["backups", "list"]])
def test_a_missing_repository_is_said_not_created_and_called_empty(tmp_path, ops_env, keypair, args):
    """Commands that read a repository created a missing file:// one and reported it empty ('0
    kept, 0 to delete', nothing listed): a mistyped path looked like a repository with no backups."""
    pub, key = keypair
    missing = tmp_path / "no-such-repo"
    env = {**ops_env, "BVH_OPS_REPOSITORY": f"file://{missing}", "BVH_OPS_RECIPIENTS": str(pub),
           "BVH_OPS_IDENTITY": str(key)}
    if args[0] == "files":
        cfg = tmp_path / "bvh-ops.toml"
        cfg.write_text(f'[[file_sets]]\nname = "app"\nclass = "application"\npaths = ["{tmp_path}"]\n')
        env["BVH_OPS_CONFIG"] = str(cfg)
    proc = run_cli(*args, env=env)
    assert proc.returncode == 10, (proc.stdout, proc.stderr)
    assert_one_line_error(proc, f"no repository at {missing}")
    assert not missing.exists()


def test_replicate_from_a_primary_that_is_not_there_says_so(tmp_path, ops_env):
    """It printed '0 unit(s) … now in step (lag 0 objects)' and `replica status` said in step."""
    env = {**ops_env, "BVH_OPS_REPOSITORY": f"file://{tmp_path / 'typo'}",
           "BVH_OPS_REPLICA_REPOSITORY": f"file://{tmp_path / 'replica'}"}
    proc = run_cli("replicate", env=env)
    assert proc.returncode == 10, (proc.stdout, proc.stderr)
    assert_one_line_error(proc, f"no repository at {tmp_path / 'typo'}")
    assert not (tmp_path / "typo").exists()
