"""The security baseline and drift (the monthly audit), like AWS Config's recorded state: a
snapshot of who can do what — roles, memberships, grants, default privileges, hba rules,
security-relevant settings, extensions, functions' security attributes — as canonical JSON,
signed with the host key (the key that signs manifests and audit digests) and stored in the
repository under ``security/baselines/<ts>.json``; ``security/baselines/ACCEPTED`` (signed too)
names the accepted one. ``drift`` is a pure diff of two snapshots.

A baseline or pointer whose signature does not verify against our key and
``trusted_host_keys`` is refused: a forged baseline would hide exactly the change it absorbed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from bvh_ops.errors import IntegrityError, NotFound
from bvh_ops.keys import HostKey, host_key_id, verify_signature
from bvh_ops.security.checks.db import Skip, hba_rules, hba_text, rows
from bvh_ops.storage import ObjectStore

PREFIX = "security/baselines/"
POINTER = PREFIX + "ACCEPTED"
FORMAT = "bvh-ops-security-baseline-v1"

# Settings whose change is a security change (read with current_setting: visible to any role,
# except those a server restricts, which are then left out and listed under "unreadable").
SETTINGS = (
    "listen_addresses", "port", "ssl", "ssl_min_protocol_version", "ssl_cert_file", "ssl_ciphers",
    "password_encryption", "authentication_timeout", "log_connections", "log_disconnections", "log_line_prefix",
    "log_statement", "log_min_duration_statement", "shared_preload_libraries", "pgaudit.log", "row_security",
    "default_transaction_read_only", "search_path", "hba_file", "wal_level", "archive_mode", "archive_command",
    "max_wal_senders", "unix_socket_permissions", "unix_socket_directories", "session_preload_libraries",
    "local_preload_libraries", "lo_compat_privileges", "allow_system_table_mods",
)
_NON_SYSTEM = "NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"


def canonical(doc: Any) -> bytes:
    """The bytes that are hashed and signed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _acl(value: Any) -> list[str]:
    return sorted(str(v) for v in value) if value else []


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    """The live security state of the server (cluster-wide) and of the connected database.
    Sections that the role may not read are omitted and named in ``unreadable``."""
    snap: dict[str, Any] = {"unreadable": {}}

    def section(name: str, fn) -> None:
        try:
            snap[name] = fn()
        except Skip as exc:
            snap["unreadable"][name] = str(exc)

    section("roles", lambda: {r[0]: {"superuser": r[1], "createrole": r[2], "createdb": r[3], "login": r[4],
                                     "replication": r[5], "bypassrls": r[6], "inherit": r[7],
                                     "connection_limit": r[8], "valid_until": r[9].isoformat() if r[9] else None}
                              for r in rows(conn, "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, "
                                                   "rolcanlogin, rolreplication, rolbypassrls, rolinherit, "
                                                   "rolconnlimit, rolvaliduntil FROM pg_roles "
                                                   "WHERE rolname !~ '^pg_'")})
    section("memberships", lambda: {f"{m} in {g}": {"admin": a, "grantor": gr}
                                    for m, g, a, gr in rows(conn, "SELECT pg_get_userbyid(member), "
                                                                   "pg_get_userbyid(roleid), admin_option, "
                                                                   "pg_get_userbyid(grantor) FROM pg_auth_members")})
    section("grants", lambda: _grants(conn))
    section("default_privileges", lambda: {
        f"{role}/{schema}/{kind}": _acl(acl)
        for role, schema, kind, acl in rows(conn, "SELECT pg_get_userbyid(d.defaclrole), coalesce(n.nspname, '*'), "
                                                   "d.defaclobjtype::text, d.defaclacl::text[] FROM pg_default_acl d "
                                                   "LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace")})
    section("hba", lambda: {f"line {r['line']}": (f"ERROR {r['error']}" if r["error"] else hba_text(r))
                            for r in hba_rules(conn)})
    section("settings", lambda: _settings(conn))
    section("altered_settings", lambda: {
        name: setting for name, setting in rows(conn, "SELECT name, setting FROM pg_file_settings WHERE sourcefile "
                                                       "LIKE '%postgresql.auto.conf' AND applied IS NOT NULL")})
    section("extensions", lambda: {n: v for n, v in rows(conn, "SELECT extname, extversion FROM pg_extension")})
    section("languages", lambda: {n: {"trusted": t} for n, t in rows(conn, "SELECT lanname, lanpltrusted "
                                                                         "FROM pg_language WHERE lanispl")})
    section("functions", lambda: {
        fn: {"security_definer": sd, "config": sorted(cfg or []), "owner": owner, "leakproof": lp}
        for fn, sd, cfg, owner, lp in rows(conn, "SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig, "
                                                  "pg_get_userbyid(p.proowner), p.proleakproof FROM pg_proc p JOIN "
                                                  f"pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname {_NON_SYSTEM} "
                                                  "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid "
                                                  "AND d.deptype = 'e')")})
    return snap


def _grants(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Effective ACLs: a NULL acl (never granted on) is read as its default (acldefault), so a
    GRANT later revoked, which leaves an explicit copy of the default, is no change."""
    out: dict[str, list[str]] = {}
    for name, acl in rows(conn, "SELECT datname, coalesce(datacl, acldefault('d', datdba))::text[] FROM pg_database"):
        out[f"database {name}"] = _acl(acl)
    for name, acl in rows(conn, "SELECT nspname, coalesce(nspacl, acldefault('n', nspowner))::text[] FROM pg_namespace "
                            f"WHERE nspname {_NON_SYSTEM}"):
        out[f"schema {name}"] = _acl(acl)
    for schema, name, kind, acl in rows(conn, "SELECT n.nspname, c.relname, c.relkind::text, coalesce(c.relacl, acldefault("
                                               "CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))::text[] "
                                               "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                               f"WHERE c.relkind IN ('r','p','v','m','f','S') AND n.nspname {_NON_SYSTEM}"):
        out[f"{'sequence' if kind == 'S' else 'table'} {schema}.{name}"] = _acl(acl)
    for fn, acl in rows(conn, "SELECT p.oid::regprocedure::text, coalesce(p.proacl, acldefault('f', p.proowner))::text[] "
                               "FROM pg_proc p JOIN pg_namespace n "
                               f"ON n.oid = p.pronamespace WHERE n.nspname {_NON_SYSTEM}"):
        out[f"function {fn}"] = _acl(acl)
    return out


def _settings(conn: psycopg.Connection) -> dict[str, str | None]:
    out = {}
    for name in SETTINGS:
        try:
            out[name] = rows(conn, "SELECT current_setting(%s, true)", (name,))[0][0]
        except Skip:
            out[name] = "(unreadable)"
    return out


# -- signed documents -----------------------------------------------------------------------

@dataclass(frozen=True)
class Baseline:
    key: str                 # object key in the repository
    taken_at: str
    snapshot: dict[str, Any]
    sha256: str              # of canonical(snapshot)
    signed_by: str           # host key id


def _signed(body: dict[str, Any], key: HostKey) -> dict[str, Any]:
    return {**body, "public_key": key.public_b64, "signature": key.sign(canonical(body))}


def _verify(doc: dict[str, Any], trusted: dict[str, str], what: str) -> dict[str, Any]:
    body = {k: v for k, v in doc.items() if k not in ("public_key", "signature")}
    pub = doc.get("public_key")
    if not isinstance(pub, str) or host_key_id(pub) not in trusted:
        raise IntegrityError(f"{what} is not signed by a trusted host key: refusing it (tampered, or add its key "
                             "to trusted_host_keys)")
    if not verify_signature(pub, str(doc.get("signature", "")), canonical(body)):
        raise IntegrityError(f"{what}: signature does not verify (tampered): refusing it; review the live state "
                             "and `bvh-ops security baseline accept` a new one")
    return body


def accept(objects: ObjectStore, key: HostKey, snap: dict[str, Any], now: datetime, accepted_by: str) -> Baseline:
    """Store ``snap`` as a new signed baseline and point ACCEPTED at it (the baseline first: the
    pointer never names an object that is not there)."""
    digest = hashlib.sha256(canonical(snap)).hexdigest()
    okey = f"{PREFIX}{now:%Y%m%dT%H%M%S%fZ}.json"
    body = {"format": FORMAT, "taken_at": now.isoformat(), "snapshot": snap, "sha256": digest}
    objects.put_bytes(okey, json.dumps(_signed(body, key), indent=1, sort_keys=True).encode() + b"\n")
    pointer = {"format": FORMAT, "key": okey, "sha256": digest, "accepted_at": now.isoformat(),
               "accepted_by": accepted_by}
    objects.put_bytes(POINTER, json.dumps(_signed(pointer, key), indent=1, sort_keys=True).encode() + b"\n")
    return Baseline(okey, now.isoformat(), snap, digest, key.key_id)


def load_accepted(objects: ObjectStore, trusted: dict[str, str]) -> Baseline:
    """The accepted baseline, both signatures and the hash checked; NotFound when none was accepted."""
    try:
        raw_pointer = objects.get_bytes(POINTER)
    except NotFound:
        raise NotFound("no accepted security baseline: run `bvh-ops security baseline accept` after reviewing "
                       "`bvh-ops security scan`") from None
    pointer = _verify(_parse(raw_pointer, POINTER), trusted, f"security baseline pointer {POINTER}")
    okey = str(pointer.get("key", ""))
    try:
        raw = objects.get_bytes(okey)
    except NotFound:
        raise IntegrityError(f"security baseline {okey} named by {POINTER} is missing") from None
    body = _verify(_parse(raw, okey), trusted, f"security baseline {okey}")
    digest = hashlib.sha256(canonical(body.get("snapshot"))).hexdigest()
    if digest != body.get("sha256") or digest != pointer.get("sha256"):
        raise IntegrityError(f"security baseline {okey}: content does not match its recorded sha256: refusing it")
    return Baseline(okey, str(body["taken_at"]), body["snapshot"], digest, host_key_id(_parse(raw, okey)["public_key"]))


def _parse(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise IntegrityError(f"security baseline object {what} is not JSON (damaged or tampered): refusing it") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IntegrityError(f"security baseline object {what} has an unknown format: refusing it")
    return doc


# -- drift (pure) ---------------------------------------------------------------------------

def drift(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Every difference between two snapshots, section by section and key by key:
    ``{section, object, change: added|removed|changed, before, after}``, sorted. A section
    missing on one side (unreadable then or now) is one ``changed`` entry for the whole section."""
    out = []
    for section in sorted((set(before) | set(after)) - {"unreadable"}):
        a, b = before.get(section), after.get(section)
        if a == b:
            continue
        if not isinstance(a, dict) or not isinstance(b, dict):
            out.append({"section": section, "object": "*", "change": "changed", "before": a, "after": b})
            continue
        for key in sorted(set(a) | set(b)):
            if key not in a:
                out.append({"section": section, "object": key, "change": "added", "before": None, "after": b[key]})
            elif key not in b:
                out.append({"section": section, "object": key, "change": "removed", "before": a[key], "after": None})
            elif a[key] != b[key]:
                out.append({"section": section, "object": key, "change": "changed", "before": a[key],
                            "after": b[key]})
    return out
