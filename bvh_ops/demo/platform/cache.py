"""The platform's cache: Redis where one answers (127.0.0.1:6379 by default), else an in-process
dictionary with expiry. Both hold strings under a per-instance key prefix, so several platforms
(tests, the demo) can share one Redis without seeing each other's sessions."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Protocol

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Cache(Protocol):
    backend: str  # "redis" or "memory"
    prefix: str  # what this instance's keys start with (in Redis)

    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str, ttl_s: float) -> None: ...
    def delete(self, key: str) -> None: ...
    def ping(self) -> bool: ...
    def describe(self) -> str: ...


class MemoryCache:
    """A dictionary with expiry; what the platform uses where no Redis answers."""

    backend = "memory"
    prefix = ""

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._items[key]
                return None
            return item[1]

    def set(self, key: str, value: str, ttl_s: float) -> None:
        with self._lock:
            if len(self._items) > 50_000:  # bound it: drop what has expired
                now = time.monotonic()
                self._items = {k: v for k, v in self._items.items() if v[0] >= now}
            self._items[key] = (time.monotonic() + ttl_s, value)

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def ping(self) -> bool:
        return True

    def describe(self) -> str:
        return "in-process cache"


class RedisCache:
    """Redis through the ``redis`` client, short timeouts so a stalled Redis makes the cache
    unhealthy instead of hanging requests."""

    backend = "redis"

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.prefix = f"bvh-platform:{secrets.token_hex(4)}:"
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0,
                                           decode_responses=True)

    def get(self, key: str) -> str | None:
        return self._redis.get(self.prefix + key)

    def set(self, key: str, value: str, ttl_s: float) -> None:
        self._redis.set(self.prefix + key, value, px=max(1, int(ttl_s * 1000)))

    def delete(self, key: str) -> None:
        self._redis.delete(self.prefix + key)

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except Exception:  # any failure to answer is "not healthy", never an exception in health
            return False

    def describe(self) -> str:
        host = self._redis.connection_pool.connection_kwargs.get("host")
        port = self._redis.connection_pool.connection_kwargs.get("port")
        return f"redis at {host}:{port}"


def open_cache(url: str | None = DEFAULT_REDIS_URL) -> Cache:
    """Redis at ``url`` if it answers PING now, else the in-process cache (``url`` None or
    "memory" asks for the in-process one directly)."""
    if url and url != "memory":
        try:
            cache = RedisCache(url)
        except ImportError:  # the redis client is a declared dependency; tolerate its absence
            return MemoryCache()
        if cache.ping():
            return cache
    return MemoryCache()


def redis_answers(host: str = "127.0.0.1", port: int = 6379, timeout: float = 1.0) -> bool:
    """Does a Redis answer PING at ``host:port`` right now (tests and benchmarks skip or fall
    back on it; a raw socket so it needs nothing but the standard library)?"""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
