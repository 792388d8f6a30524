"""A warm standby built from the repository, and its status.

    create ─ a physical restore (chain, pg_combinebackup, pg_verifybackup) with standby.signal:
             restore_command = wal-fetch keeps asking for the next segment as it is archived
             (a "not yet" is quiet and recorded, not an error), recovery_end_command removes
             the recovery directory (identity copy, credentials) at promotion and not before
           ─ the promoted primary's archiving configured now (archive_mode = on only archives
             once promoted): bvh-ops-wal push into the same repository, public keys only,
             from ``DIR.bvh-standby/``, beside the data directory (never inside it: a base
             backup of the new primary must not carry it)
           ─ ``DIR.bvh-standby/standby.json`` records where it came from (repository, backup,
             cluster, port): what `standby status` and `failover` read.
    status ─ running? in archive recovery (pg_controldata, no connection: hot_standby stays off
             while the identity copy exists)? replayed segment (wal-fetch's progress) against
             the newest archived one: lag in segments, bytes and seconds.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, NotFound
from bvh_ops.pg.cluster import (
    _as_root,
    archiving_conf,
    chown_tree_to_server,
    free_port,
    postmaster_alive,
    prepare_server_user,
    server_env,
)
from bvh_ops.pg.lsn import parse_segment
from bvh_ops.physical.restore import (
    RECOVERY_DIR,
    archive_owner,
    restore_physical,
    write_aws_credentials,
    write_wal_config,
)
from bvh_ops.standby.lag import Lag, measure_lag

SIDECAR_SUFFIX = ".bvh-standby"
META = "standby.json"
META_FORMAT = "bvh-ops-standby-1"
PROGRESS = "standby-progress.json"


def sidecar(data: Path) -> Path:
    """``DIR.bvh-standby``: the standby's record and the promoted primary's archive config."""
    data = Path(data).resolve()
    return data.parent / f"{data.name}{SIDECAR_SUFFIX}"


def repository_settings(settings: Settings, source: str) -> Settings:
    """The settings whose repository the standby follows: the primary's or the replica's."""
    return settings.for_source(source)


def _write_archive_config(settings: Settings, side: Path) -> Path:
    """The promoted primary's archive_command configuration: the repository it was built from,
    the public keys (copied: the server's OS user must read them), its own state directory.
    No private key, no password."""
    pubs = []
    for i, pub in enumerate(settings.require_recipients()):
        dest = side / f"recipient-{i}.pub"
        shutil.copyfile(pub, dest)
        dest.chmod(0o644)
        pubs.append(str(dest))
    (side / "state").mkdir(mode=0o700, exist_ok=True)
    # archive_command of this standby once promoted (bvh-ops-wal push): public keys only.
    return write_wal_config(settings, side / "archive.toml", side / "state", [f"recipients = {json.dumps(pubs)}"])


def create_standby(settings: Settings, target_dir: Path, *, source: str = "primary", backup: str = "latest",
                   port: int | None = None, start: bool = False, archive: bool = True, os_user: str | None = None,
                   timeout: float = 3600.0, now: datetime | None = None) -> dict:
    """Build a warm standby in ``target_dir`` from the ``source`` repository (primary or
    replica). ``archive``: once promoted it archives into that repository (a failover drill
    passes False: a drill must not write a timeline into the repository)."""
    rs = repository_settings(settings, source)
    data = Path(target_dir).resolve()
    side = sidecar(data)
    if side.exists():
        raise BvhOpsError(f"{side} exists: {data} already is (or was) a standby; remove both to build a new one")
    port = port or free_port()
    user = (os_user or archive_owner(rs)) if _as_root() else None
    side.mkdir(parents=True, mode=0o700)
    try:
        overrides = {}
        if archive:
            cfg = _write_archive_config(rs, side)
            conf = archiving_conf(cfg, aws_credentials_file=write_aws_credentials(rs, side / "aws-credentials"))
            overrides = {k: conf[k] for k in ("archive_mode", "archive_command", "archive_timeout")}
        if user:
            prepare_server_user(side.parent, user=user)
            chown_tree_to_server(side, user=user)
        report = restore_physical(rs, backup, data, start=start, port=port, archive=archive,
                                  conf_overrides=overrides, standby=True, os_user=user, recovery_timeout=timeout)
        from bvh_ops.repository.open import open_repository

        repo, _ = open_repository(rs, check=False)
        m = repo.trusted_manifest(report.backup_id)
        from bvh_ops.pg.physinfo import PhysicalInfo
        from bvh_ops.pg.tools import embedded_bin_dir, matching_bin_dir

        info = PhysicalInfo.of(m)
        bin_dir = matching_bin_dir(m.server_version_num // 10000, settings.pg_bin_dir) or embedded_bin_dir()
        meta = {"format": META_FORMAT, "source": source, "repository": rs.require_repository(),
                "backup_id": report.backup_id, "chain": report.chain, "system_identifier": m.system_identifier,
                "timeline": info.timeline, "segment_size": info.segment_size, "port": report.port,
                "bin_dir": str(bin_dir), "archive_config": str(side / "archive.toml") if archive else None,
                "os_user": report.os_user, "created_at": (now or datetime.now(UTC)).isoformat(),
                "started": report.started, "seconds": {k: round(v, 3) for k, v in report.seconds.items()}}
        (side / META).write_text(json.dumps(meta, indent=1) + "\n")
        return {**meta, "data_dir": str(data)}
    except BaseException:
        shutil.rmtree(side, ignore_errors=True)
        raise


def load_meta(data: Path) -> dict:
    path = sidecar(data) / META
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"{data} is not a standby built by `bvh-ops standby create` (no {path})") from None
    except ValueError:
        raise BvhOpsError(f"{path} is unreadable: rebuild the standby") from None


def controldata(data: Path, bin_dir: str | Path) -> dict[str, str]:
    """pg_controldata's fields (no connection needed; works on a running server)."""
    proc = subprocess.run([str(Path(bin_dir) / "pg_controldata"), "-D", str(data)], capture_output=True,
                          env=server_env(), cwd="/")
    if proc.returncode != 0:
        raise BvhOpsError(f"pg_controldata {data}: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    out = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def read_progress(data: Path) -> dict:
    try:
        return json.loads((Path(data) / RECOVERY_DIR / PROGRESS).read_text())
    except (OSError, ValueError):
        return {}


def newest_history_timeline(data: Path) -> int | None:
    """The highest timeline with a history file in ``pg_wal`` (a promotion writes one)."""
    tls = [int(p.name[:8], 16) for p in (Path(data) / "pg_wal").glob("*.history")
           if re.fullmatch(r"[0-9A-F]{8}\.history", p.name)]
    return max(tls, default=None)


def standby_status(settings: Settings, target_dir: Path, *, now: datetime) -> dict:
    """Where the standby is: state (standby | promoted | stopped), its timeline, what it has
    replayed and what it waits for, and the lag against the newest archived segment."""
    from bvh_ops.storage import open_store
    from bvh_ops.wal.archive import scan_archive

    data = Path(target_dir).resolve()
    meta = load_meta(data)
    rs = repository_settings(settings, meta["source"])
    running = postmaster_alive(data)
    ctl = controldata(data, meta["bin_dir"])
    in_recovery = ctl.get("Database cluster state") == "in archive recovery"
    if not running:
        state = "stopped"
    elif (data / "standby.signal").exists() or in_recovery:
        state = "standby"
    else:
        state = "promoted"
    timeline = int(ctl.get("Min recovery ending loc's timeline") or 0) or int(
        ctl.get("Latest checkpoint's TimeLineID") or meta["timeline"])
    progress = read_progress(data)
    store = open_store(rs)
    archive = scan_archive(store)
    seg_size = int(meta["segment_size"])
    names = [n for n, f in archive.items() if f.has_object and f.has_index]
    modified = {}
    for n in names:
        if parse_segment(n, seg_size) and parse_segment(n, seg_size)[0] >= timeline:
            modified[n] = archive[n].modified
    replayed = progress.get("delivered")
    times = _primary_times(store, modified, lag_names(modified, replayed, seg_size))
    lag = measure_lag(replayed=replayed, waiting_for=progress.get("waiting_for"), archived=modified,
                      timeline=timeline, seg_size=seg_size, modified=times, now=now)
    doc = {"target_dir": str(data), "state": state, "running": running, "in_recovery": in_recovery,
           "source": meta["source"], "repository": meta["repository"], "backup_id": meta["backup_id"],
           "system_identifier": meta["system_identifier"], "timeline": timeline, "port": meta["port"],
           "waiting_since": progress.get("waiting_since"), "checked_at": progress.get("checked_at"),
           "rpo_objective_seconds": settings.rpo_objective_seconds, **lag.to_json()}
    doc["within_rpo"] = lag.behind_seconds is not None and lag.behind_seconds <= settings.rpo_objective_seconds
    return doc


def lag_names(names, replayed: str | None, seg_size: int) -> list[str]:
    """The segments whose primary-side times the lag needs: the replayed one and the newest."""
    segs = [n for n in names if parse_segment(n, seg_size)]
    newest = max(segs, key=lambda n: (parse_segment(n, seg_size)[1], n), default=None)
    return [n for n in (replayed, newest) if n]


def _primary_times(store, fallback: dict[str, datetime], wanted: list[str]) -> dict:
    """When the primary last wrote each wanted segment (its index entry's ``modified_at``; the
    object's store time when the entry has none): store times of a copied repository are when
    it was copied, not when the data was written."""
    from bvh_ops.wal.store import wal_key

    out = dict(fallback)
    for name in wanted:
        try:
            entry = json.loads(store.get_bytes(wal_key(name) + ".json"))
            if entry.get("modified_at"):
                out[name] = datetime.fromisoformat(entry["modified_at"])
        except (NotFound, ValueError):
            pass
    return out


def lag_of(doc: dict) -> Lag:
    """A status document's lag back as a Lag (for the failover verdict)."""
    def ts(v):
        return datetime.fromisoformat(v) if v else None

    return Lag(doc["replayed_segment"], ts(doc["replayed_at"]), doc["waiting_for"], doc["archive_newest"],
               ts(doc["archive_newest_at"]), doc["contiguous_until"], doc["lag_segments"], doc["lag_bytes"],
               doc["behind_seconds"], doc["data_age_seconds"], doc["caught_up"], doc["gap"])


def stop_standby(data: Path) -> None:
    from bvh_ops.physical.restore import stop_server

    meta = load_meta(data)
    stop_server(Path(data).resolve(), Path(meta["bin_dir"]))


def remove_standby(data: Path) -> None:
    """Stop it (if running) and remove the data directory and its sidecar."""
    data = Path(data).resolve()
    try:
        stop_standby(data)
    except NotFound:
        pass
    from bvh_ops.physical.restore import recovery_log

    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(sidecar(data), ignore_errors=True)
    recovery_log(data).unlink(missing_ok=True)


def port_of(data: Path, meta: dict) -> int:
    """The running server's port (postmaster.pid's fourth line), else the recorded one."""
    try:
        return int((Path(data) / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, ValueError, IndexError):
        return int(meta["port"])


__all__ = ["create_standby", "standby_status", "load_meta", "sidecar", "remove_standby", "free_port"]
