"""The platform's database side: a small connection pool (autocommit sessions named
``bvh-platform`` in pg_stat_activity) behind a gate the ``db_down`` fault closes, and the
lottery's operations on the sample schema (bvh_ops/demo/schema.sql)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg

from bvh_ops.demo.sample import TICKET_PRICE, record_purchase
from bvh_ops.errors import DatabaseUnavailable
from bvh_ops.pg.conn import connect

APPLICATION_NAME = "bvh-platform"


class InsufficientFunds(Exception):
    pass


class DrawClosed(Exception):
    pass


class Database:
    """Up to ``size`` pooled connections. Every use goes through :meth:`connection`, which raises
    DatabaseUnavailable when the database cannot be reached — or when ``is_down()`` (the fault)
    says to act as if it could not — and reports each outcome to ``observe(up)``."""

    def __init__(self, dsn: str, *, size: int = 4, is_down: Callable[[], bool] = lambda: False,
                 observe: Callable[[bool], None] = lambda up: None, connect_timeout: int = 3) -> None:
        self._dsn = dsn
        self._size = size
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._open = 0
        self._lock = threading.Lock()
        self._is_down = is_down
        self._observe = observe
        self._timeout = connect_timeout

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        if self._is_down():
            self._observe(False)
            self.close_idle()  # as if the server had gone: our sessions leave pg_stat_activity
            raise DatabaseUnavailable("database unreachable (fault: db_down)")
        conn = self._take()
        try:
            yield conn
        except (psycopg.OperationalError, psycopg.errors.AdminShutdown) as exc:
            conn.close()
            self._release(None)
            self._observe(False)
            raise DatabaseUnavailable(f"database connection lost ({exc.__class__.__name__})") from None
        except BaseException:
            self._release(conn)
            raise
        else:
            self._observe(True)
            self._release(conn)

    def _take(self) -> psycopg.Connection:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            if not conn.closed:
                return conn
            with self._lock:
                self._open -= 1
        with self._lock:
            can_open = self._open < self._size
            if can_open:
                self._open += 1
        if not can_open:
            try:
                return self._idle.get(timeout=10)
            except queue.Empty:
                raise DatabaseUnavailable("no database connection free within 10 s") from None
        try:
            conn = connect(self._dsn, autocommit=True, timeout=self._timeout)
            conn.execute(f"SET application_name = '{APPLICATION_NAME}'")
            return conn
        except BaseException as exc:
            with self._lock:
                self._open -= 1
            if isinstance(exc, DatabaseUnavailable):
                self._observe(False)
            raise

    def _release(self, conn: psycopg.Connection | None) -> None:
        if conn is None or conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            if conn is not None:
                conn.close()
            with self._lock:
                self._open -= 1
            return
        self._idle.put(conn)

    def close_idle(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            conn.close()
            with self._lock:
                self._open -= 1

    def ping(self) -> float:
        """Milliseconds for ``SELECT 1``; DatabaseUnavailable if it cannot run."""
        start = time.perf_counter()
        with self.connection() as conn:
            conn.execute("SELECT 1")
        return round((time.perf_counter() - start) * 1000, 2)

    def connection_counts(self) -> dict[str, int]:
        """From pg_stat_activity: this platform's sessions, all sessions of its database, and
        the server's max_connections."""
        with self.connection() as conn:
            ours, total, limit = conn.execute(
                "SELECT count(*) FILTER (WHERE application_name = %s), count(*), "
                "current_setting('max_connections')::int FROM pg_stat_activity "
                "WHERE datname = current_database()", (APPLICATION_NAME,)).fetchone()
        return {"platform": ours, "database": total, "max": limit}


# -- the lottery's operations -------------------------------------------------------------------

def find_user(db: Database, email: str) -> tuple[int, bool] | None:
    """(user id, active) for an e-mail address, or None."""
    with db.connection() as conn:
        row = conn.execute("SELECT id, is_active FROM users WHERE email = %s", (email,)).fetchone()
    return (row[0], row[1]) if row else None


def record_failed_login(db: Database, *, user_id: int | None, ip: str | None, reason: str) -> None:
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO security_events (occurred_at, severity, kind, source_ip, user_id, details) "
            "VALUES (now(), 3, 'failed_login', %s, %s, jsonb_build_object('reason', %s::text))",
            (ip, user_id, reason))


def balance(db: Database, user_id: int) -> Decimal:
    with db.connection() as conn:
        return conn.execute("SELECT balance FROM wallets WHERE user_id = %s", (user_id,)).fetchone()[0]


def deposit(db: Database, *, user_id: int, amount: Decimal, provider: str, reference: str) -> dict[str, Any]:
    """A settled card/wallet payment credited to the user's wallet: payment, transaction, balance,
    audit row, in one transaction."""
    with db.connection() as conn, conn.transaction():
        payment_id = conn.execute(
            "INSERT INTO payments (user_id, provider, external_id, amount, status, created_at) "
            "VALUES (%s, %s, gen_random_uuid(), %s, 'settled', now()) RETURNING id",
            (user_id, provider, amount)).fetchone()[0]
        txn_id = conn.execute(
            "INSERT INTO transactions (wallet_id, kind, amount, created_at, reference, metadata) "
            "SELECT id, 'deposit', %s, now(), %s, jsonb_build_object('payment', %s::bigint) "
            "FROM wallets WHERE user_id = %s RETURNING id", (amount, reference, payment_id, user_id)).fetchone()[0]
        new_balance = conn.execute(
            "UPDATE wallets SET balance = balance + %s, updated_at = now() WHERE user_id = %s "
            "RETURNING balance", (amount, user_id)).fetchone()[0]
        conn.execute(
            "INSERT INTO audit_log (occurred_at, actor, event, entity, entity_id, payload, row_hash) "
            "VALUES (now(), %s, 'wallet.deposit', 'wallet', %s, jsonb_build_object('amount', %s::numeric), "
            "sha256(%s::bytea))", (f"user:{user_id}", txn_id, amount, reference.encode()))
    return {"transactionId": txn_id, "paymentId": payment_id, "balance": new_balance}


def purchase(db: Database, *, user_id: int, draw_id: int | None, numbers: list[int],
             reference: str) -> dict[str, Any]:
    """A ticket for an open draw (the open one when ``draw_id`` is None), paid from the wallet;
    InsufficientFunds / DrawClosed leave nothing written."""
    with db.connection() as conn, conn.transaction():
        if draw_id is None:
            row = conn.execute("SELECT min(id) FROM draws WHERE status = 'open'").fetchone()
            draw_id = row[0]
        status = conn.execute("SELECT status FROM draws WHERE id = %s", (draw_id,)).fetchone() if draw_id else None
        if status is None or status[0] != "open":
            raise DrawClosed(f"draw {draw_id} is not open for tickets")
        funds = conn.execute("SELECT balance FROM wallets WHERE user_id = %s FOR UPDATE", (user_id,)).fetchone()[0]
        if funds < TICKET_PRICE:
            raise InsufficientFunds(f"balance {funds} is below the ticket price {TICKET_PRICE}")
        ticket_id = record_purchase(conn, user_id=user_id, draw_id=draw_id, numbers=numbers, reference=reference)
    return {"ticketId": ticket_id, "drawId": draw_id, "price": TICKET_PRICE, "balance": funds - TICKET_PRICE}


def list_draws(db: Database, *, limit: int = 20) -> list[dict[str, Any]]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, name, status::text, draw_at, jackpot FROM draws ORDER BY draw_at DESC LIMIT %s",
            (limit,)).fetchall()
    return [{"id": r[0], "name": r[1], "status": r[2], "drawAt": r[3].isoformat(), "jackpot": float(r[4])}
            for r in rows]
