"""Logins and sessions. The sample schema keeps no credentials, so a sample user's password is
derived from their e-mail address by a fixed rule (:func:`sample_password`) that the workload
driver knows too; a real platform stores salted hashes. Sessions are opaque tokens in the cache."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from bvh_ops.demo.platform.cache import Cache

SESSION_TTL_S = 1800.0
_RULE = b"bvh-sample-platform/v1:"


def sample_password(email: str) -> str:
    """The demo password of a sample user (e.g. user7@example.org)."""
    return "pw-" + hashlib.sha256(_RULE + email.encode()).hexdigest()[:16]


def password_ok(email: str, password: str) -> bool:
    return hmac.compare_digest(sample_password(email).encode(), password.encode())


def open_session(cache: Cache, user_id: int) -> str:
    token = secrets.token_urlsafe(24)
    cache.set(f"session:{token}", str(user_id), SESSION_TTL_S)
    return token


def session_user(cache: Cache, authorization: str | None) -> int | None:
    """The user of a ``Bearer <token>`` header, or None (absent, unknown or expired)."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    value = cache.get(f"session:{authorization.removeprefix('Bearer ').strip()}")
    return int(value) if value else None
