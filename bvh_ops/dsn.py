"""PostgreSQL connection strings: parsed the way libpq parses them, checked before anything
connects, and never shown with their password (libpq's own parse errors quote the whole URI)."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

# psycopg is imported where a DSN is parsed: its import is ~0.2 s of CPU, and the WAL pusher
# (whose settings import this module) has no DSN to parse.

URI_HINT = "postgresql://user:password@host:5432/dbname"
_SCHEME = re.compile(r"postgres(?:ql)?://", re.IGNORECASE)
# A URI's password: from the ':' after the user name to the LAST '@' of the whole string. libpq
# ends the user info at the first '@' (or sees none when a '/' comes first), but a password
# holding an unencoded '@', '/' or '?' (check_dsn refuses the first two) must not show in part:
# redaction may hide more than the password (a dbname or query holding '@'), never less.
_URI_PASSWORD = re.compile(r"^(?P<pre>\w+://[^@/:]*:)(?P<pw>.*)(?=@)", re.DOTALL)
# password=… in a URI's query: to the next '&' (a space in it is libpq's error, and shown in it).
_QUERY_PASSWORD = re.compile(r"(?P<pre>[?&]password=)(?P<pw>[^&]*)", re.IGNORECASE)
# password=… in key=value form: quoted (may hold spaces), or to the first unescaped space.
_KV_PASSWORD = re.compile(r"(?P<pre>\bpassword\s*=\s*)(?P<pw>'(?:\\.|[^'\\])*'|(?:\\.|[^\s\\])+)")
_PORT = re.compile(r"[0-9]{1,5}")


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***`` (URL and key=value forms, malformed ones too)."""
    if "://" in dsn:
        dsn = _URI_PASSWORD.sub(r"\g<pre>***", dsn, count=1)
        return _QUERY_PASSWORD.sub(r"\g<pre>***", dsn)
    return _KV_PASSWORD.sub(r"\g<pre>***", dsn)


def scrub(text: str, dsn: str) -> str:
    """``text`` (an error message about ``dsn``) with the DSN redacted and its password gone."""
    text = text.replace(dsn, redact_dsn(dsn))
    found = [m.group("pw") for m in (_URI_PASSWORD.search(dsn), *_QUERY_PASSWORD.finditer(dsn),
                                       *_KV_PASSWORD.finditer(dsn)) if m]
    secrets = {s for pw in found for s in (pw, unquote(pw), pw.strip("'"))}
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        secrets.add(conninfo_to_dict(dsn).get("password") or "")
    except (psycopg.Error, ValueError):  # (UnicodeDecodeError: a %-escape that is not UTF-8)
        pass
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def check_dsn(dsn: str) -> dict[str, str]:
    """The connection parameters of a ``postgresql://`` URI, checked as libpq will use them:
    syntax, known parameters only, a host, numeric ports. Raises ValueError with a message that
    never contains the password."""
    if not (scheme := _SCHEME.match(dsn)):
        raise ValueError(f"must look like {URI_HINT}")
    # libpq ends the user info at the first '@' (none when a '/' comes first), and the host at
    # '/' or '?': the rest of a password holding '@' or '/' would be read as the host, port or
    # database and quoted in errors. Refused before libpq (a database name with '@': %40).
    rest = dsn[scheme.end():]
    cut = next((i for i, ch in enumerate(rest) if ch in "@/"), len(rest))
    start = cut + 1 if rest[cut:cut + 1] == "@" else 0
    end = next((i for i in range(start, len(rest)) if rest[i] in "/?"), len(rest))
    path = rest[end + 1:].split("?", 1)[0] if rest[end:end + 1] == "/" else ""
    if "?" in rest[:cut].split(":", 1)[0] and start:
        raise ValueError(f"a '?' before the '@' that ends the user name: percent-encode '?' in the user name as %3F "
                         f"(or was a query written before the host? {URI_HINT})")
    if "@" in rest[start:end] or "@" in path:
        raise ValueError(f"an '@' or '/' where libpq does not expect one: percent-encode '@' as %40 and '/' as %2F "
                         f"in the user name, password or database name ({URI_HINT})")
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except UnicodeDecodeError:
        raise ValueError(f"not a valid connection URI (a %-escape that is not UTF-8): it must look like {URI_HINT}, "
                         "'%' in the password written as %25") from None
    except psycopg.ProgrammingError as exc:
        reason = libpq_reason(exc, dsn)
        if "query parameter" in reason:  # libpq knows every valid keyword
            raise ValueError(f"unknown connection parameter ({reason}): remove it or fix its spelling "
                             "(https://www.postgresql.org/docs/current/libpq-connect.html)") from None
        raise ValueError(f"not a valid connection URI ({reason}): it must look like {URI_HINT}, "
                         "special characters in the password percent-encoded") from None
    hosts = (params.get("host") or params.get("hostaddr") or "").split(",")
    if not any(hosts):
        raise ValueError(f"no host: it must look like {URI_HINT}")
    ports = (params.get("port") or "").split(",")
    for port in ports:
        if port and not (_PORT.fullmatch(port) and 1 <= int(port) <= 65535):
            raise ValueError(f"port {port!r} is not a number between 1 and 65535")
    if len(ports) > 1 and len(ports) != len(hosts):
        raise ValueError(f"{len(ports)} ports for {len(hosts)} hosts: give one port, or one per host")
    return params


def libpq_reason(exc: Exception, dsn: str) -> str:
    """libpq's complaint about ``dsn`` without the DSN it quotes (nor its password)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.replace(f': "{dsn}"', "").replace(f'"{dsn}"', "the URI")
    return scrub(text, dsn)


def location(dsn: str, **overrides: object) -> str:
    """``host:port`` the DSN points at (several comma-separated), for error messages; PGHOST,
    PGPORT and libpq's defaults where the DSN names none."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn, **overrides)
    except psycopg.Error:
        return "(unparsable DSN)"
    hosts = (params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost").split(",")
    ports = (params.get("port") or os.environ.get("PGPORT") or "5432").split(",")
    if len(ports) != len(hosts):
        ports = [ports[0]] * len(hosts)
    return ",".join(f"{_host(h)}:{p or '5432'}" for h, p in zip(hosts, ports, strict=True))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host or "localhost"
