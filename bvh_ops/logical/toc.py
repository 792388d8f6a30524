"""pg_restore table-of-contents lists, pure: parse a TOC line, pick the entries that restore
selected tables, and spread entries over parallel pg_restore processes by weight."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

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
    if quoted:
        raise ConfigError(f"table {name}: a quote is not closed; quote each part whole (\"Mixed Case\".\"t\")")
    if len(parts) > 2:
        raise ConfigError(f"table {name}: more than schema.table; quote a name that holds a dot (\"a.b\".c)")
    if not all(parts):
        raise ConfigError(f"table {name!r}: an empty name; give table or schema.table")
    return (parts[0], parts[1]) if len(parts) > 1 else ("public", parts[0])


# The table of pg_get_indexdef's "CREATE [UNIQUE] INDEX <name> ON [ONLY] <schema>.<table> USING",
# each name quoted where it needs it (a space, a dot, capitals).
_IDENT = r'(?:"(?:[^"]|"")*"|[^\s".]+)'
INDEX_TABLE = re.compile(rf'^CREATE (?:UNIQUE )?INDEX {_IDENT} ON (?:ONLY )?({_IDENT}\.{_IDENT}) USING ')


class TocItem(Protocol):
    """What the partition rules read of an archive's TOC entry (archive.TocEntry)."""

    dump_id: int
    desc: str
    namespace: str
    tag: str
    defn: str
    deps: tuple[int, ...]


def partition_tree(entries: Iterable[TocItem]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(schema, table) of a partitioned table -> its partitions, in archive order. pg_dump (14+)
    creates a partition as a table of its own and attaches it in a TABLE ATTACH entry, which
    depends on the partition's TABLE entry and its parent's: the parent is the other one."""
    entries = list(entries)
    tables = {e.dump_id: (e.namespace, e.tag) for e in entries if e.desc == "TABLE"}
    tree: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for e in entries:
        if e.desc != "TABLE ATTACH":
            continue
        child = (e.namespace, e.tag)
        parents = {tables[d] for d in e.deps if d in tables} - {child}
        if len(parents) == 1:
            tree.setdefault(parents.pop(), []).append(child)
    return tree


def with_partitions(tables: list[tuple[str, str]], tree: dict[tuple[str, str], list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """``tables`` and every partition below each (sub-partitions too), each once, asked ones first."""
    out, seen = list(dict.fromkeys(tables)), set(tables)
    for table in out:  # grows while it is walked: breadth first
        for child in tree.get(table, ()):
            if child not in seen:
                seen.add(child)
                out.append(child)
    return out


def _dump_id(line: str) -> int | None:
    try:
        return int(line.split(";", 1)[0])
    except ValueError:
        return None


ATTACH = ("TABLE ATTACH", "INDEX ATTACH")
# pg_restore -L restores in list order: table, its attachment to its parent, owned-by, defaults,
# data, setval, constraints, indexes, the partitions' indexes attached to their parents', and
# last the foreign keys between restored tables.
LIST_ORDER = ("TABLE", "TABLE ATTACH", "SEQUENCE", "SEQUENCE OWNED BY", "DEFAULT", "TABLE DATA", "SEQUENCE SET", "CONSTRAINT",
              "INDEX", "INDEX ATTACH", "FK CONSTRAINT")


def described(entries: Iterable[TocItem]):
    """parse_entry, exact where the archive's own entry for a line's dumpId is at hand: (desc,
    schema, tag) as pg_dump wrote them, whatever spaces they hold. A name the archive reader could
    not decode (U+FFFD: bytes that are not text in the dump's encoding) is left to the line, which
    keeps such bytes as they are."""
    exact = {e.dump_id: (e.desc, e.namespace or "-", e.tag) for e in entries
             if "\ufffd" not in e.namespace + e.tag}

    def parse(line: str) -> tuple[str, str, str] | None:
        found = exact.get(_dump_id(line)) if line and not line.startswith(";") else None
        return found if found is not None else parse_entry(line)

    return parse


def selective_lists(toc: list[str], tables: list[str], indexes: set[str] | None = None,
                    entries: Iterable[TocItem] = ()) -> tuple[list[str], list[str]]:
    """Split a TOC into prerequisites (tolerant) and the selected tables' own entries (strict);
    ``indexes`` are the schema-qualified index names of those tables (from the manifest).

    ``entries`` (the archive's own TOC, with each entry's dependencies): a partition (TABLE
    ATTACH) or a partition's index (INDEX ATTACH) is attached to its parent's when everything it
    depends on is restored too — a partitioned table and its partitions (with_partitions) come
    back as one table; a partition asked for alone comes back as a table of its own — and so is a
    foreign key whose table and referenced table (with its key) are both restored. They also
    name each entry exactly (a `pg_restore -l` line cannot tell a schema, name or owner with a
    space in it from the words around it: described)."""
    indexes = indexes or set()
    wanted = [split_name(t) for t in tables]
    entries = list(entries)
    parse = described(entries)
    prereq, own = [], []
    # Every table of the archive, per schema: a DEFAULT's or CONSTRAINT's tag is "<table> <name>"
    # and a serial's sequence is "<table>_<column>_seq", and names may contain spaces or be the
    # prefix of another table's ("draws", "draws_history"): the owner is the longest table name
    # the tag starts with.
    tables_of: dict[str, set[str]] = {}
    for line in toc:
        e = parse(line)
        if e is not None and e[0] == "TABLE":
            tables_of.setdefault(e[1], set()).add(e[2])
    wanted_set = set(wanted)
    schemas = {schema for schema, _ in wanted}
    # An identity column's sequence is made by ALTER TABLE … ADD GENERATED: it needs its table,
    # so it is the table's own entry, after it (a serial's CREATE SEQUENCE stays a prerequisite).
    identity = {e.dump_id for e in entries if e.desc == "SEQUENCE" and e.defn.lstrip().startswith("ALTER TABLE")}
    # A sequence's table, where the archive says (an OWNED BY sequence's entry depends on its
    # table): exact where the name is not — a renamed table's serial keeps its old name.
    by_id = {e.dump_id: e for e in entries}
    table_ids = {e.dump_id: (e.namespace, e.tag) for e in entries if e.desc == "TABLE"}
    seq_table = {}
    for e in entries:
        if e.desc == "SEQUENCE" and len(owners := {table_ids[d] for d in e.deps if d in table_ids}) == 1:
            seq_table[e.dump_id] = owners.pop()

    def seq_owner(line: str, schema: str, tag: str, tables: set[str]) -> tuple[str, str | None]:
        """The table a SEQUENCE, SEQUENCE SET or SEQUENCE OWNED BY line belongs to."""
        e = by_id.get(_dump_id(line))
        if e is not None:
            seq = e.dump_id if e.desc == "SEQUENCE" else next(
                (d for d in e.deps if d in by_id and by_id[d].desc == "SEQUENCE"), None)
            if seq in seq_table:
                return seq_table[seq]
        return schema, _owner(tag, tables, "_")
    # Each line is looked at once, whatever the number of tables asked for (a partitioned table
    # brings every partition: thousands, each with its own constraints and indexes).
    for line in toc:
        e = parse(line)
        if e is None:
            continue
        desc, schema, tag = e
        if schema in schemas:
            tables = tables_of.get(schema, set())
            if desc in ("TABLE", "TABLE DATA") and (schema, tag) in wanted_set:
                own.append(line)
                continue
            if desc in ("DEFAULT", "CONSTRAINT") and (schema, _owner(tag, tables, " ")) in wanted_set:
                own.append(line)
                continue
            if desc == "INDEX" and f"{schema}.{tag}" in indexes:
                own.append(line)
                continue
            if desc in ("SEQUENCE OWNED BY", "SEQUENCE SET") and seq_owner(line, schema, tag, tables) in wanted_set:
                own.append(line)
                continue
            if desc == "SEQUENCE" and seq_owner(line, schema, tag, tables) in wanted_set:
                (own if _dump_id(line) in identity else prereq).append(line)
                continue
        if desc in PREREQ and desc != "SEQUENCE":
            prereq.append(line)
    chosen = {_dump_id(ln) for ln in prereq + own}
    # A sequence a restored table's default draws from but does not own (its TABLE or DEFAULT
    # entry depends on it): a partition's partitioned table's serial, an id sequence shared by
    # several tables. Made if missing — a prerequisite, set only where the restore made it
    # (unset_sequences): in a database that has it, setval to the backup's value would rewind it
    # under the live tables.
    borrowed = {d for e in entries if e.desc in ("TABLE", "DEFAULT") and e.dump_id in chosen for d in e.deps
                if d not in chosen and d in by_id and by_id[d].desc == "SEQUENCE"}
    if lent := sorted(borrowed & identity):  # made by ALTER TABLE … ADD GENERATED: only with its table
        names = ", ".join(f"{by_id[d].namespace}.{by_id[d].tag}" for d in lent)
        owners = ", ".join(sorted({".".join(seq_table[d]) for d in lent if d in seq_table})) or "its table"
        raise ConfigError(f"a default of a table asked for draws from {names}, the identity sequence of {owners}, "
                          f"which exists only with that table: add --table {owners.split(', ')[0]}")
    if borrowed:
        prereq += [ln for ln in toc if _dump_id(ln) in borrowed]
        chosen |= borrowed
    attach = {e.dump_id for e in entries if e.desc in ATTACH and e.deps and chosen.issuperset(e.deps)}
    # A foreign key between restored tables (its table, the table it references and that one's
    # key, attached index entries included): restored too, so the tables keep their integrity.
    chosen |= attach
    keys = {e.dump_id for e in entries if e.desc == "FK CONSTRAINT" and e.deps and chosen.issuperset(e.deps)}
    taken, more = set(own), attach | keys
    own += [ln for ln in toc if _dump_id(ln) in more and ln not in taken]
    order = {d: i for i, d in enumerate(LIST_ORDER)}
    # An identity sequence (ALTER TABLE … ADD GENERATED) goes with the tables, in the archive's
    # order: after its own table, before a table whose default draws from it.
    own.sort(key=lambda ln: 0 if _dump_id(ln) in identity else order.get(parse(ln)[0], 99))
    return prereq, own


def unset_sequences(prereq: list[str], own: list[str], entries: Iterable[TocItem]) -> list[tuple[tuple[str, str], int, bool]]:
    """The sequences ``prereq`` creates whose value nothing in ``own`` sets — those a restored
    table's default draws from but does not own (a partition's partitioned table's serial, a
    shared id sequence): ((schema, name), the backup's value, is_called) from each one's SEQUENCE
    SET entry, in archive order. The restore moves each forward to the backup's value where the
    target's is behind it (one it made starts at 1: the restored table's next insert took an id
    its restored rows held), never back (a live one further on would be rewound under the live
    tables)."""
    entries = list(entries)
    by_id = {e.dump_id: e for e in entries}
    made = {d for ln in prereq if (d := _dump_id(ln)) in by_id and by_id[d].desc == "SEQUENCE"}
    set_by_own = {dep for ln in own if (d := _dump_id(ln)) in by_id and by_id[d].desc == "SEQUENCE SET"
                  for dep in by_id[d].deps}
    out = []
    for e in entries:
        if e.desc == "SEQUENCE SET" and (seq := next((d for d in e.deps if d in made), None)) is not None \
                and seq not in set_by_own and (m := _SETVAL.search(e.defn)):
            out.append(((by_id[seq].namespace, by_id[seq].tag), int(m.group(1)), m.group(2) == "true"))
    return out


# pg_dump's SEQUENCE SET: SELECT pg_catalog.setval('<name>', <value>, <is_called>);
_SETVAL = re.compile(r",\s*(-?\d+)\s*,\s*(true|false)\s*\)\s*;\s*$")
# What hangs off a table that a table restored alone does not bring back (what it needs may be
# missing, a policy of it may read a table left out, a grant may name a role the target lacks):
# the restore names each one it leaves out (left_out), so the operator re-creates them.
HANGING = {"TRIGGER": "trigger", "ROW SECURITY": "row security", "POLICY": "policy", "RULE": "rule",
           "STATISTICS": "statistics", "COMMENT": "comment", "SECURITY LABEL": "security label", "ACL": "grants"}


def left_out(own: list[str], entries: Iterable[TocItem]) -> list[str]:
    """What hangs off the restored tables (and their own sequences) and is not restored, named
    for the operator ('trigger public.wallets wallets_stamp', 'grants public.TABLE wallets'), in
    archive order."""
    entries = list(entries)
    by_id = {e.dump_id: e for e in entries}
    base = {_dump_id(ln) for ln in own}
    base |= {d for i in list(base) if i in by_id and by_id[i].desc == "SEQUENCE SET" for d in by_id[i].deps}
    found: dict[int, str] = {}
    grown = True
    while grown:  # a comment on a left-out trigger hangs off the trigger
        grown = False
        for e in entries:
            if e.desc in HANGING and e.dump_id not in base and not base.isdisjoint(e.deps):
                base.add(e.dump_id)
                found[e.dump_id] = f"{HANGING[e.desc]} {e.namespace}.{e.tag}" if e.namespace not in ("", "-") \
                    else f"{HANGING[e.desc]} {e.tag}"
                grown = True
    return [found[i] for i in sorted(found, key=[e.dump_id for e in entries].index)]


def _owner(tag: str, tables: set[str], sep: str) -> str | None:
    """The table a tag belongs to: the longest table name followed by ``sep`` at its start."""
    owner, i = None, tag.find(sep)
    while i != -1:
        if tag[:i] in tables:
            owner = tag[:i]
        i = tag.find(sep, i + 1)
    return owner


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
