"""Data-quality checks: Great Expectations suites over backup metadata and SQL-pushdown
consistency checks (fingerprints). Each check reports passed, failed or not_verified; a check
that could not run is never reported as passed."""

from bvh_ops.results import CheckResult, CheckStatus

__all__ = ["CheckResult", "CheckStatus"]
