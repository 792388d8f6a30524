"""The ops database as an explicit component: ``bvh-ops opsdb start|stop|status``. start runs the
embedded cluster under state_dir/pg (or uses ops_database_url) and applies the migrations; stop
stops the embedded cluster; status shows it without starting anything."""

from __future__ import annotations

from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out

opsdb_app = typer.Typer(no_args_is_help=True, help="The ops database (drills, monitoring samples).")
app.add_typer(opsdb_app, name="opsdb")


@opsdb_app.command("start")
def start() -> None:
    """Start the embedded ops database (state_dir/pg; a no-op where it runs) and migrate its
    schema; with ops_database_url set, only migrate that database."""
    from bvh_ops.opsdb.database import embedded_cluster, ensure_database
    from bvh_ops.opsdb.migrations import migrate, schema_version
    from bvh_ops.pg.conn import connect

    settings = cli_settings()
    if settings.ops_database_url is not None:
        dsn, where = settings.ops_database_url.get_secret_value(), "ops_database_url"
    else:
        cluster = embedded_cluster(settings)
        cluster.start()
        dsn, where = ensure_database(cluster), f"127.0.0.1:{cluster.port} (data in {cluster.root})"
    with connect(dsn, autocommit=True) as conn:
        applied = migrate(conn)
        version = schema_version(conn)
    out.print(f"ops database running at {where}; schema version {version}"
              + (f" (applied {', '.join(map(str, applied))})" if applied else ""), markup=False)


@opsdb_app.command("stop")
def stop() -> None:
    """Stop the embedded ops database (with ops_database_url set there is nothing of ours to stop)."""
    from bvh_ops.opsdb.database import embedded_cluster

    settings = cli_settings()
    if settings.ops_database_url is not None:
        out.print("ops_database_url is set: that server is not managed by bvh-ops; nothing stopped")
        return
    cluster = embedded_cluster(settings)
    if cluster.initialized() and cluster.is_running():
        cluster.stop()
        out.print("ops database stopped")
    else:
        out.print("ops database was not running")


@opsdb_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON")] = False) -> None:
    """Show whether the ops database runs, its port, schema version and sample counts (never
    starts it); exit 0 running, 1 not running or unreachable."""
    from bvh_ops.opsdb.database import embedded_cluster, running_dsn
    from bvh_ops.opsdb.status import describe

    settings = cli_settings()
    cluster = None if settings.ops_database_url is not None else embedded_cluster(settings)
    info = describe(running_dsn(settings), cluster)
    if as_json:
        emit_json(info)
    else:
        for key, value in info.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            out.print(f"{key}: {'-' if value is None else value}", markup=False)
    raise typer.Exit(0 if info["running"] else 1)
