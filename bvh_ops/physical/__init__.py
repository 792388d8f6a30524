"""Physical backups: pg_basebackup full and incremental chains, restore and point-in-time recovery (targets in target)."""
