"""Which of the runbook's categories a record belongs to (pure). In order: the record's own
``category``; else its source's ``category``; else the first matching rule — the configured
``[[log_rules]]`` first, then DEFAULT_RULES —; else ``log_default_category``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bvh_ops.logs.record import Record


@dataclass(frozen=True)
class Rule:
    """Records whose event matches ``event`` (a glob), whose level is ``level`` (when given) and
    whose message matches ``message`` (a regular expression, searched; when given) go to ``category``."""

    category: str
    event: str = "*"
    level: str | None = None
    message: str | None = None

    def matches(self, record: Record) -> bool:
        if not fnmatch.fnmatchcase(record.event, self.event):
            return False
        if self.level is not None and record.level != self.level:
            return False
        return self.message is None or re.search(self.message, record.message) is not None


# What PostgreSQL's log (and a platform line without a category) is, by default.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("security", event="pg.auth_failed"),
    Rule("security", event="pg.connection_*"),
    Rule("security", event="pg.disconnection"),
    Rule("security", event="auth.*"),
    Rule("security", message=r"permission denied|must be superuser"),
    Rule("performance", event="pg.slow_statement"),
    Rule("performance", event="pg.checkpoint"),
    Rule("performance", event="perf.*"),
    Rule("audit", event="audit.*"),
    Rule("application", event="pg.error"),
    Rule("debug", level="debug"),
)


def classify(record: Record, *, source_category: str | None = None, rules: Sequence[Rule] = (),
             default: str = "application") -> Record:
    """``record`` with its category decided (unchanged when it has one)."""
    if record.category:
        return record
    if source_category:
        return replace(record, category=source_category)
    for rule in (*rules, *DEFAULT_RULES):
        if rule.matches(record):
            return replace(record, category=rule.category)
    return replace(record, category=default)
