"""Pseudonymisation at ingest: in the categories that do not need personal data in clear
(default application, performance, debug), the configured fields (default email, ip, phone) are
replaced by ``pseu:`` + HMAC-SHA256(key, value) (first 128 bits, hex). Stable — the same value
gives the same pseudonym, so "many accounts from one IP" is still countable — but not
reversible without the key, which lives in ``state_dir/log-pseudonym.key`` (0600, created on
first use, never logged). Security and audit records keep them in clear: the runbook's
investigations (brute force per IP, who changed a balance) need the real values there.

E-mail addresses inside the free-text message are replaced too when ``email`` is a named field."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bvh_ops.logs.record import Record

KEY_FILE = "log-pseudonym.key"
PREFIX = "pseu:"
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def load_or_create_key(state_dir: Path) -> bytes:
    """The pseudonymisation key (32 random bytes), created 0600 on first use. O_EXCL: two
    collectors starting together cannot each write a different key."""
    path = Path(state_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < 32:
        raise ValueError(f"{path} does not hold a 256-bit key")
    return key


CACHE_SIZE = 200_000   # pseudonyms remembered (values repeat: accounts, IPs); ~30 MB at most


@dataclass(frozen=True)
class Pseudonymiser:
    key: bytes
    fields: frozenset[str]
    categories: frozenset[str]
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:   # never the key
        return f"Pseudonymiser(fields={sorted(self.fields)}, categories={sorted(self.categories)})"

    @classmethod
    def of(cls, key: bytes, fields: Iterable[str], categories: Iterable[str]) -> Pseudonymiser:
        return cls(key, frozenset(f.lower() for f in fields), frozenset(categories))

    def pseudonym(self, value: Any) -> str:
        text = value if isinstance(value, str) else str(value)
        if text.startswith(PREFIX):
            return text   # already one (a re-read line is never double-hashed)
        if (hit := self._cache.get(text)) is not None:
            return hit
        value = PREFIX + hmac.digest(self.key, text.encode(), hashlib.sha256)[:16].hex()
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[text] = value
        return value

    def apply(self, record: Record) -> Record:
        """``record`` with the named fields (at any depth) pseudonymised, when its category asks for it."""
        if record.category not in self.categories or not self.fields:
            return record
        fields = self._walk(record.fields)
        message = record.message
        if "email" in self.fields and "@" in message:
            message = _EMAIL.sub(lambda m: self.pseudonym(m[0]), message)
        return replace(record, fields=fields, message=message)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, dict):
            if not any(isinstance(k, str) and k.lower() in self.fields or isinstance(v, dict | list)
                       for k, v in value.items()):
                return value   # the common case: nothing to replace at this level or below
            return {k: (self.pseudonym(v) if k.lower() in self.fields and v not in (None, "") and
                        not isinstance(v, dict | list) else self._walk(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        return value
