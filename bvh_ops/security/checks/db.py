"""Database checks (CIS PostgreSQL Benchmark, as pgdsat automates it): authentication, roles,
privileges, transport, logging, extensions and replication, read from the catalogs over one
connection (autocommit: a refused query spoils nothing after it).

A query the role may not run (pg_hba_file_rules and pg_authid need a superuser or
pg_read_all_settings-like grants; a server may hide a view) makes its checks *not checked* with
the reason, never passed. No query returns a password hash: md5 is tested server-side
(``rolpassword LIKE 'md5%'``) and only the boolean crosses the wire.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import psycopg
from psycopg import errors as pgerr

from bvh_ops.config import SecuritySettings
from bvh_ops.security.model import Finding, NotChecked, Outcome

_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Skip(Exception):
    """This check cannot run here; the message is the reason."""


def rows(conn: psycopg.Connection, sql: str, params: tuple | None = None) -> list[tuple]:
    try:
        return conn.execute(sql, params).fetchall()
    except pgerr.InsufficientPrivilege as exc:
        raise Skip(f"no privilege ({_first_line(exc)}): run the scan as a superuser or grant "
                   "pg_read_all_settings / pg_read_all_stats") from None
    except (pgerr.UndefinedTable, pgerr.UndefinedColumn, pgerr.UndefinedFunction, pgerr.UndefinedObject) as exc:
        raise Skip(f"not available on this server ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _setting(conn: psycopg.Connection, name: str) -> str | None:
    """A setting's value; None when the server has no such setting."""
    return rows(conn, "SELECT current_setting(%s, true)", (name,))[0][0]


def _off(value: str | None) -> bool:
    # log_connections became a list in PostgreSQL 18 ('' = off; 'receipt,authentication', 'all').
    return (value or "").strip().lower() in ("", "off", "false", "0", "no")


# -- authentication -------------------------------------------------------------------------

def hba_rules(conn: psycopg.Connection) -> list[dict]:
    found = rows(conn, "SELECT line_number, type, database, user_name, address, netmask, auth_method, error "
                       "FROM pg_hba_file_rules ORDER BY line_number")
    keys = ("line", "type", "database", "user", "address", "netmask", "method", "error")
    return [dict(zip(keys, r, strict=True)) for r in found]


def _address(rule: dict) -> str:
    addr, mask = rule["address"], rule["netmask"]
    if not addr:
        return ""
    if mask:
        try:
            if ":" in mask:  # ipaddress takes no IPv6 netmask form: count its bits
                return str(ipaddress.ip_network(f"{addr}/{bin(int(ipaddress.IPv6Address(mask))).count('1')}",
                                                strict=False))
            return str(ipaddress.ip_network(f"{addr}/{mask}", strict=False))
        except ValueError:
            return f"{addr}/{mask}"
    return addr


def hba_text(rule: dict) -> str:
    """The rule as pg_hba.conf would say it (from the parsed view)."""
    parts = [rule["type"] or "?", ",".join(rule["database"] or []), ",".join(rule["user"] or []), _address(rule),
             rule["method"] or ""]
    return " ".join(p for p in parts if p)


def open_to_all(rule: dict) -> bool:
    if not (rule["type"] or "").startswith("host") or rule["method"] == "reject":
        return False
    if rule["address"] == "all":
        return True
    try:
        return ipaddress.ip_network(_address(rule), strict=False).prefixlen == 0
    except ValueError:
        return False


def remote_allowed(rule: dict) -> bool:
    """A host rule that admits something other than loopback."""
    if not (rule["type"] or "").startswith("host") or rule["method"] == "reject":
        return False
    try:
        return not ipaddress.ip_network(_address(rule), strict=False).is_loopback
    except ValueError:
        return rule["address"] not in ("localhost",)


def check_hba(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    out = []
    for r in hba_rules(conn):
        where = f"pg_hba.conf line {r['line']}"
        if r["error"]:
            out.append(Finding("PG-AUTH-005", where, f"{where}: {r['error']}"))
            continue
        text = f"{where}: {hba_text(r)}"
        if r["method"] == "trust":
            # trust over TCP lets anyone who reaches the port in; over the socket, any local user.
            out.append(Finding("PG-AUTH-001", where, text, "critical" if r["type"] != "local" else "high"))
        elif r["method"] == "password":
            out.append(Finding("PG-AUTH-002", where, text))
        elif r["method"] == "md5":
            out.append(Finding("PG-AUTH-003", where, text))
        if open_to_all(r):
            out.append(Finding("PG-AUTH-004", where, text))
    return out


def check_password_encryption(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    value = _setting(conn, "password_encryption")
    if value != "scram-sha-256":
        return [Finding("PG-AUTH-006", "password_encryption", f"password_encryption = {value}")]
    return []


def check_passwords(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    """md5 hashes, login roles without a password, passwords without expiry (pg_authid: superuser)."""
    found = rows(conn, "SELECT rolname, rolcanlogin, rolpassword IS NULL, coalesce(rolpassword LIKE 'md5%', false), "
                       "rolvaliduntil IS NULL FROM pg_authid WHERE rolname !~ '^pg_' ORDER BY rolname")
    out = []
    for name, login, no_password, md5, no_expiry in found:
        if md5:
            out.append(Finding("PG-AUTH-007", name, f"role {name} has an md5 password hash"))
        if login and no_password:
            out.append(Finding("PG-ROLE-002", name, f"role {name} can log in and has no password (only trust, "
                                                    "peer, cert or ident rules can admit it)"))
        if sec.require_password_expiry and login and not no_password and no_expiry:
            out.append(Finding("PG-ROLE-005", name, f"role {name} has a password with no VALID UNTIL"))
    return out


# -- roles ----------------------------------------------------------------------------------

def check_roles(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    found = rows(conn, "SELECT rolname, rolsuper, rolcreaterole, rolbypassrls, rolreplication, rolcanlogin "
                       "FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY rolname")
    out = []
    for name, superuser, createrole, bypassrls, replication, login in found:
        login_word = "login" if login else "nologin"
        if superuser and name not in sec.superusers:
            out.append(Finding("PG-ROLE-001", name, f"role {name} is a superuser ({login_word}); allowed: "
                                                    f"{', '.join(sec.superusers) or 'none'}"))
        if superuser:
            continue  # a superuser has every other attribute implicitly; one finding says it
        if bypassrls:
            out.append(Finding("PG-ROLE-003", name, f"role {name} has BYPASSRLS ({login_word})"))
        if createrole and name not in sec.createrole_roles:
            out.append(Finding("PG-ROLE-004", name, f"role {name} has CREATEROLE ({login_word})"))
        if replication and name not in sec.replication_roles:
            out.append(Finding("PG-REPL-001", name, f"role {name} has REPLICATION ({login_word})"))
    return out


# -- privileges -----------------------------------------------------------------------------

def check_public_create(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    found = rows(conn, "SELECT n.nspname FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = 0 "
                       f"AND a.privilege_type = 'CREATE' AND n.nspname NOT IN {_SYSTEM_SCHEMAS} ORDER BY 1")
    db = rows(conn, "SELECT current_database()")[0][0]
    return [Finding("PG-PRIV-001", f"schema {s}", f"database {db}: PUBLIC has CREATE on schema {s}") for (s,) in found]


def check_public_tables(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    found = rows(conn, "SELECT DISTINCT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                       "c.relnamespace, aclexplode(c.relacl) a WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') "
                       f"AND a.grantee = 0 AND a.privilege_type = 'SELECT' AND n.nspname NOT IN {_SYSTEM_SCHEMAS} "
                       "ORDER BY 1, 2")
    return [Finding("PG-PRIV-002", f"table {s}.{t}", f"PUBLIC may SELECT from {s}.{t}") for s, t in found]


def check_security_definer(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    found = rows(conn, "SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner) FROM pg_proc p "
                       "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.prosecdef "
                       f"AND n.nspname NOT IN {_SYSTEM_SCHEMAS} AND NOT coalesce(EXISTS (SELECT 1 FROM "
                       "unnest(p.proconfig) c WHERE c LIKE 'search_path=%'), false) ORDER BY 1")
    return [Finding("PG-PRIV-003", f"function {fn}", f"function {fn} (owner {owner}) is SECURITY DEFINER with no "
                                                     "SET search_path") for fn, owner in found]


def check_default_privileges(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    found = rows(conn, "SELECT pg_get_userbyid(d.defaclrole), coalesce(n.nspname, '*'), d.defaclobjtype, "
                       "string_agg(DISTINCT a.privilege_type, ',') FROM pg_default_acl d LEFT JOIN pg_namespace n "
                       "ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a WHERE a.grantee = 0 "
                       "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
    kinds = {"r": "tables", "S": "sequences", "f": "functions", "T": "types", "n": "schemas", "L": "large objects"}
    return [Finding("PG-PRIV-004", f"default privileges {role}/{schema}/{kinds.get(t, t)}",
                    f"objects created by {role} in schema {schema}: {kinds.get(t, t)} get {privs} for PUBLIC")
            for role, schema, t, privs in found]


# -- transport and logging ------------------------------------------------------------------

def check_ssl(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    if not _off(_setting(conn, "ssl")):
        return []
    listen = [a.strip() for a in (_setting(conn, "listen_addresses") or "").split(",") if a.strip()]
    loopback_only = bool(listen) and all(a in _LOOPBACK for a in listen)
    try:
        remote_rules = [r for r in hba_rules(conn) if remote_allowed(r) and not r["error"]]
        why_rules = ""
    except Skip as exc:
        remote_rules, why_rules = [], f"; pg_hba rules unreadable ({exc}), assumed open"
        loopback_only = False
    listen_text = ",".join(listen) or "none"
    if loopback_only and not remote_rules:
        return [Finding("PG-TLS-001", "ssl", f"ssl = off; listen_addresses = {listen_text} and pg_hba admits "
                                             "loopback only", "low")]
    rule = f"; pg_hba line {remote_rules[0]['line']} admits {_address(remote_rules[0])}" if remote_rules else ""
    return [Finding("PG-TLS-001", "ssl", f"ssl = off; listen_addresses = {listen_text}{rule}{why_rules}")]


def check_tls_version(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    value = _setting(conn, "ssl_min_protocol_version")
    if value is None or value in ("TLSv1.2", "TLSv1.3"):
        return []
    return [Finding("PG-TLS-002", "ssl_min_protocol_version", f"ssl_min_protocol_version = {value or '(any)'}")]


def check_log_connections(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    value = _setting(conn, "log_connections")
    return [Finding("PG-LOG-001", "log_connections", f"log_connections = {value or 'off'}")] if _off(value) else []


def check_log_disconnections(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    value = _setting(conn, "log_disconnections")
    return [Finding("PG-LOG-002", "log_disconnections", f"log_disconnections = {value}")] if _off(value) else []


def check_log_line_prefix(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    value = _setting(conn, "log_line_prefix") or ""
    missing = [what for what, escapes in (("time", ("%m", "%t", "%n")), ("user", ("%u",)), ("database", ("%d",)),
                                          ("client", ("%h", "%r"))) if not any(e in value for e in escapes)]
    if missing:
        return [Finding("PG-LOG-003", "log_line_prefix", f"log_line_prefix = '{value}' lacks {', '.join(missing)}")]
    return []


def check_pgaudit(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    value = _setting(conn, "shared_preload_libraries") or ""
    if "pgaudit" not in [v.strip().strip('"') for v in value.split(",")]:
        return [Finding("PG-LOG-004", "shared_preload_libraries",
                        f"shared_preload_libraries = '{value}' (no pgaudit)")]
    return []


# -- extensions, languages, replication -----------------------------------------------------

def check_extensions(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    found = rows(conn, "SELECT extname, extversion FROM pg_extension ORDER BY 1")
    db = rows(conn, "SELECT current_database()")[0][0]
    return [Finding("PG-EXT-001", f"extension {name}", f"database {db}: extension {name} {version} is not in "
                                                       "[security] extensions")
            for name, version in found if name not in sec.extensions]


def check_languages(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    found = rows(conn, "SELECT lanname FROM pg_language WHERE lanispl AND NOT lanpltrusted ORDER BY 1")
    return [Finding("PG-EXT-002", f"language {name}", f"untrusted language {name} is installed") for (name,) in found]


def check_slots(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    found = rows(conn, "SELECT slot_name, slot_type, coalesce(database, '') FROM pg_replication_slots "
                       "WHERE NOT active ORDER BY 1")
    return [Finding("PG-REPL-002", f"slot {name}", f"{kind} replication slot {name}{' on ' + db if db else ''} "
                                                   "is inactive") for name, kind, db in found]


# -- data -----------------------------------------------------------------------------------

def check_sensitive_columns(conn: psycopg.Connection, sec: SecuritySettings) -> list[Finding]:
    """Each application role against each sensitive column: SELECT on it (table-wide or on the
    column; granted to the role, inherited through a role it belongs to, or to PUBLIC; or as a
    superuser) is a finding unless sensitive_readers lists the role for that column."""
    if not sec.sensitive_columns or not sec.app_roles:
        raise Skip("[security] sensitive_columns or app_roles is empty")
    roles = {r: (sup, inherit) for r, sup, inherit in rows(
        conn, "SELECT rolname, rolsuper, rolinherit FROM pg_roles WHERE rolname = ANY(%s)", (list(sec.app_roles),))}
    out = [Finding("PG-DATA-002", f"role {r}", f"[security] app_roles: role {r} does not exist")
           for r in sec.app_roles if r not in roles]
    db = rows(conn, "SELECT current_database()")[0][0]
    for column in sec.sensitive_columns:
        schema, table, name = column.split(".")
        rel = rows(conn, "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                         "JOIN pg_attribute a ON a.attrelid = c.oid WHERE n.nspname = %s AND c.relname = %s "
                         "AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped", (schema, table, name))
        if not rel:
            out.append(Finding("PG-DATA-002", f"column {column}",
                               f"[security] sensitive_columns: column {column} does not exist in database {db}"))
            continue
        allowed = set(sec.sensitive_readers.get(column, ()))
        for role in sorted(set(roles) - allowed):
            superuser, _ = roles[role]
            readable, table_wide, public = rows(
                conn, "SELECT has_column_privilege(%s, %s::oid, %s, 'SELECT'), "
                      "has_table_privilege(%s, %s::oid, 'SELECT'), "
                      "EXISTS (SELECT 1 FROM pg_class c, aclexplode(c.relacl) x WHERE c.oid = %s::oid "
                      "AND x.grantee = 0 AND x.privilege_type = 'SELECT') OR EXISTS (SELECT 1 FROM pg_attribute a, "
                      "aclexplode(a.attacl) x WHERE a.attrelid = %s::oid AND a.attname = %s AND x.grantee = 0 "
                      "AND x.privilege_type = 'SELECT')",
                (role, rel[0][0], name, role, rel[0][0], rel[0][0], rel[0][0], name))[0]
            if not readable:
                continue
            how = ("a superuser" if superuser else "through PUBLIC" if public
                   else "SELECT on the whole table" if table_wide else "SELECT on the column")
            out.append(Finding("PG-DATA-001", f"{role} on {column}",
                               f"role {role} can read {column} in database {db} ({how}); readers allowed: "
                               f"{', '.join(sorted(allowed)) or 'none'}"))
    return out


DbCheck = Callable[[psycopg.Connection, SecuritySettings], list[Finding]]

# Each function and the check ids it decides (all not_checked together when it cannot run).
CHECKS: tuple[tuple[tuple[str, ...], DbCheck], ...] = (
    (("PG-AUTH-001", "PG-AUTH-002", "PG-AUTH-003", "PG-AUTH-004", "PG-AUTH-005"), check_hba),
    (("PG-AUTH-006",), check_password_encryption),
    (("PG-AUTH-007", "PG-ROLE-002", "PG-ROLE-005"), check_passwords),
    (("PG-ROLE-001", "PG-ROLE-003", "PG-ROLE-004", "PG-REPL-001"), check_roles),
    (("PG-PRIV-001",), check_public_create),
    (("PG-PRIV-002",), check_public_tables),
    (("PG-PRIV-003",), check_security_definer),
    (("PG-PRIV-004",), check_default_privileges),
    (("PG-TLS-001",), check_ssl),
    (("PG-TLS-002",), check_tls_version),
    (("PG-LOG-001",), check_log_connections),
    (("PG-LOG-002",), check_log_disconnections),
    (("PG-LOG-003",), check_log_line_prefix),
    (("PG-LOG-004",), check_pgaudit),
    (("PG-EXT-001",), check_extensions),
    (("PG-EXT-002",), check_languages),
    (("PG-REPL-002",), check_slots),
    (("PG-DATA-001", "PG-DATA-002"), check_sensitive_columns),
)


def scan_database(conn: psycopg.Connection, sec: SecuritySettings) -> Outcome:
    """Every database check over ``conn`` (autocommit). A check that cannot run is not_checked."""
    out = Outcome()
    for ids, fn in CHECKS:
        try:
            found = fn(conn, sec)
        except Skip as exc:
            out.not_checked += [NotChecked(i, str(exc)) for i in ids]
            continue
        except psycopg.Error as exc:  # an unexpected server error: this check unknown, the others go on
            out.not_checked += [NotChecked(i, f"query failed: {_first_line(exc)}") for i in ids]
            continue
        out.checked += len(ids)
        out.findings += found
    return out
