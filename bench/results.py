"""Where benchmark results go: bench/out/<name>.json (not committed), and stdout."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def save_result(name: str, data: dict) -> Path:
    out = Path(__file__).with_name("out")
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2))
    return path


def fresh_workdir(path: str | Path) -> tuple[Path, tuple[Path, Path]]:
    """An empty work directory the server's OS user can traverse, with a new key pair in
    ``keys/`` (the public key readable by that user): (workdir, (recipient.pub, identity.key))."""
    from bvh_ops.keys import write_keypair

    work = Path(path)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)
    keys = write_keypair(work / "keys")
    os.chmod(keys[0], 0o644)
    return work, keys
