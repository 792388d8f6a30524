"""The CLI as an operator meets it: config show hides secrets, bad configuration is one line
naming the field, keygen, backups list and restore contracts."""

from __future__ import annotations

import json
import stat

import pytest

from tests.integration.cli import assert_one_line_error, run_cli


def test_config_show_redacts_the_password(tmp_path):
    cfg = tmp_path / "bvh-ops.toml"
    cfg.write_text('database_url = "postgresql://ops:Sup3r-Secret-pw@db:5432/lottery"\n'
                   'repository = "file:///srv/bvh"\n')
    proc = run_cli("config", "show", env={"BVH_OPS_CONFIG": str(cfg)})
    assert proc.returncode == 0, proc.stderr
    assert "Sup3r-Secret-pw" not in proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["database_url"] == "postgresql://ops:***@db:5432/lottery"
    assert doc["repository"] == "file:///srv/bvh"


def test_unknown_config_field_fails_at_start_naming_it(tmp_path):
    cfg = tmp_path / "bvh-ops.toml"
    cfg.write_text('repository = "file:///srv/bvh"\ncompresion_level = 3\n')
    assert_one_line_error(run_cli("backups", "list", env={"BVH_OPS_CONFIG": str(cfg)}), "compresion_level")


def test_malformed_url_fails_naming_the_field():
    proc = run_cli("backups", "list", env={"BVH_OPS_REPOSITORY": "s3:/no-bucket"})
    assert_one_line_error(proc, "repository")
    assert proc.returncode == 2


def test_keygen_cli(tmp_path):
    proc = run_cli("keygen", str(tmp_path / "k"))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((tmp_path / "k" / "identity.key").stat().st_mode) == 0o600
    assert "PRIVATE" not in proc.stdout
    again = run_cli("keygen", str(tmp_path / "k"))
    assert_one_line_error(again, "already exists")


def test_backups_list_and_restore_json(sample_db, fresh_db, repo_dir, make_settings):
    from bvh_ops.logical.backup import run_logical_backup
    from tests.integration.test_tamper import cli_env

    settings = make_settings(sample_db, f"file://{repo_dir}")
    m = run_logical_backup(settings).manifest
    env = cli_env(settings)
    listed = json.loads(run_cli("backups", "list", "--json", env=env).stdout)
    assert [(b["backup_id"], b["kind"], b["status"]) for b in listed] == [(m.backup_id, "logical", "complete")]
    assert listed[0]["finished_at"] == m.finished_at
    target = fresh_db()
    proc = run_cli("restore", "latest", "--into", target, "--table", "public.wallets", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] and list(doc["tables"]) == ["public.wallets"]


def test_backup_without_configuration_fails_before_starting_anything(tmp_path):
    proc = run_cli("backup", env={"BVH_OPS_STATE_DIR": str(tmp_path)})
    assert_one_line_error(proc, "database_url is not set", "BVH_OPS_DATABASE_URL")
    proc = run_cli("backup", env={"BVH_OPS_STATE_DIR": str(tmp_path), "BVH_OPS_DATABASE_URL": "postgresql://u@h/db",
                                  "BVH_OPS_REPOSITORY": "file:///tmp/x"})
    assert_one_line_error(proc, "recipients is not set", "keygen")


SECRET = "Sup3r-Secret-pw"


@pytest.mark.parametrize("dsn, needle", [
    (f"postgresql://postgres:{SECRET}@[::1]x:55432/db", "not a valid connection URI"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:55432/db?foo=bar", "unknown connection parameter"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:notaport/db", "port 'notaport'"),
])
def test_malformed_dsn_is_one_line_without_the_password(tmp_path, dsn, needle):
    cfg = tmp_path / "bvh-ops.toml"
    cfg.write_text(f'database_url = "{dsn}"\nrepository = "file:///srv/bvh"\n')
    proc = run_cli("config", "show", env={"BVH_OPS_CONFIG": str(cfg)})
    assert_one_line_error(proc, "'database_url'", needle)
    assert proc.returncode == 2
    assert SECRET not in proc.stdout + proc.stderr


def test_restore_into_a_malformed_dsn_is_one_line_without_the_password(tmp_path):
    proc = run_cli("restore", "latest", "--into", f"postgresql://postgres:{SECRET}@[::1]x:5432/db",
                   env={"BVH_OPS_REPOSITORY": f"file://{tmp_path}"})
    assert_one_line_error(proc, "--into", "not a valid connection URI")
    assert proc.returncode == 2 and SECRET not in proc.stderr


def test_bad_trusted_host_key_is_one_line_naming_the_field():
    proc = run_cli("config", "show", env={"BVH_OPS_TRUSTED_HOST_KEYS": "bm90IGEga2V5"})
    assert_one_line_error(proc, "'trusted_host_keys'", "Ed25519")
    assert proc.returncode == 2


def test_unwritable_prefect_home_fails_up_front_saying_what_to_set(tmp_path, keypair):
    # Root can write anywhere, but nobody can create a directory under a regular file.
    (tmp_path / "file").write_text("")
    env = {"HOME": str(tmp_path / "file" / "home"), "BVH_OPS_STATE_DIR": str(tmp_path / "state"),
           "BVH_OPS_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
           "BVH_OPS_REPOSITORY": f"file://{tmp_path}/repo", "BVH_OPS_RECIPIENTS": str(keypair[0]),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "10"}
    proc = run_cli("backup", env=env, unset=("PREFECT_HOME", "PREFECT_API_URL"), timeout=60)
    assert_one_line_error(proc, "PREFECT_HOME", str(tmp_path / "file" / "home" / ".prefect"))
    assert proc.returncode == 2


def test_an_unreachable_prefect_api_is_one_line_saying_what_to_do(tmp_path, keypair):
    """PREFECT_API_URL names a server that is not there: one line naming the URL and the fix, the
    transient exit code, and no backup started (nothing in the repository)."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"BVH_OPS_STATE_DIR": str(tmp_path / "state"), "PREFECT_HOME": str(tmp_path / "prefect"),
           "BVH_OPS_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
           "BVH_OPS_REPOSITORY": f"file://{tmp_path}/repo", "BVH_OPS_RECIPIENTS": str(keypair[0]),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    proc = run_cli("backup", env=env, timeout=120)
    assert_one_line_error(proc, f"http://127.0.0.1:{port}/api", "prefect server start", "unset PREFECT_API_URL")
    assert proc.returncode == 4
    assert not list((tmp_path / "repo").rglob("*.json"))  # no backup, no WAL entry, no marker


def test_keygen_refuses_a_directory_holding_only_recipient_pub(tmp_path):
    (tmp_path / "recipient.pub").write_text("the key backups are sealed to\n")
    proc = run_cli("keygen", str(tmp_path))
    assert_one_line_error(proc, "recipient.pub already exists", "never overwritten")
    assert proc.returncode == 2
    assert (tmp_path / "recipient.pub").read_text() == "the key backups are sealed to\n"
    assert not (tmp_path / "identity.key").exists()


def test_keygen_refuses_a_dangling_identity_symlink(tmp_path):
    (tmp_path / "identity.key").symlink_to(tmp_path / "nowhere")
    proc = run_cli("keygen", str(tmp_path))
    assert_one_line_error(proc, "identity.key already exists (a symbolic link)")
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "recipient.pub").exists()


@pytest.mark.parametrize("args, needle", [
    (("restore", "latest", "--jobs", "0"), "--jobs"),
    (("backup", "--no-such-option"), "No such option"),
    (("no-such-command",), "No such command"),
])
def test_usage_errors_exit_2_without_a_traceback(args, needle):
    """typer >= 0.29 raises its own copy of click's exceptions: still a usage message, exit 2."""
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and needle in proc.stderr
