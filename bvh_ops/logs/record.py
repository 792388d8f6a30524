"""One log record as bvh-ops keeps it (``ops.log_records``), whatever its source format."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CATEGORIES = ("security", "application", "performance", "audit", "debug")
LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Record:
    at: datetime                       # UTC
    category: str                      # one of CATEGORIES
    source: str                        # the [[log_sources]] name
    level: str = "info"                # one of LEVELS (PostgreSQL's severities mapped onto them)
    event: str = ""                    # "auth.login_failed", "wallet.deposit", "pg.connection", ...
    message: str = ""                  # free text (PostgreSQL's message), may be empty
    fields: dict[str, Any] = field(default_factory=dict)   # everything else of the line
    file_id: str = ""                  # provenance: device:inode of the file it came from
    file_offset: int = 0               # byte offset of the line in that file
