"""Where benchmark results go: bench/out/<name>.json (not committed), and stdout."""

from __future__ import annotations

import json
from pathlib import Path


def save_result(name: str, data: dict) -> Path:
    out = Path(__file__).with_name("out")
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2))
    return path
