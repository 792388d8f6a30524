"""Command sources: run an argument list (never a shell), its standard output to a temporary
file (memory stays bounded: a ``git bundle`` can be large), its standard error kept for the
report. The one place file sets start a process."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

from bvh_ops.children import die_with_parent

STDERR_KEEP = 2000


@dataclass
class Captured:
    output: BinaryIO | None  # positioned at 0; None when the command failed
    problem: str | None


def run_command(name: str, argv: list[str], timeout: float) -> Captured:
    out = tempfile.TemporaryFile(prefix="bvh-files-")
    err = tempfile.TemporaryFile(prefix="bvh-files-err-")
    try:
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout,
                                  preexec_fn=die_with_parent(), check=False)  # noqa: PLW1509 - see children.py
            failure = f"exit {proc.returncode}" if proc.returncode else None
        except subprocess.TimeoutExpired:
            failure = f"timed out after {timeout:g} s"
        except OSError as exc:
            failure = f"could not start {argv[0]!r}: {exc.strerror}"
        err.seek(0)
        stderr = err.read()[-STDERR_KEEP:].decode(errors="replace").strip()
    finally:
        err.close()
    if failure:
        out.close()
        return Captured(None, f"command {name}: {failure}" + (f": {stderr}" if stderr else ""))
    out.seek(0)
    return Captured(out, None)
