"""`bvh-ops-wal`: lean entry points for PostgreSQL's archive_command and restore_command.

    archive_command = 'BVH_OPS_CONFIG=/etc/bvh-ops/archive.toml bvh-ops-wal push %p'
    restore_command = 'BVH_OPS_CONFIG=…/bvh_ops_recovery/bvh-ops.toml bvh-ops-wal fetch %f %p'

PostgreSQL starts one process per WAL file, so start-up is the cost: this module imports only
what the call needs (no CLI framework), and what we configure runs it without ``site``
(``python -I -S …/bvh_ops/walrun.py``: bvh_ops.pg.cluster.wal_command); the paths that need
third-party packages load ``site`` first (_site). ``fetch`` also reads ahead: when the recovery directory
has a ``prefetch/`` spool (the restore creates one), the first fetch starts a detached
prefetcher that downloads, decrypts and verifies the next segments in parallel into the spool;
later fetches that find their segment there only copy it (a few milliseconds; the newest one stays,
PostgreSQL asks for the last segment again after reaching its target). Exit codes
follow PostgreSQL's contract: 0 delivered, 1 not in the archive (end of recovery), 126 for
anything else (damaged, unreadable, store down), which makes PostgreSQL abort recovery instead
of promoting early. ``push`` leaves the work to the background pusher of its ``pg_wal``
(bvh_ops.wal.pusher, as pgBackRest's archive-async) and reports the pusher's verdict on its file;
it exits non-zero on any failure so PostgreSQL keeps the segment (also when a failover fenced
this cluster's timeline: bvh_ops.wal.fence).

A standby (`bvh-ops standby create`: its spool options say ``"standby": true``) asks for the
next segment every few seconds until it is archived: there "not in the archive" is exit 1 with
no log line, and each fetch records the standby's progress (``standby-progress.json``) for
`bvh-ops standby status`. The recovery directory stays until promotion (recovery_end_command).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself costs milliseconds per call
if TYPE_CHECKING:
    from pathlib import Path

# Only os and sys at the top: archive_command runs this once per WAL file, and the fast path
# (its file already archived by the pusher) must not pay for imports it does not use.

PREFETCH_DIR = "prefetch"
PIDFILE = ".prefetcher.pid"
# The launcher PostgreSQL runs (python -I -S walrun.py) and the pusher and prefetcher are started
# with: this package's code wherever it lies, whatever PYTHONPATH the caller had.
LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "walrun.py")


_site_loaded = False


def _site() -> None:
    """Third-party packages (settings, storage, encryption) for the paths that need them: the
    launcher starts the interpreter without ``site``, which the fast paths do not use."""
    global _site_loaded
    if sys.flags.no_site and not _site_loaded:
        import site

        site.main()
        _site_loaded = True


def _detached(*args: str):
    """A detached ``bvh-ops-wal`` process (the pusher, the prefetcher) running this code."""
    import subprocess

    return subprocess.Popen([sys.executable, "-I", "-S", LAUNCHER, *args], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")


def _spool() -> Path | None:
    from pathlib import Path

    cfg = os.environ.get("BVH_OPS_CONFIG")
    if not cfg:
        return None
    d = Path(cfg).parent / PREFETCH_DIR
    return d if d.is_dir() else None


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _kick(spool: Path, name: str) -> None:
    """Start a detached prefetcher for the segments after ``name`` unless one is running, or
    there is nothing for it to do: the next ones are all in the spool already, or (file://)
    the first one missing from it is not archived yet. A prefetcher is a Python process of its
    own; started for nothing, it takes CPU from the recovery it is meant to speed up."""
    from bvh_ops.pg.lsn import SEGMENT

    if not SEGMENT.match(name):
        return
    try:
        pid = int((spool / PIDFILE).read_text())
        if _alive(pid):
            return
    except (FileNotFoundError, ValueError):
        pass
    following = _following(spool, name)
    missing = next((n for n in following if not (spool / n).is_file()), None)
    if following and (missing is None or _surely_missing(missing)):
        return
    _detached("prefetch", name)


def _following(spool: Path, name: str) -> list[str]:
    """The ``depth`` segment names after ``name`` on its timeline (the prefetcher's window)."""
    import json

    from bvh_ops.pg.lsn import parse_segment, segment_name

    try:
        opts = json.loads((spool / "prefetch.json").read_text())
        seg_size, depth = int(opts["segment_size"]), int(opts.get("depth", 8))
    except (OSError, ValueError, KeyError):
        return []
    tl, segno = parse_segment(name, seg_size) or (0, 0)
    return [segment_name(tl, segno + i, seg_size) for i in range(1, depth + 1)] if tl else []


def _deliver(spool: Path, name: str, dest: str) -> None:
    """A spooled segment to PostgreSQL: copied, not moved, so the spool keeps the newest one
    delivered — at the end of recovery PostgreSQL asks for the last segment again, and that
    second request is then a copy too instead of a download. Earlier segments of the same
    timeline are dropped from the spool (recovery has passed them)."""
    import shutil
    from pathlib import Path


    tmp = Path(dest).with_name(f".{Path(dest).name}.bvh-tmp")
    shutil.copyfile(spool / name, tmp)
    os.replace(tmp, dest)
    _drop_passed(spool, name)


def _drop_passed(spool: Path, name: str) -> None:
    """Spooled segments of ``name``'s timeline before it (recovery has passed them; ``name``
    itself stays: it may be asked for again). Segment names are fixed-width hex, so the name
    order is the WAL order."""
    from bvh_ops.pg.lsn import SEGMENT

    for old in spool.iterdir():
        if SEGMENT.match(old.name) and old.name[:8] == name[:8] and old.name < name:
            old.unlink(missing_ok=True)


def _expected_system(spool: Path | None) -> str | None:
    """The cluster a restore recovers (written by the restore into the spool's options)."""
    import json

    if spool is None:
        return None
    try:
        return json.loads((spool / "prefetch.json").read_text()).get("system_identifier")
    except (OSError, ValueError):
        return None


def _standby(spool: Path | None) -> bool:
    """A standby built by `bvh-ops standby create` (its spool options say so)."""
    import json

    if spool is None:
        return False
    try:
        return bool(json.loads((spool / "prefetch.json").read_text()).get("standby"))
    except (OSError, ValueError):
        return False


def _progress(spool: Path | None, name: str, *, delivered: bool) -> None:
    """A standby's replay progress as wal-fetch sees it (``standby-progress.json`` beside the
    spool, read by `bvh-ops standby status`): the newest segment delivered, and the segment it
    waits for (asked for, not archived yet) since when. Never fails the fetch."""
    import json

    from bvh_ops.pg.lsn import SEGMENT

    if spool is None or not SEGMENT.match(name) or not _standby(spool):
        return
    from datetime import UTC, datetime

    path = spool.parent / "standby-progress.json"
    now = datetime.now(UTC).isoformat()
    try:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = {}
        if delivered:
            if name >= doc.get("delivered", ""):
                doc.update(delivered=name, delivered_at=now)
            if doc.get("waiting_for") and doc["waiting_for"] <= name:
                doc.pop("waiting_for", None)
                doc.pop("waiting_since", None)
        else:
            if doc.get("waiting_for") != name:
                doc.update(waiting_for=name, waiting_since=now)
            doc["checked_at"] = now
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)
    except OSError:
        pass


def _surely_missing(name: str) -> bool:
    """In a file:// repository, is ``name``'s index entry (wal-push's commit point) absent?
    Answered from the config file with tomllib and one stat: a standby asks for the next segment
    every few seconds, and the full settings machinery costs far more than the answer."""
    from pathlib import Path

    from bvh_ops.pg.lsn import WAL_FILE

    cfg = os.environ.get("BVH_OPS_CONFIG")
    if not cfg or not WAL_FILE.match(name):
        return False
    try:
        import tomllib

        with open(cfg, "rb") as fh:
            repo = tomllib.load(fh).get("repository", "")
    except (OSError, ValueError):
        return False
    if not isinstance(repo, str) or not repo.startswith("file://"):
        return False
    return not (Path(repo[len("file://"):]) / "wal" / name[:8] / f"{name}.json").exists()


def fetch(name: str, dest: str) -> int:
    from bvh_ops.pg.lsn import SEGMENT

    spool = _spool()
    if spool is not None and SEGMENT.match(name) and (spool / name).is_file():
        _deliver(spool, name, dest)  # verified by the prefetcher (or the restore) before it appeared here
        _progress(spool, name, delivered=True)
        _kick(spool, name)
        return 0
    if _surely_missing(name):
        if _standby(spool):
            _progress(spool, name, delivered=False)
        else:
            _err(f"wal-fetch: WAL file {name} is not in the archive")
        return 1
    _site()
    from bvh_ops.config import load_settings
    from bvh_ops.errors import NotFound
    from bvh_ops.wal.store import wal_fetch

    try:
        wal_fetch(load_settings(), name, dest, system_identifier=_expected_system(spool))
    except NotFound as exc:
        if _standby(spool):
            # A standby asks for the next segment (and the next timeline's history) every
            # wal_retrieve_retry_interval until it is archived: "not yet" is its normal state,
            # recorded for `standby status`, not an error line every few seconds.
            _progress(spool, name, delivered=False)
            return 1
        _err(f"wal-fetch: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - anything but "not archived" must abort recovery
        _err(f"error: {exc} (recovery aborted: wal-fetch cannot deliver {name})")
        return 126
    if spool is not None:
        _progress(spool, name, delivered=True)
        _kick(spool, name)
    return 0


def prefetch(after: str) -> int:
    """Fetch the ``depth`` segments after ``after`` (same timeline) into the spool, in parallel."""
    import json

    spool = _spool()
    if spool is None:
        return 0
    pidfile = spool / PIDFILE
    try:
        fd = os.open(pidfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            if _alive(int(pidfile.read_text())):
                return 0
        except ValueError:
            pass
        pidfile.unlink(missing_ok=True)
        return prefetch(after)
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        from concurrent.futures import ThreadPoolExecutor

        _site()
        from bvh_ops.config import load_settings
        from bvh_ops.errors import BvhOpsError
        from bvh_ops.pg.lsn import DEFAULT_SEGMENT, parse_segment, segment_name
        from bvh_ops.wal.store import wal_fetch

        opts = json.loads((spool / "prefetch.json").read_text())
        seg_size, depth = int(opts.get("segment_size", DEFAULT_SEGMENT)), int(opts.get("depth", 8))
        settings = load_settings()
        tl, segno = parse_segment(after, seg_size)
        names = [segment_name(tl, segno + i, seg_size) for i in range(1, depth + 1)]
        _drop_passed(spool, after)

        def one(n: str) -> bool:
            if (spool / n).exists():
                return True
            try:
                wal_fetch(settings, n, str(spool / n), system_identifier=opts.get("system_identifier"))
                return True
            except BvhOpsError:
                return False  # not archived (yet) or damaged: the foreground fetch will say which

        with ThreadPoolExecutor(max_workers=int(opts.get("workers", 2))) as pool:
            list(pool.map(one, names))
    except Exception:  # noqa: BLE001 - prefetching is an optimisation; fetch works without it
        return 0
    finally:
        pidfile.unlink(missing_ok=True)
    return 0


def cleanup() -> int:
    """recovery_end_command: remove the recovery directory the restore wrote (its config, the
    identity copy, S3 credentials, the read-ahead spool) the moment recovery ends, also when
    nobody is watching the server start. Only a directory named ``bvh_ops_recovery`` is removed."""
    from pathlib import Path

    cfg = os.environ.get("BVH_OPS_CONFIG")
    if not cfg:
        return 0
    rdir = Path(cfg).parent
    if rdir.name != "bvh_ops_recovery":
        _err(f"error: {rdir} is not a recovery directory: not removing it")
        return 0  # never fail the end of recovery over this
    remove_recovery_dir(rdir)
    return 0


def remove_recovery_dir(rdir: Path) -> None:
    """A restore's recovery directory: its prefetcher ended, the identity copy overwritten, then
    the directory removed (also what maintenance does with one left by a restore that died)."""
    import shutil
    import signal

    if rdir.name != "bvh_ops_recovery":
        raise ValueError(f"{rdir} is not a recovery directory")
    try:
        pid = int((rdir / PREFETCH_DIR / PIDFILE).read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    identity = rdir / "identity.key"
    if identity.exists():
        # Overwrite before unlinking: the key must not linger in the data directory's blocks
        # any longer than the file system forces.
        try:
            size = identity.stat().st_size
            with open(identity, "r+b") as fh:
                fh.write(b"\0" * size)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            pass
    shutil.rmtree(rdir, ignore_errors=True)


PUSH_WAIT = 60.0  # seconds a call waits for the pusher's verdict on its file (then PostgreSQL retries)


def _push_spool() -> str | None:
    """``<state_dir>/archive-spool`` (BVH_OPS_STATE_DIR, or the config file PostgreSQL passes:
    the fast path must not pay for the full settings machinery)."""
    if os.environ.get("BVH_OPS_STATE_DIR"):
        return os.path.join(os.environ["BVH_OPS_STATE_DIR"], "archive-spool")
    cfg = os.environ.get("BVH_OPS_CONFIG")
    if not cfg:
        return None
    try:
        with open(cfg, "rb") as fh:
            text = fh.read()
    except OSError:
        return None
    state = _plain_state_dir(text)
    if state is None:
        try:
            import tomllib

            state = tomllib.loads(text.decode()).get("state_dir")
        except (ValueError, UnicodeDecodeError):
            return None
    return os.path.join(state, "archive-spool") if isinstance(state, str) and state else None


def _plain_state_dir(text: bytes) -> str | None:
    """``state_dir`` when the config file states it the plain way — one top-level line
    ``state_dir = "path"`` (no escapes) or ``'path'``, in a file without multi-line strings —
    else None and tomllib reads the file (importing it costs more than the rest of a call).
    A file this reading gets wrong would only put the spool elsewhere, never archive
    differently: the pusher reads its settings with the full loader."""
    if b'"""' in text or b"'''" in text:
        return None
    found = []
    for raw in text.split(b"\n"):
        line = raw.strip()
        if line.startswith(b"["):
            break  # a table: top-level keys end here
        key, eq, value = line.partition(b"=")
        if not eq or key.strip().strip(b"\"'") != b"state_dir":
            continue
        value = value.strip()
        quote = value[:1]
        if quote not in (b'"', b"'"):
            return None
        end = value.find(quote, 1)
        rest = value[end + 1:].strip() if end > 0 else b"#"
        if end < 0 or (rest and not rest.startswith(b"#")) or (quote == b'"' and b"\\" in value[:end]):
            return None
        found.append(value[1:end])
    try:
        return found[0].decode() if len(found) == 1 else None
    except UnicodeDecodeError:
        return None


def _digest(path: str, alg: str) -> str:
    """The file's ``alg`` digest, as the pusher's verdict names it. BLAKE3 (a third-party
    package) is imported from the interpreter's own site-packages without ``site``."""
    if alg == "sha256":
        import hashlib

        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    if alg != "blake3":
        return ""  # a verdict this call cannot check: archived here instead
    try:
        from blake3 import blake3
    except ImportError:
        # A virtual environment's packages (``site`` would find them through its pyvenv.cfg).
        purelib = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "lib",
                               f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
        if purelib not in sys.path:
            sys.path.append(purelib)  # after the standard library and bvh_ops, as ``site`` puts it
        try:
            from blake3 import blake3
        except ImportError:
            _site()
            from blake3 import blake3
    h = blake3()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def push(path: str) -> int:
    """Archive ``path`` (archive_command). A file PostgreSQL has marked ready is archived by the
    pusher of its ``pg_wal`` (bvh_ops.wal.pusher: started here when none runs, it archives the
    other ready files ahead, in order); this call waits for the pusher's verdict and reports
    success only when the pusher committed exactly the bytes of the file as it is now. Anything
    else — no spool configured, a file not marked ready — is archived here and now."""
    import time

    spool = _push_spool()
    name = os.path.basename(path)
    wal_dir = os.path.dirname(os.path.abspath(path))
    if spool is None or not os.path.exists(os.path.join(wal_dir, "archive_status", f"{name}.ready")):
        return _push_now(path)
    from bvh_ops.wal import pusher

    d = pusher.spool_dir(spool, wal_dir)
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
    except OSError:
        return _push_now(path)  # no writable spool: no pusher
    ident = pusher.config_ident()
    deadline = time.monotonic() + PUSH_WAIT
    child, starts, delay, checked, woken = None, 0, 0.002, 0.0, False
    while time.monotonic() < deadline:
        found = pusher.verdict(d, name, ident)
        if found is None and not woken:
            pusher.wake(d)  # an idle pusher sleeps until a call needs it
            woken = True
        if found is not None and found[0] == "ok":
            alg, digest = pusher.verdict_digest(found[1])
            if digest and digest == _digest(path, alg):  # a verdict without a digest proves nothing
                return 0
            _unlink(os.path.join(d, name + pusher.OK))
            return _push_now(path)  # not what is here now: archive (or refuse) it here
        if found is not None:
            _unlink(os.path.join(d, name + pusher.ERROR))
            code, _, message = found[1].partition("\n")
            _err(f"error: {message}")
            return int(code)
        now = time.monotonic()
        if now - checked > 0.1 and (child is None or child.poll() is not None):
            checked = now
            other = pusher.running(d, wal_dir)
            if other is None:
                if starts == 3:
                    return _push_now(path)  # the pusher keeps ending without a verdict
                child = _start_pusher(d, wal_dir, name)
                starts += 1
            elif other and other != ident:
                pusher.request_stop(d, other)  # its configuration is not ours any more
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    _err(f"error: no verdict on {name} from the WAL pusher after {PUSH_WAIT:.0f} s (PostgreSQL will ask again)")
    return 1


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _start_pusher(d: str, wal_dir: str, name: str):
    return _detached("pusher", d, wal_dir, name)


def _push_now(path: str) -> int:
    """Archive one file in this process (no pusher)."""
    _site()
    from bvh_ops.config import load_settings
    from bvh_ops.errors import BvhOpsError
    from bvh_ops.wal.store import wal_push

    try:
        wal_push(load_settings(), path)
    except (BvhOpsError, OSError) as exc:
        _err(f"error: {exc}")
        return getattr(exc, "exit_code", 1) or 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if len(args) == 2 and args[0] == "push":
            return push(args[1])
        if len(args) == 3 and args[0] == "fetch":
            return fetch(args[1], args[2])
        if len(args) == 2 and args[0] == "prefetch":
            return prefetch(args[1])
        if len(args) == 4 and args[0] == "pusher":
            _site()
            from bvh_ops.wal.pusher import run

            return run(args[1], args[2], args[3])
        if args == ["cleanup"]:
            return cleanup()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for PostgreSQL's log, never a traceback
        _err(f"error: {type(exc).__name__}: {exc}")
        return 1 if args[:1] != ["fetch"] else 126
    _err("usage: bvh-ops-wal push %p | bvh-ops-wal fetch %f %p")
    return 2


if __name__ == "__main__":
    sys.exit(main())
