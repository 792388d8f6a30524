"""The rotation rule for the platform's own log files (pure). Renaming the file the platform
writes loses nothing and repeats nothing whatever has been collected of it: the collector follows
every file by its inode (device:inode) and reads a renamed file on from its stored offset — so a
file past its size is rotated at once, even while it is written (a rule that waited for the
collector to reach its end never found a busy file at rest). Deleting is another matter: a
rotated file is deleted only once collected to its end, and never one of the newest ``keep``.
A rotated file whose writer stopped mid-line (killed, a full disk) never reaches its end: the
collector leaves a line without its newline for the writer to finish. Once such a file is beyond
the newest ``keep`` and has not been written for SEAL_IDLE_SECONDS, nothing will finish it: it is
sealed — that unfinished line kept in the quarantine and the file counted as collected — and
then deleted (before, it was kept for ever, and the disk filled one rotation at a time).
copytruncate is refused: lines written between its copy and its truncate exist only in the copy,
a new inode the collector would read from 0 (duplicates) or not at all (loss). Carried out by
bvh_ops.logs.rotate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bvh_ops.logs.offsets import Stored

# A rotated file's unfinished last line is final once the file has not been written for this long.
SEAL_IDLE_SECONDS = 600.0


@dataclass(frozen=True)
class LogFile:
    path: str
    file_id: str     # device:inode, as the collector knows it
    size: int
    unfinished_tail: bool = False  # from its collected offset on: only a line without its end
    idle_seconds: float = 0.0      # since it was last written


@dataclass(frozen=True)
class RotationStep:
    action: str      # rotate | seal | delete | wait
    path: str
    reason: str


def _collected(f: LogFile, stored: Mapping[str, Stored]) -> int:
    s = stored.get(f.file_id)
    return 0 if s is None else min(s.offset, f.size)


def rotation_plan(active: LogFile | None, rotated: list[LogFile], stored: Mapping[str, Stored], *,
                  max_bytes: int, keep: int, method: str = "rename") -> list[RotationStep]:
    """What to do with a platform log: rotate the active file past ``max_bytes`` (saying how much
    of it is still to be collected, from its new name); delete the rotated files beyond the newest
    ``keep`` only when collected to their end, else wait, saying how much is not yet collected —
    or, when all that is left of one is an unfinished line not written for SEAL_IDLE_SECONDS,
    seal it and then delete it. ``rotated`` newest first; ``stored`` is the source's
    ops.log_offsets by file_id."""
    if method != "rename":
        return [RotationStep("wait", active.path if active else "-",
                             f"{method} refused: lines written between the copy and the truncate would be lost or "
                             "read twice; rotate by rename (the collector follows the inode)")]
    steps = []
    if active is not None and active.size >= max_bytes:
        behind = active.size - _collected(active, stored)
        steps.append(RotationStep("rotate", active.path, f"{active.size} bytes >= {max_bytes}, " + (
            f"{behind} bytes still to collect (read on from its new name: the collector follows the inode)"
            if behind else "collected to its end")))
    for f in rotated[keep:]:
        behind = f.size - _collected(f, stored)
        if not behind:
            steps.append(RotationStep("delete", f.path, f"beyond the newest {keep}, collected to its end"))
        elif f.unfinished_tail and f.file_id in stored and f.idle_seconds >= SEAL_IDLE_SECONDS:
            steps.append(RotationStep("seal", f.path, f"its last {behind} bytes are a line without its end, not "
                                                      f"written for {f.idle_seconds:.0f} s: the writer stopped "
                                                      "mid-line; kept in the quarantine"))
            steps.append(RotationStep("delete", f.path, f"beyond the newest {keep}, collected to its end once sealed"))
        elif f.unfinished_tail and f.file_id in stored:
            steps.append(RotationStep("wait", f.path, f"{behind} bytes not yet collected: a line without its end, "
                                                      f"sealed once the file is {SEAL_IDLE_SECONDS:.0f} s unwritten"))
        else:
            steps.append(RotationStep("wait", f.path, f"{behind} bytes not yet collected"))
    return steps
