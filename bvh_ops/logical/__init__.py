"""Logical backups: pg_dump in an exported snapshot with per-table fingerprints, pg_restore back (TOC planning in toc)."""
