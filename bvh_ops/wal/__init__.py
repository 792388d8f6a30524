"""Archived WAL: the store (push, fetch, index entries) and the archive as a whole (continuity, pruning)."""
