"""Run names: the target a run works on, without credentials. Its own module so a flow that
names its runs after the target need not import another flow (the daily backup's imports cost
the physical backup's CLI ~50-70 ms)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bvh_ops.config import Settings


def target_label(settings: Settings) -> str:
    """host:port/dbname of the target, without credentials (safe for run names and logs)."""
    from psycopg.conninfo import conninfo_to_dict

    if settings.database_url is None:
        return "unconfigured"
    p = conninfo_to_dict(settings.database_url.get_secret_value())
    return f"{p.get('dbname', '?')}@{p.get('host', 'localhost')}:{p.get('port', 5432)}"
