"""The security scan against real PostgreSQL 18 clusters: one configured insecurely on purpose
(every planted weakness found with its id and severity), the default hardened one (nothing high
or critical), a non-superuser scanner (privileged checks not checked, not passed), and drift
against a signed baseline (a GRANT, a new role, an ALTER SYSTEM and a changed hba line each
appear with before/after; a tampered baseline is refused)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import psycopg
import pytest

from bvh_ops.config import SecuritySettings
from bvh_ops.errors import IntegrityError
from bvh_ops.keys import load_or_create_host_key
from bvh_ops.pg.cluster import EmbeddedCluster
from bvh_ops.security import baseline as bl
from bvh_ops.security.checks.db import scan_database
from bvh_ops.security.checks.host import check_permissions
from bvh_ops.security.run import scan
from bvh_ops.storage import open_store


class InsecureCluster(EmbeddedCluster):
    """EmbeddedCluster without its hardening: the hba and conf written here stay as written."""

    def harden(self) -> None:
        pass


PLANTED_HBA = ("host all trusted_user 127.0.0.1/32 trust\n"
               "host all md5_user 0.0.0.0/0 md5\n")


@pytest.fixture(scope="module")
def insecure(tmp_path_factory):
    cluster = InsecureCluster(tmp_path_factory.mktemp("insecure") / "cluster")
    cluster.init()
    hba = cluster.data / "pg_hba.conf"
    hba.write_text(PLANTED_HBA + hba.read_text())  # first match wins: the planted lines come first
    cluster.start()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE scanner LOGIN PASSWORD 'scanner-pw'")  # scram, before md5 is the default
        conn.execute("SET password_encryption = 'md5'")
        conn.execute("CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret-123'")
        conn.execute("RESET password_encryption")
        conn.execute("ALTER SYSTEM SET password_encryption = 'md5'")
        loaded = conn.execute("SELECT pg_conf_load_time()").fetchone()[0]
        conn.execute("SELECT pg_reload_conf()")
        _wait_reloaded(cluster, loaded)
        conn.execute("CREATE ROLE trusted_user LOGIN")
        conn.execute("CREATE ROLE extra_admin SUPERUSER LOGIN PASSWORD 'x-admin-pw'")
        conn.execute("CREATE ROLE rls_skipper BYPASSRLS NOLOGIN")
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        conn.execute("CREATE TABLE public.players (id int, email text)")
        conn.execute("GRANT SELECT ON public.players TO PUBLIC")
        conn.execute("CREATE FUNCTION public.pay_out() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'")
        conn.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC")
    yield cluster
    cluster.destroy()


def _by_id(outcome):
    found: dict[str, list] = {}
    for f in outcome.findings:
        found.setdefault(f.id, []).append(f)
    return found


@pytest.fixture(scope="module")
def insecure_outcome(insecure):
    with psycopg.connect(insecure.dsn(), autocommit=True) as conn:
        # players.email is sensitive and md5_user an application role: PUBLIC's SELECT reaches it
        return scan_database(conn, SecuritySettings(sensitive_columns=["public.players.email"],
                                                    app_roles=["md5_user"]))


@pytest.mark.parametrize("check_id, obj, severity", [
    ("PG-AUTH-001", "pg_hba.conf line 1", "critical"),
    ("PG-AUTH-003", "pg_hba.conf line 2", "medium"),
    ("PG-AUTH-004", "pg_hba.conf line 2", "high"),
    ("PG-AUTH-006", "password_encryption", "high"),
    ("PG-AUTH-007", "md5_user", "high"),
    ("PG-ROLE-001", "extra_admin", "critical"),
    ("PG-ROLE-002", "trusted_user", "medium"),
    ("PG-ROLE-003", "rls_skipper", "high"),
    ("PG-PRIV-001", "schema public", "high"),
    ("PG-PRIV-002", "table public.players", "medium"),
    ("PG-PRIV-003", "function pay_out()", "high"),
    ("PG-PRIV-004", "default privileges postgres/public/tables", "medium"),
    ("PG-TLS-001", "ssl", "high"),
    ("PG-LOG-001", "log_connections", "medium"),
    ("PG-DATA-001", "md5_user on public.players.email", "high"),
])
def test_each_planted_weakness_is_found(insecure_outcome, check_id, obj, severity):
    found = {f.object: f for f in _by_id(insecure_outcome).get(check_id, [])}
    assert obj in found, f"{check_id}: {sorted(found)}"
    assert found[obj].severity == severity
    assert not insecure_outcome.not_checked


def test_evidence_names_the_object_and_never_a_hash(insecure_outcome):
    trust = _by_id(insecure_outcome)["PG-AUTH-001"][0]
    assert trust.evidence == "pg_hba.conf line 1: host all trusted_user 127.0.0.1/32 trust"
    text = json.dumps([f.evidence for f in insecure_outcome.findings])
    assert "md5" in text and not any(len(w) == 35 and w.startswith("md5") for w in text.replace('"', " ").split())
    assert "md5-secret-123" not in text and "SCRAM-SHA-256$" not in text


def test_tls_off_is_high_because_hba_admits_every_address(insecure_outcome):
    (tls,) = _by_id(insecure_outcome)["PG-TLS-001"]
    assert "pg_hba line 2 admits 0.0.0.0/0" in tls.evidence


def test_an_hba_line_postgres_cannot_load_is_found(insecure, tmp_path):
    hba = insecure.data / "pg_hba.conf"
    before = hba.read_text()
    try:
        hba.write_text(before + "host all all 10.0.0.0/33 scram-sha-256\n")  # not reloaded: the view reads the file
        with psycopg.connect(insecure.dsn(), autocommit=True) as conn:
            found = _by_id(scan_database(conn, SecuritySettings()))
        (bad,) = found["PG-AUTH-005"]
        assert bad.severity == "high" and "line" in bad.object and "10.0.0.0/33" in bad.evidence
    finally:
        hba.write_text(before)


def test_a_non_superuser_gets_not_checked_never_passed(insecure):
    dsn = f"postgresql://scanner:scanner-pw@127.0.0.1:{insecure.port}/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        outcome = scan_database(conn, SecuritySettings())
    skipped = {n.id: n.reason for n in outcome.not_checked}
    for check_id in ("PG-AUTH-001", "PG-AUTH-004", "PG-AUTH-007", "PG-ROLE-002"):
        assert check_id in skipped and "privilege" in skipped[check_id]
    ran = {f.id for f in outcome.findings}
    assert not ran & set(skipped)
    # what pg_roles and the namespaces show any role is still checked
    assert {"PG-ROLE-001", "PG-PRIV-001"} <= ran
    # ssl off without readable hba: assumed open, so high
    (tls,) = [f for f in outcome.findings if f.id == "PG-TLS-001"]
    assert tls.severity == "high" and "assumed open" in tls.evidence


def test_hardened_cluster_has_no_high_or_critical(pg, fresh_db):
    # a database of its own, made from template0: other tests of the session may install
    # extensions in the shared cluster's databases, template1 included (a new database copies
    # template1's); roles and hba are cluster-wide either way
    dsn = fresh_db("_hardened")
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    with psycopg.connect(dsn, autocommit=True) as conn:
        # the password hashes are sensitive; a built-in monitoring role may not read them
        outcome = scan_database(conn, SecuritySettings(sensitive_columns=["pg_catalog.pg_authid.rolpassword"],
                                                       app_roles=["pg_monitor"]))
    bad = [(f.id, f.object, f.evidence) for f in outcome.findings if f.severity in ("critical", "high")]
    assert not bad
    assert not outcome.not_checked
    # documented, not high: no TLS on a loopback-only server, connection logging off, no pgAudit
    assert {f.id for f in outcome.findings} <= {"PG-TLS-001", "PG-LOG-001", "PG-LOG-002", "PG-LOG-003",
                                                "PG-LOG-004"}
    assert [f.severity for f in outcome.findings if f.id == "PG-TLS-001"] == ["low"]


def test_world_readable_identity_key_is_found(pg, make_settings, tmp_path):
    ident = tmp_path / "identity.key"
    ident.write_text("BVH-OPS-IDENTITY x\n")
    ident.chmod(0o644)
    settings = make_settings(pg.dsn(), f"file://{tmp_path / 'repo'}", identity=ident)
    load_or_create_host_key(settings.state_dir)
    found = {f.id: f for f in check_permissions(settings).findings}
    assert found["HOST-PERM-002"].severity == "critical"
    assert str(ident) in found["HOST-PERM-002"].evidence and "0644" in found["HOST-PERM-002"].evidence
    assert "HOST-PERM-003" not in found  # the host key was created 0600
    ident.chmod(0o600)
    assert "HOST-PERM-002" not in {f.id for f in check_permissions(settings).findings}


def test_scan_report_shape_and_waiver(pg, make_settings, tmp_path):
    from bvh_ops.config import SecurityWaiver

    sec = SecuritySettings(waivers=[SecurityWaiver(id="PG-LOG-001", reason="connections logged by the pooler",
                                                   expires=datetime(2999, 1, 1).date())])
    settings = make_settings(pg.dsn(), f"file://{tmp_path / 'repo'}", security=sec)
    doc = scan(settings, now=datetime.now(UTC))
    assert set(doc) >= {"status", "findings", "checked", "not_checked", "counts"}
    assert doc["status"] == "warning" and doc["checked"] > 20
    log = next(f for f in doc["findings"] if f["id"] == "PG-LOG-001")
    assert log["waived"] == "connections logged by the pooler" and log["cis"] == "3.1.20"
    assert {"id", "cis", "severity", "title", "evidence", "remediation"} <= set(log)
    assert {n["id"] for n in doc["not_checked"]} >= {"HOST-NET-001", "HOST-TLS-001"}


# -- baseline and drift -----------------------------------------------------------------------

@pytest.fixture
def drift_cluster(tmp_path):
    cluster = EmbeddedCluster(tmp_path / "drift")
    cluster.start()
    yield cluster
    cluster.destroy()


def test_drift_shows_grant_role_alter_system_and_hba_change(drift_cluster, tmp_path):
    objects = open_store_for(tmp_path)
    key = load_or_create_host_key(tmp_path / "state")
    trusted = {key.key_id: key.public_b64}
    with psycopg.connect(drift_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.draws (id int)")
        before = bl.snapshot(conn)
    bl.accept(objects, key, before, datetime.now(UTC), "tester@host")

    with psycopg.connect(drift_cluster.dsn(), autocommit=True) as conn:
        conn.execute("GRANT SELECT ON public.draws TO PUBLIC")
        conn.execute("CREATE ROLE intruder LOGIN PASSWORD 'intruder-pw'")
        conn.execute("ALTER SYSTEM SET log_connections = 'all'")
        loaded = conn.execute("SELECT pg_conf_load_time()").fetchone()[0]
        conn.execute("SELECT pg_reload_conf()")
    _wait_reloaded(drift_cluster, loaded)
    # after the reload (pg_hba_file_rules reads the file on disk; the loaded rules still admit us)
    hba = drift_cluster.data / "pg_hba.conf"
    lines = hba.read_text().splitlines()
    changed = next(i for i, ln in enumerate(lines) if ln.startswith("host") and "127.0.0.1/32" in ln
                   and "replication" not in ln)
    lines[changed] = lines[changed].replace("127.0.0.1/32", "10.1.0.0/16")
    hba.write_text("\n".join(lines) + "\n")
    with psycopg.connect(drift_cluster.dsn(), autocommit=True) as conn:  # log_connections: new sessions only
        after = bl.snapshot(conn)

    accepted = bl.load_accepted(objects, trusted)
    changes = {(d["section"], d["object"]): d for d in bl.drift(accepted.snapshot, after)}
    grant = changes[("grants", "table public.draws")]
    # the table's default ACL (never granted on: the owner's privileges) before, PUBLIC's SELECT added after
    assert grant["change"] == "changed" and grant["before"] == ["postgres=arwdDxtm/postgres"]
    assert "=r/postgres" in grant["after"]
    role = changes[("roles", "intruder")]
    assert role["change"] == "added" and role["before"] is None and role["after"]["login"] is True
    setting = changes[("settings", "log_connections")]
    assert setting["before"] in ("", "off") and setting["after"] == "all"
    assert changes[("altered_settings", "log_connections")]["change"] == "added"
    hba_change = changes[("hba", f"line {changed + 1}")]
    assert "127.0.0.1/32" in hba_change["before"] and "10.1.0.0/16" in hba_change["after"]


def test_a_grant_revoked_again_is_no_drift(drift_cluster):
    """GRANT then REVOKE leaves an explicit copy of the default ACL where there was NULL: the same
    privileges, so the snapshot (effective ACLs) is unchanged."""
    with psycopg.connect(drift_cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.wallets (id int)")
        conn.execute("CREATE ROLE visitor LOGIN")
        before = bl.snapshot(conn)
        conn.execute("GRANT SELECT ON public.wallets TO visitor")
        during = bl.snapshot(conn)
        conn.execute("REVOKE SELECT ON public.wallets FROM visitor")
        after = bl.snapshot(conn)
        assert conn.execute("SELECT relacl IS NOT NULL FROM pg_class WHERE relname = 'wallets'").fetchone() == (True,)
    assert [(d["section"], d["object"]) for d in bl.drift(before, during)] == [("grants", "table public.wallets")]
    assert bl.drift(before, after) == []


def _wait_reloaded(cluster, loaded, timeout=20.0):
    """pg_reload_conf only signals the postmaster: wait until a new session sees the new load."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            if conn.execute("SELECT pg_conf_load_time()").fetchone()[0] > loaded:
                return
        assert time.monotonic() < deadline, "configuration not reloaded"
        time.sleep(0.1)


def open_store_for(tmp_path):
    from bvh_ops.config import Settings

    (tmp_path / "repo").mkdir(exist_ok=True)
    return open_store(Settings(repository=f"file://{tmp_path / 'repo'}", state_dir=tmp_path / "state"))


def test_tampered_baseline_is_refused(pg, tmp_path):
    objects = open_store_for(tmp_path)
    key = load_or_create_host_key(tmp_path / "state")
    trusted = {key.key_id: key.public_b64}
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        done = bl.accept(objects, key, bl.snapshot(conn), datetime.now(UTC), "tester@host")
    assert bl.load_accepted(objects, trusted).sha256 == done.sha256
    doc = json.loads(objects.get_bytes(done.key))
    doc["snapshot"]["roles"]["intruder"] = {"superuser": True}  # absorb a rogue superuser into the baseline
    path = tmp_path / "repo" / done.key
    os.chmod(path, 0o644)
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="signature does not verify") as exc:
        bl.load_accepted(objects, trusted)
    assert "\n" not in str(exc.value)
    other = load_or_create_host_key(tmp_path / "other-state")
    with pytest.raises(IntegrityError, match="not signed by a trusted host key"):
        bl.load_accepted(objects, {other.key_id: other.public_b64})


def test_world_writable_files_found_sticky_dirs_and_links_not(tmp_path):
    from bvh_ops.security.checks.host import world_writable

    tree = tmp_path / "www"
    (tree / "shared").mkdir(parents=True)
    (tree / "shared").chmod(0o1777)          # sticky, like /tmp: fine
    (tree / "open.cfg").write_text("x")
    (tree / "open.cfg").chmod(0o666)
    (tree / "ok.cfg").write_text("x")
    (tree / "link").symlink_to(tree / "open.cfg")
    out = world_writable([tree, tmp_path / "missing"], max_files=1000)
    assert [(f.id, f.object) for f in out.findings] == [("HOST-FS-001", str(tree / "open.cfg"))]
    assert out.checked == 1 and "missing does not exist" in out.not_checked[0].reason


# -- data: sensitive columns ------------------------------------------------------------------

@pytest.fixture
def sensitive_db(pg, fresh_db):
    """A platform database with application roles reaching public.users.email every way there is:
    a table-wide grant, a column grant, through a group role, through PUBLIC (on another table), and
    one role that reads only the columns it needs."""
    dsn = fresh_db()
    roles = ("dt_api", "dt_report", "dt_support", "dt_member", "dt_group", "dt_clean", "dt_any")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for r in roles:
            conn.execute(f"DROP ROLE IF EXISTS {r}")
        conn.execute("CREATE TABLE public.users (id int, email text, password_hash text)")
        conn.execute("CREATE TABLE public.payments (id int, card_number text)")
        for r in roles:
            conn.execute(f"CREATE ROLE {r} {'NOLOGIN' if r == 'dt_group' else 'LOGIN'}")
        conn.execute("GRANT SELECT ON public.users TO dt_api")             # needs email: sensitive_readers
        conn.execute("GRANT SELECT ON public.users TO dt_report")          # table-wide: reads email and hash
        conn.execute("GRANT SELECT (id, email) ON public.users TO dt_support")  # a column grant
        conn.execute("GRANT SELECT ON public.users TO dt_group")
        conn.execute("GRANT dt_group TO dt_member")                        # inherited through a group
        conn.execute("GRANT SELECT (id) ON public.users TO dt_clean")      # only what it needs
        conn.execute("GRANT SELECT ON public.payments TO PUBLIC")          # every role reads card_number
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        for r in roles:
            conn.execute(f"DROP OWNED BY {r}")
            conn.execute(f"DROP ROLE {r}")


def test_sensitive_columns_readable_by_app_roles_that_do_not_need_them(sensitive_db):
    sec = SecuritySettings(
        sensitive_columns=["public.users.email", "public.users.password_hash", "public.payments.card_number",
                           "public.users.phone"],
        app_roles=["dt_api", "dt_report", "dt_support", "dt_member", "dt_clean", "dt_gone"],
        sensitive_readers={"public.users.email": ["dt_api"]})
    with psycopg.connect(sensitive_db, autocommit=True) as conn:
        outcome = scan_database(conn, sec)
    assert not [n for n in outcome.not_checked if n.id.startswith("PG-DATA")]
    found = {(f.id, f.object): f for f in outcome.findings if f.id.startswith("PG-DATA")}
    readable = {obj for (i, obj) in found if i == "PG-DATA-001"}
    assert readable == {
        "dt_report on public.users.email", "dt_report on public.users.password_hash",
        "dt_support on public.users.email",
        "dt_member on public.users.email", "dt_member on public.users.password_hash",
        "dt_api on public.users.password_hash",            # allowed email, not the hash
        *(f"{r} on public.payments.card_number" for r in ("dt_api", "dt_report", "dt_support", "dt_member",
                                                          "dt_clean")),
    }
    ev = {obj: found[("PG-DATA-001", obj)].evidence for obj in readable}
    assert "(SELECT on the whole table)" in ev["dt_report on public.users.email"]
    assert "(SELECT on the column)" in ev["dt_support on public.users.email"]
    assert "(SELECT on the whole table)" in ev["dt_member on public.users.email"]   # through dt_group
    assert "(through PUBLIC)" in ev["dt_clean on public.payments.card_number"]
    assert "readers allowed: dt_api" in ev["dt_report on public.users.email"]
    assert all(f.severity == "" or f.severity == "high" for (i, _), f in found.items() if i == "PG-DATA-001")
    # configuration that names nothing is said, not silently passed
    assert ("PG-DATA-002", "role dt_gone") in found and ("PG-DATA-002", "column public.users.phone") in found


def test_sensitive_columns_not_configured_is_not_checked(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        outcome = scan_database(conn, SecuritySettings())
    assert {n.id for n in outcome.not_checked} >= {"PG-DATA-001", "PG-DATA-002"}
    assert not [f for f in outcome.findings if f.id.startswith("PG-DATA")]


def test_sensitive_column_finding_in_the_scan_report(sensitive_db, make_settings, tmp_path):
    settings = make_settings(sensitive_db, f"file://{tmp_path / 'repo'}",
                             security={"sensitive_columns": ["public.users.email"], "app_roles": ["dt_report"]})
    doc = scan(settings)
    f = next(f for f in doc["findings"] if f["id"] == "PG-DATA-001")
    assert f["object"] == "dt_report on public.users.email" and f["severity"] == "high"
    assert "dt_report" in f["evidence"] and "public.users.email" in f["evidence"] and f["remediation"]
    assert doc["status"] == "failed"
