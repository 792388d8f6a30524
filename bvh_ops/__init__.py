"""bvh-ops: backups that can be proven and recovery that has been rehearsed, for the lottery platform.

This package is the domain and its adapters; it imports no Prefect, so the CLI, the flows and the
tests all share it.
"""

__version__ = "0.1.0"
