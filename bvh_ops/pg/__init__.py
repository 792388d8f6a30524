"""PostgreSQL: connections, the one subprocess wrapper for pg tools, clusters, sample data."""
