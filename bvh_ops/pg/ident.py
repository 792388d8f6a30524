"""PostgreSQL identifiers in SQL text, pure."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """PostgreSQL's identifier quoting (always quoted: safe for any name)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    """schema.name, each quoted: what split_name (bvh_ops.logical.toc) reads back as (schema, name)."""
    return f"{quote_ident(schema)}.{quote_ident(name)}"
