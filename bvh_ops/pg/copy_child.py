"""One table's COPY digest read in a process of its own (issue #19, goal 3): the drill's reads
during the restore must take only CPU the restore leaves idle, and with autogroups a nice value
counts only within its session (bvh_ops.priority). So the reading thread starts this module in a
new session, lowers that session's autogroup, and waits: psql (started here, in the same
session) and the hashing both run at that priority.

    python -m bvh_ops.pg.copy_child METHOD SCHEMA TABLE [BIN_DIR]   (the COPY statement on stdin)

The environment is the reader's (bvh_ops.pg.fingerprint.copy_env: pg_dump's settings, the dump's
encoding, the connection with its password: never in argv). Prints "backend <psql pid>
<backend pid> <client port>" once psql is connected, then "digest <rows> <digest>"; a failure
is one line on stderr and exit status 3."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from bvh_ops.errors import BvhOpsError
    from bvh_ops.pg.fingerprint import _psql_digest

    method, schema, table = argv[:3]
    bin_dir = Path(argv[3]) if len(argv) > 3 and argv[3] else None
    stmt = sys.stdin.buffer.read()

    def backend(child: int, pid: int, port: int) -> None:
        print(f"backend {child} {pid} {port}", flush=True)

    try:
        rows, digest = _psql_digest(stmt, schema, table, dict(os.environ), bin_dir, backend, method=method)
    except BvhOpsError as exc:
        print(str(exc), file=sys.stderr)
        return 3
    print(f"digest {rows} {digest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
