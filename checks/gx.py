"""A thin, lazily imported Great Expectations runner (the import costs ~4 s): an ephemeral
context with progress bars off, one pandas data source per frame, results mapped to
CheckResult. GX failing to run is reported as not_verified, never as passed."""

from __future__ import annotations

import logging
import threading
from typing import Any

from bvh_ops.results import CheckResult, CheckStatus

_context: Any = None
_lock = threading.Lock()


def warm_up() -> threading.Thread:
    """Import Great Expectations and build the context on a background thread (the import
    costs ~4 s of one core); ``context()`` waits for it if it is still running."""
    def run() -> None:
        try:
            context()
        except Exception:  # noqa: BLE001 - the checks report not_verified if GX cannot run
            pass

    t = threading.Thread(target=run, name="bvh-gx-warm-up", daemon=True)
    t.start()
    return t


def context() -> Any:
    global _context
    with _lock:
        return _build()


def _build() -> Any:
    global _context
    if _context is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
            logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        _context = gx.get_context(mode="ephemeral")
        _context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return _context


def validate_frame(suite_name: str, frame: Any, expectations: list[tuple[str, Any]]) -> list[CheckResult]:
    """Validate ``frame`` against named expectations; one CheckResult per expectation."""
    try:
        import great_expectations as gx

        ctx = context()
        source = ctx.data_sources.add_or_update_pandas(f"bvh-{suite_name}")
        asset = source.add_dataframe_asset(name=f"{suite_name}-frame")
        batch_def = asset.add_batch_definition_whole_dataframe(f"{suite_name}-batch")
        batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
        suite = gx.ExpectationSuite(name=suite_name)
        for _name, expectation in expectations:
            suite.add_expectation(expectation)
        result = batch.validate(suite)
    except Exception as exc:  # noqa: BLE001 - GX not running is a not_verified check, never a pass
        return [CheckResult(name, CheckStatus.NOT_VERIFIED, f"Great Expectations could not run: {exc}")
                for name, _ in expectations]
    out = []
    for (name, _), res in zip(expectations, result.results, strict=True):
        if res.exception_info and res.exception_info.get("raised_exception"):
            out.append(CheckResult(name, CheckStatus.NOT_VERIFIED, str(res.exception_info.get("exception_message"))))
        elif res.success:
            out.append(CheckResult(name, CheckStatus.PASSED, _describe(res)))
        else:
            out.append(CheckResult(name, CheckStatus.FAILED, _describe(res)))
    return out


def _describe(res: Any) -> str:
    r = res.result or {}
    if "unexpected_count" in r:
        sample = r.get("partial_unexpected_list") or []
        return f"{r.get('unexpected_count', 0)} unexpected of {r.get('element_count', '?')}" + (
            f": {sample[:5]}" if sample else "")
    if "observed_value" in r:
        return f"observed {r['observed_value']}"
    return ""
