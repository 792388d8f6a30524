"""PostgreSQL adapters: connections, the one subprocess wrapper for pg tools, advisory locks, LSN and
WAL names, catalog, fingerprints, tar scanning, embedded clusters."""
