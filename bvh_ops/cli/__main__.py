"""`python -m bvh_ops.cli` (what a server-run command uses when the console script is absent)."""

from bvh_ops.cli.app import main

main()
