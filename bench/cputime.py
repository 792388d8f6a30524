"""Run a command and account for all of its processes, also those it leaves behind (a detached
archiver: pgBackRest's archive-async process, bvh-ops's WAL pusher): this process becomes their
subreaper (prctl PR_SET_CHILD_SUBREAPER), so orphans are re-parented here and their CPU time
lands in RUSAGE_CHILDREN once they exit and are reaped.

    python bench/cputime.py OUT.json -- command args...

OUT.json: {"seconds": wall time until the command itself exits, "cpu_seconds": user + system
of every process of the tree once all have exited, "max_rss_mb": the largest one's peak RSS,
"returncode"}. Linux only.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    out, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        raise SystemExit("usage: cputime.py OUT.json -- command ...")
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl: {os.strerror(ctypes.get_errno())}")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd)
    rc = proc.wait()
    seconds = time.monotonic() - t0
    while True:  # what the command left running, until it ends
        try:
            os.wait()
        except ChildProcessError:
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w") as fh:
        json.dump({"seconds": round(seconds, 3), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                   "max_rss_mb": round(usage.ru_maxrss / 1024, 1), "returncode": rc}, fh)
    return rc


if __name__ == "__main__":
    sys.exit(main())
