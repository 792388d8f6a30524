"""Where the analysis reads: collected records from ``ops.log_records`` and the platform's
ledger rows (transactions, admin_actions) as Records — each streamed through a server-side
cursor in time order, never fetched whole."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import psycopg

from bvh_ops.logs.record import Record

BATCH = 2000

RECORDS_SQL = ("SELECT at, category, source, level, event, message, fields FROM ops.log_records "
               "WHERE at >= %s AND at < %s{categories} ORDER BY at")

TRANSACTIONS_SQL = """
SELECT t.created_at, t.kind::text, t.id, t.wallet_id, w.user_id, t.amount, t.metadata
FROM transactions t JOIN wallets w ON w.id = t.wallet_id
WHERE t.created_at >= %s AND t.created_at < %s ORDER BY t.created_at, t.id"""

ADMIN_SQL = """
SELECT created_at, action, id, admin_user, target, details, host(ip)
FROM admin_actions WHERE created_at >= %s AND created_at < %s ORDER BY created_at, id"""


def log_records(conn: psycopg.Connection, since: datetime, until: datetime,
                categories: tuple[str, ...] = ()) -> Iterator[Record]:
    """Collected records in [since, until), oldest first (needs a transaction: named cursor)."""
    where = " AND category = ANY(%s)" if categories else ""
    params: tuple = (since, until, list(categories)) if categories else (since, until)
    with conn.cursor(name="bvh_log_analysis") as cur:
        cur.itersize = BATCH
        cur.execute(RECORDS_SQL.format(categories=where), params)
        for at, category, source, level, event, message, fields in cur:
            yield Record(at=at, category=category, source=source, level=level, event=event, message=message,
                         fields=fields or {})


def _num(v: Decimal | None) -> float | None:
    return float(v) if v is not None else None


def ledger_records(conn: psycopg.Connection, since: datetime, until: datetime) -> Iterator[Record]:
    """The platform's transactions and admin actions in [since, until) as Records, merged in time order."""
    import heapq

    return heapq.merge(_transactions(conn, since, until), _admin_actions(conn, since, until), key=lambda r: r.at)


def _transactions(conn: psycopg.Connection, since: datetime, until: datetime) -> Iterator[Record]:
    with conn.cursor(name="bvh_analysis_txns") as cur:
        cur.itersize = BATCH
        cur.execute(TRANSACTIONS_SQL, (since, until))
        for at, kind, txn_id, wallet_id, user_id, amount, metadata in cur:
            yield Record(at=at, category="audit", source="db:transactions", event=f"txn.{kind}",
                         fields={"transactionId": txn_id, "walletId": wallet_id, "userId": user_id,
                                 "amount": _num(amount), "metadata": metadata or {}})


def _admin_actions(conn: psycopg.Connection, since: datetime, until: datetime) -> Iterator[Record]:
    with conn.cursor(name="bvh_analysis_admin") as cur:
        cur.itersize = BATCH
        cur.execute(ADMIN_SQL, (since, until))
        for at, action, action_id, admin, target, details, ip in cur:
            details = details or {}
            amount = details.get("amount")
            yield Record(at=at, category="audit", source="db:admin_actions", event=f"admin.{action}",
                         fields={"actionId": action_id, "admin": admin, "target": target, "ip": ip,
                                 "amount": float(amount) if isinstance(amount, int | float | str) and
                                 _is_number(amount) else None})


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
