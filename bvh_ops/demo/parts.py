"""How the demo's later steps run one part and print one line: a failed part is reported
(``failures``) and the step carries on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape


def run_part(console: Console, failures: list[str], name: str, title: str, fn: Callable[[], Any]) -> Any:
    console.print(f"[bold cyan]›[/] {escape(title)} …")
    t0 = time.monotonic()
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - the demo reports a failed part and carries on
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
        console.print(f"  [red]FAILED[/]: {escape(failures[-1])}")
        return None
    console.print(f"  [green]done[/] in {time.monotonic() - t0:.1f} s")
    return value


def say(console: Console, line: str, indent: int = 4) -> None:
    console.print(" " * indent + line, markup=False, highlight=False)
