"""One table's COPY digest read in a process of its own (issue #19, goal 3): the drill's reads
during the restore must take only CPU the restore leaves idle, and with autogroups a nice value
counts only within its session (bvh_ops.priority). So the reading thread starts this module in a
new session, lowers that session's autogroup, and waits: psql (started here, in the same
session) and the hashing both run at that priority.

    python -m bvh_ops.pg.copy_child METHOD SCHEMA TABLE [BIN_DIR]   (the COPY statement on stdin)
    python -m bvh_ops.pg.copy_child METHOD SCHEMA TABLE --fifo PATH UID   (a COPY ... TO 'PATH')

The environment is the reader's (bvh_ops.pg.fingerprint.copy_env: pg_dump's settings, the dump's
encoding, the connection with its password: never in argv). Prints "backend <psql pid>
<backend pid> <client port>" once psql is connected, then "digest <rows> <digest>"; a failure
is one line on stderr and exit status 3. With --fifo there is no psql: this process connects
(the same environment), prints "backend 0 <backend pid> <client port>", makes the FIFO PATH
(handed to the server's OS user UID, empty: ours), runs the statement and hashes what the
backend writes into it (bvh_ops.pg.fingerprint.fifo_read)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from bvh_ops.errors import BvhOpsError
    from bvh_ops.pg.fingerprint import _psql_digest

    method, schema, table = argv[:3]
    stmt = sys.stdin.buffer.read()

    def backend(child: int, pid: int, port: int) -> None:
        print(f"backend {child} {pid} {port}", flush=True)

    try:
        if argv[3:4] == ["--fifo"]:
            rows, digest = _through_fifo(stmt, argv[4], int(argv[5]) if argv[5] else None, method, schema, table,
                                         backend)
        else:
            bin_dir = Path(argv[3]) if len(argv) > 3 and argv[3] else None
            rows, digest = _psql_digest(stmt, schema, table, dict(os.environ), bin_dir, backend, method=method)
    except BvhOpsError as exc:
        print(str(exc), file=sys.stderr)
        return 3
    print(f"digest {rows} {digest}", flush=True)
    return 0


def _through_fifo(stmt: bytes, path: str, uid: int | None, method: str, schema: str, table: str,
                  backend) -> tuple[int, str]:
    import psycopg

    from bvh_ops.pg.conn import translate
    from bvh_ops.pg.fingerprint import fifo_read

    what = f"table {schema}.{table}"
    try:
        conn = psycopg.connect("", autocommit=True)  # libpq's environment: the reader's (copy_env)
    except psycopg.Error as exc:
        raise translate(exc, what) from None
    with conn:
        backend(0, conn.info.backend_pid, _port(conn))
        return fifo_read(conn, stmt, path, uid, method=method, what=what)


def _port(conn) -> int:
    try:
        return int(conn.execute("SELECT coalesce(inet_client_port(), 0)").fetchone()[0])
    except Exception:  # noqa: BLE001 - 0, as psql's path reports a Unix socket: the title alone then says
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
