"""pg_restore table-of-contents lists, pure: parse a TOC line, pick the entries that restore
selected tables, and spread entries over parallel pg_restore processes by weight."""

from __future__ import annotations

import re

from bvh_ops.errors import ConfigError

PREREQ = ("SCHEMA", "EXTENSION", "TYPE", "DOMAIN", "FUNCTION", "COLLATION", "SEQUENCE")
TABLE_ENTRIES = ("TABLE", "SEQUENCE OWNED BY", "DEFAULT", "TABLE DATA", "SEQUENCE SET", "CONSTRAINT", "INDEX")


KNOWN_DESCS = sorted(
    TABLE_ENTRIES + PREREQ + (
        "FK CONSTRAINT", "INDEX", "INDEX ATTACH", "TABLE ATTACH", "ACL", "DEFAULT ACL", "COMMENT",
        "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA", "BLOB", "BLOBS", "BLOB METADATA", "LARGE OBJECT",
        "TRIGGER", "EVENT TRIGGER", "RULE", "POLICY", "STATISTICS", "PUBLICATION", "SUBSCRIPTION",
    ),
    key=lambda d: len(d.split()), reverse=True,
)


def parse_entry(line: str) -> tuple[str, str, str] | None:
    """(desc, schema, tag) of a TOC line: '<id>; <cat> <oid> <DESC...> <schema> <tag...> <owner>'."""
    if not line or line.startswith(";"):
        return None
    parts = line.split(";", 1)[1].split()
    words = parts[2:]
    for desc in KNOWN_DESCS:
        d = desc.split()
        if words[: len(d)] == d:
            rest = words[len(d):]
            return desc, (rest[0] if rest else "-"), " ".join(rest[1:-1]) if len(rest) > 2 else (rest[1] if len(rest) > 1 else "")
    return words[0] if words else "", "", ""


def split_name(name: str) -> tuple[str, str]:
    """(schema, table) of a table name as --table or format('%I.%I') gives it, quotes removed
    ('"Ünïcödé"."café"', 'Ünïcödé.café' and '"Ünïcödé".café' alike; '"a""b"' is a"b); no
    schema: public. Unquoted parts are taken as written (pg_restore -t folds no case either).
    More than two parts ('a.b.c': "a.b".c or a."b.c"?) is refused, not guessed."""
    parts, cur, quoted, i = [], [], False, 0
    while i < len(name):
        ch = name[i]
        if ch == '"' and quoted and name[i + 1:i + 2] == '"':
            cur.append('"')
            i += 1
        elif ch == '"':
            quoted = not quoted
        elif ch == "." and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    if len(parts) > 2:
        raise ConfigError(f"table {name}: more than schema.table; quote a name that holds a dot (\"a.b\".c)")
    return (parts[0], parts[1]) if len(parts) > 1 else ("public", parts[0])


# The table of pg_get_indexdef's "CREATE [UNIQUE] INDEX <name> ON [ONLY] <schema>.<table> USING",
# each name quoted where it needs it (a space, a dot, capitals).
_IDENT = r'(?:"(?:[^"]|"")*"|[^\s".]+)'
INDEX_TABLE = re.compile(rf'^CREATE (?:UNIQUE )?INDEX {_IDENT} ON (?:ONLY )?({_IDENT}\.{_IDENT}) USING ')


def selective_lists(toc: list[str], tables: list[str], indexes: set[str] | None = None) -> tuple[list[str], list[str]]:
    """Split a TOC into prerequisites (tolerant) and the selected tables' own entries (strict);
    ``indexes`` are the schema-qualified index names of those tables (from the manifest)."""
    indexes = indexes or set()
    wanted = [split_name(t) for t in tables]
    prereq, own = [], []
    # Every table of the archive, per schema: a DEFAULT's or CONSTRAINT's tag is "<table> <name>"
    # and a serial's sequence is "<table>_<column>_seq", and names may contain spaces or be the
    # prefix of another table's ("draws", "draws_history"): the owner is the longest table name
    # the tag starts with.
    tables_of: dict[str, list[str]] = {}
    for line in toc:
        e = parse_entry(line)
        if e is not None and e[0] == "TABLE":
            tables_of.setdefault(e[1], []).append(e[2])
    for line in toc:
        e = parse_entry(line)
        if e is None:
            continue
        desc, schema, tag = e
        for wschema, wname in wanted:
            if schema != wschema:
                continue
            if desc in ("TABLE", "TABLE DATA") and tag == wname:
                own.append(line)
                break
            if desc in ("DEFAULT", "CONSTRAINT") and _owner(tag, tables_of.get(schema, []), " ") == wname:
                own.append(line)
                break
            if desc == "INDEX" and f"{schema}.{tag}" in indexes:
                own.append(line)
                break
            if desc in ("SEQUENCE OWNED BY", "SEQUENCE SET") and _owner(tag, tables_of.get(schema, []), "_") == wname:
                own.append(line)
                break
            if desc == "SEQUENCE" and _owner(tag, tables_of.get(schema, []), "_") == wname:
                prereq.append(line)
                break
        else:
            if desc in PREREQ and desc != "SEQUENCE":
                prereq.append(line)
    # pg_restore -L restores in list order: table, owned-by, defaults, data, setval, constraints.
    order = {d: i for i, d in enumerate(TABLE_ENTRIES)}
    own.sort(key=lambda ln: order.get(parse_entry(ln)[0], 99))
    return prereq, own


def _owner(tag: str, tables: list[str], sep: str) -> str | None:
    """The table a tag belongs to: the longest table name followed by ``sep`` at its start."""
    owners = [t for t in tables if tag.startswith(t + sep)]
    return max(owners, key=len) if owners else None


def balance(entries: list[tuple[str, int]], jobs: int) -> list[list[str]]:
    """Split TOC lines over ``jobs`` lists by weight (largest first onto the lightest list),
    each list keeping archive order: a piped archive can only be read front to back."""
    order = {line: i for i, (line, _) in enumerate(entries)}
    bins: list[list[str]] = [[] for _ in range(max(1, jobs))]
    load = [0] * len(bins)
    for line, weight in sorted(entries, key=lambda e: -e[1]):
        i = load.index(min(load))
        bins[i].append(line)
        load[i] += max(1, weight)
    return [sorted(b, key=order.__getitem__) for b in bins if b]


# TOC entry kinds restored (tolerating "already exists") before a selected table.


# Entry kinds that belong to a selected table (tag starts with the table's name).
