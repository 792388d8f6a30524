"""A real embedded PostgreSQL archiving through `bvh-ops wal-push` (as the server's OS user,
configured from a file) into a file:// repository, for the physical/PITR tests."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bvh_ops.pg.cluster import EmbeddedCluster, archiving_conf, bvh_command


@dataclass
class Archiving:
    cluster: EmbeddedCluster
    repo: Path
    config: Path

    @property
    def url(self) -> str:
        return f"file://{self.repo}"

    def switch_and_wait(self, timeout: float = 300) -> str:
        """Switch WAL and wait until the finished segment is archived; returns its name."""
        from bvh_ops.physical.backup import switch_wal_and_wait

        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
            return switch_wal_and_wait(conn, timeout=timeout)[0]


def start_archiving(root: Path, keypair, *, binaries: Path | None = None, extra: dict | None = None,
                    full_cli: bool = False) -> Archiving:
    """``full_cli``: archive through `bvh-ops wal-push` (the CLI) instead of `bvh-ops-wal push`."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    repo = root / "repo"
    repo.mkdir(mode=0o777)
    os.chmod(repo, 0o777)
    pub = root / "recipient.pub"
    shutil.copy(keypair[0], pub)
    os.chmod(pub, 0o644)
    (root / "state").mkdir(mode=0o777)
    os.chmod(root / "state", 0o777)
    cfg = root / "bvh-ops.toml"
    cfg.write_text(f'repository = "file://{repo}"\nrecipients = ["{pub}"]\nstate_dir = "{root / "state"}"\n'
                   "compression_threads = 0\n")
    os.chmod(cfg, 0o644)
    conf = archiving_conf(cfg)
    if full_cli:
        conf["archive_command"] = f"'BVH_OPS_CONFIG={cfg} {bvh_command()} wal-push %p'"
    if binaries is not None and "15" in str(binaries):
        conf.pop("summarize_wal")
    conf.update(extra or {})
    cluster = EmbeddedCluster(root / "pg", extra_conf=conf, binaries=binaries)
    cluster.start()
    return Archiving(cluster, repo, cfg)


def start_lottery_source(root: Path, keypair, *, scale: float) -> Archiving:
    """An archiving cluster with the sample lottery database loaded at ``scale`` and an empty
    ``bvh_ops`` database for the ops schema: the source the drill and archive flow tests use."""
    from bvh_ops.demo.sample import load_sample
    from bvh_ops.pg.catalog import create_database

    arch = start_archiving(root, keypair)
    create_database(arch.cluster.dsn(), "lottery")
    create_database(arch.cluster.dsn(), "bvh_ops")
    load_sample(arch.cluster.dsn("lottery"), scale=scale)
    return arch
