"""Log collection (#13): every 5 minutes, each configured [[log_sources]] read on from its
stored offsets into the ops database's hot store (classified, pseudonymised where configured,
malformed lines quarantined). The run fails — after every source had its turn — when a file
could not be read, so the failure notification reaches someone."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from bvh_ops.config import load_settings
from bvh_ops.errors import BvhOpsError, ConfigError
from tasks.common import retrying
from tasks.log_tasks import collect_log_source


class CollectionIncomplete(BvhOpsError):
    """Some files could not be read; the others were collected."""


@flow(name="collect-logs", flow_run_name="collect-logs", retries=0, log_prints=False)
def collect_logs(sources: list[str] | None = None) -> dict[str, Any]:
    """Collect ``sources`` (names; default every configured one); returns
    ``{sources: [...], records, quarantined, errors, seconds}``."""
    settings = load_settings()
    names = sources if sources is not None else [s.name for s in settings.log_sources]
    if not names:
        raise ConfigError("no log sources: add [[log_sources]] tables (name, path, format) to bvh-ops.toml")
    t0 = time.monotonic()
    task = retrying(collect_log_source, settings)
    done = [task(settings, name) for name in names]
    doc = {"sources": done, "records": sum(s["records"] for s in done),
           "quarantined": sum(s["quarantined"] for s in done), "errors": sum(s["errors"] for s in done),
           "seconds": round(time.monotonic() - t0, 3)}
    if doc["errors"]:
        bad = [m for s in done for m in s["messages"] if "unreadable" in m or "failed" in m]
        raise CollectionIncomplete(f"{doc['errors']} file(s) could not be read ({bad[0]}); the rest was collected")
    return doc


if __name__ == "__main__":
    collect_logs()
