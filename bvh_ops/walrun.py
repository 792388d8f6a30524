"""What archive_command and restore_command run: ``python -I -S …/bvh_ops/walrun.py push %p``
(bvh_ops.pg.cluster.wal_command), the `bvh-ops-wal` console script without ``site``.

PostgreSQL starts one process per WAL file. ``site`` (the site-packages scan, the .pth files,
the editable install's import finder) is two thirds of a bare interpreter's start-up CPU and the
fast paths use none of it: they import only the standard library and bvh_ops, found here — the
package this file lies in, appended to sys.path (after the standard library). ``-I``: no PYTHON*
variables, no user site, no script directory on sys.path. bvh_ops.walcmd loads ``site`` itself
before the paths that need third-party packages (settings, storage, encryption).
"""

import sys

sys.path.append(__file__.rsplit("/", 2)[0])

from bvh_ops.walcmd import main  # noqa: E402

sys.exit(main())
