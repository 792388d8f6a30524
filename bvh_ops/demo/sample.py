"""The sample lottery platform: schema, a deterministic seeded generator with a scale factor
(rows are generated server-side with generate_series, so scale 100 is as cheap per row as
scale 1), and a workload generator that keeps writing tickets and transactions."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources

import psycopg

from bvh_ops.pg.conn import connect

# Rows per unit of scale; scale 1 is ~10 MB, scale 150 about 1.5 GB on disk.
USERS, DRAWS, TICKETS, TXNS, PAYMENTS, AUDIT, SECURITY, APPLOGS, PERF, ADMIN = (
    1000, 20, 20000, 20000, 3000, 10000, 1000, 15000, 5000, 200,
)


def schema_sql() -> str:
    return resources.files("bvh_ops.demo").joinpath("schema.sql").read_text()


def load_sample(dsn: str, *, scale: float = 1.0, seed: float = 0.42) -> dict[str, int]:
    """Create the schema and fill it deterministically; returns rows per table."""
    n = {k: max(1, int(v * scale)) for k, v in dict(
        users=USERS, draws=DRAWS, tickets=TICKETS, txns=TXNS, payments=PAYMENTS, audit=AUDIT,
        security=SECURITY, applogs=APPLOGS, perf=PERF, admin=ADMIN).items()}
    n["draws"] = max(3, n["draws"])
    with connect(dsn) as conn:
        conn.execute(schema_sql())
        conn.execute(f"SELECT setseed({seed})")
        conn.execute(_GENERATE.format(**n))
        conn.execute("CREATE MATERIALIZED VIEW daily_ticket_sales AS "
                     "SELECT date_trunc('day', purchased_at) AS day, count(*) AS tickets, sum(price) AS revenue "
                     "FROM tickets GROUP BY 1")
        conn.execute("ANALYZE")
        conn.commit()
        rows = {t: c for t, c in conn.execute(
            "SELECT relname, n_live_tup FROM pg_stat_user_tables").fetchall()}
    return rows


_GENERATE = """
INSERT INTO users (email, display_name, phone, country, created_at, is_active, preferences, tags)
SELECT 'user' || g || '@example.org', 'Player ' || g, '+972-5' || lpad((g * 7919 % 10000000)::text, 7, '0'),
       (ARRAY['IL','US','FR','GB','DE'])[1 + g % 5],
       timestamptz '2025-01-01' + (g::float8 / {users}) * interval '150 days', g % 17 <> 0,
       jsonb_build_object('lang', (ARRAY['he','en','fr'])[1 + g % 3], 'marketing', g % 2 = 0),
       CASE WHEN g % 10 = 0 THEN ARRAY['vip', 'early'] ELSE ARRAY[]::text[] END
FROM generate_series(1, {users}) g;

INSERT INTO wallets (user_id, currency, balance, updated_at)
SELECT id, 'ILS', 0, timestamptz '2026-01-01' FROM users;

INSERT INTO draws (name, status, draw_at, jackpot, created_at)
SELECT 'Draw #' || g,
       (CASE WHEN g < {draws} - 1 THEN 'closed' WHEN g = {draws} - 1 THEN 'open' ELSE 'scheduled' END)::draw_status,
       timestamptz '2025-06-03 20:00+03' + (g::float8 / {draws}) * interval '365 days', 1000000 + g * 25000,
       timestamptz '2025-06-01' + (g::float8 / {draws}) * interval '365 days'
FROM generate_series(1, {draws}) g;

INSERT INTO draw_results (draw_id, winning_numbers, bonus, published_at, result_hash)
SELECT id, ARRAY[1 + id % 7, 8 + id % 5, 14 + id % 6, 21 + id % 4, 26 + id % 3, 30 + id % 7]::smallint[],
       (1 + id % 7)::smallint, draw_at + interval '1 hour', NULL
FROM draws WHERE status = 'closed';
-- A draw's result is sealed by a hash over its content; "results unchanged" checks it.
UPDATE draw_results SET result_hash = sha256(convert_to(draw_id || ':' || winning_numbers::text || ':' || bonus, 'UTF8'));

INSERT INTO tickets (user_id, draw_id, numbers, price, purchased_at, status, prize)
SELECT 1 + (g * 7) % {users}, 1 + g % {draws},
       ARRAY[1 + g % 6, 7 + g % 6, 13 + g % 6, 19 + g % 6, 25 + g % 6, 31 + g % 6]::smallint[],
       (ARRAY[5.90, 11.80, 29.50])[1 + g % 3],
       timestamptz '2025-06-01' + (g::float8 / {tickets}) * interval '365 days' + (random() * interval '10 seconds'),
       CASE WHEN g % 50 = 0 THEN 'won' ELSE 'active' END,
       CASE WHEN g % 50 = 0 THEN round((random() * 500)::numeric, 2) END
FROM generate_series(1, {tickets}) g;

INSERT INTO transactions (wallet_id, kind, amount, created_at, reference, metadata)
SELECT w.id, 'deposit', 1000, timestamptz '2025-05-31', 'initial deposit', '{{"channel":"card"}}'
FROM wallets w;

INSERT INTO transactions (wallet_id, kind, amount, created_at, reference, metadata)
SELECT 1 + (g * 13) % {users},
       (ARRAY['ticket_purchase','prize','refund'])[1 + (g % 10 = 0)::int + (g % 97 = 0)::int]::txn_kind,
       CASE WHEN g % 10 = 0 THEN round((random() * 50)::numeric, 2) ELSE -round((1 + random() * 4)::numeric, 2) END,
       timestamptz '2025-06-01' + (g::float8 / {txns}) * interval '365 days',
       'ref-' || md5(g::text),
       CASE WHEN g % 3 = 0 THEN jsonb_build_object('ticket', g, 'ua', 'app/' || (g % 5)) END
FROM generate_series(1, {txns}) g;

UPDATE wallets w SET balance = t.total, updated_at = t.last
FROM (SELECT wallet_id, sum(amount) AS total, max(created_at) AS last FROM transactions GROUP BY wallet_id) t
WHERE t.wallet_id = w.id;

INSERT INTO payments (user_id, provider, external_id, amount, status, created_at, raw_response)
SELECT 1 + g % {users}, (ARRAY['visa','mastercard','paypal','bit'])[1 + g % 4],
       md5('pay' || g)::uuid, round((10 + random() * 990)::numeric, 2),
       (ARRAY['settled','settled','settled','declined','refunded'])[1 + g % 5],
       timestamptz '2025-06-01' + (g::float8 / {payments}) * interval '365 days',
       jsonb_build_object('auth_code', substr(md5(g::text), 1, 8), 'risk', round(random()::numeric, 3))
FROM generate_series(1, {payments}) g;

INSERT INTO admin_actions (admin_user, action, target, details, ip, created_at)
SELECT (ARRAY['rivka','moshe','dana'])[1 + g % 3], (ARRAY['close_draw','refund','ban_user','adjust_jackpot'])[1 + g % 4],
       'object-' || g, jsonb_build_object('note', 'generated ' || g),
       ('10.0.' || (g % 250) || '.' || (g % 200 + 1))::inet,
       timestamptz '2025-06-01' + (g::float8 / {admin}) * interval '365 days'
FROM generate_series(1, {admin}) g;

INSERT INTO audit_log (occurred_at, actor, event, entity, entity_id, payload, row_hash)
SELECT timestamptz '2025-06-01' + (g::float8 / {audit}) * interval '365 days', 'user:' || (1 + g % {users}),
       (ARRAY['login','ticket.buy','wallet.deposit','profile.update','logout'])[1 + g % 5],
       (ARRAY['session','ticket','wallet','user','session'])[1 + g % 5], g,
       jsonb_build_object('seq', g, 'client', 'web'), sha256(('audit' || g)::bytea)
FROM generate_series(1, {audit}) g;

INSERT INTO security_events (occurred_at, severity, kind, source_ip, user_id, details)
SELECT timestamptz '2025-06-01' + (g::float8 / {security}) * interval '365 days', (1 + g % 5)::smallint,
       (ARRAY['failed_login','rate_limited','suspicious_ip','password_reset'])[1 + g % 4],
       ('192.0.2.' || (1 + g % 254))::inet, CASE WHEN g % 3 = 0 THEN 1 + g % {users} END,
       jsonb_build_object('attempts', 1 + g % 9)
FROM generate_series(1, {security}) g;

INSERT INTO app_logs (logged_at, level, service, message, context)
SELECT timestamptz '2026-01-01' + (g::float8 / {applogs}) * interval '360 days',
       (ARRAY['INFO','INFO','INFO','WARN','ERROR'])[1 + g % 5], (ARRAY['api','payments','draw-engine'])[1 + g % 3],
       'request ' || g || ' handled in ' || (g % 250) || ' ms', jsonb_build_object('trace', md5(g::text))
FROM generate_series(1, {applogs}) g;

INSERT INTO performance_logs (recorded_at, endpoint, duration_ms, status_code)
SELECT timestamptz '2025-06-01' + (g::float8 / {perf}) * interval '365 days', (ARRAY['/api/tickets','/api/draws','/api/wallet'])[1 + g % 3],
       CASE WHEN g % 1000 = 0 THEN 'NaN'::float8 WHEN g % 1001 = 0 THEN 'Infinity'::float8 ELSE random() * 300 END,
       (ARRAY[200, 200, 200, 201, 404, 500])[1 + g % 6]
FROM generate_series(1, {perf}) g;
"""


# The lottery's domain invariants: each query returns the rows that violate the rule.
LOTTERY_INVARIANTS = [
    ("wallet_balance_equals_transactions",
     "SELECT w.id, w.balance, coalesce(t.total, 0) AS transactions_total FROM wallets w "
     "LEFT JOIN (SELECT wallet_id, sum(amount) AS total FROM transactions GROUP BY wallet_id) t "
     "ON t.wallet_id = w.id WHERE w.balance <> coalesce(t.total, 0)"),
    ("tickets_reference_draw_and_user",
     "SELECT t.id FROM tickets t LEFT JOIN draws d ON d.id = t.draw_id LEFT JOIN users u ON u.id = t.user_id "
     "WHERE d.id IS NULL OR u.id IS NULL"),
    ("closed_draw_results_unchanged",
     "SELECT d.id FROM draws d LEFT JOIN draw_results r ON r.draw_id = d.id WHERE d.status = 'closed' "
     "AND (r.draw_id IS NULL OR r.result_hash <> "
     "sha256(convert_to(r.draw_id || ':' || r.winning_numbers::text || ':' || r.bonus, 'UTF8')))"),
    ("no_negative_balances", "SELECT id, balance FROM wallets WHERE balance < 0"),
]


def invariants_toml() -> str:
    """The lottery invariants as bvh-ops.toml ``[[invariants]]`` tables."""
    out = []
    for name, sql in LOTTERY_INVARIANTS:
        out.append(f'[[invariants]]\nname = "{name}"\nsql = """{sql}"""\n')
    return "\n".join(out)


TICKET_PRICE = Decimal("5.90")


def record_purchase(conn: psycopg.Connection, *, user_id: int, draw_id: int, numbers: list[int],
                    reference: str, price: Decimal = TICKET_PRICE) -> int:
    """One ticket purchase as the lottery writes it: the ticket, its wallet transaction, the new
    balance and an audit row. The caller owns the transaction (and any balance check); returns
    the ticket's id. Shared by the workload here and the sample platform's purchase endpoint."""
    ticket_id = conn.execute(
        "INSERT INTO tickets (user_id, draw_id, numbers, price, purchased_at, status) "
        "VALUES (%s, %s, %s, %s, now(), 'active') RETURNING id",
        (user_id, draw_id, numbers, price)).fetchone()[0]
    conn.execute(
        "INSERT INTO transactions (wallet_id, kind, amount, created_at, reference) "
        "SELECT id, 'ticket_purchase', %s, now(), %s FROM wallets WHERE user_id = %s",
        (-price, reference, user_id))
    conn.execute("UPDATE wallets SET balance = balance - %s, updated_at = now() WHERE user_id = %s",
                 (price, user_id))
    conn.execute(
        "INSERT INTO audit_log (occurred_at, actor, event, entity, entity_id, row_hash) "
        "VALUES (now(), %s, 'ticket.buy', 'ticket', %s, sha256(%s::bytea))",
        (f"user:{user_id}", ticket_id, reference.encode()))
    return ticket_id


@dataclass
class WorkloadStats:
    transactions: int = 0
    errors: int = 0


class Workload:
    """Keeps buying tickets (ticket + wallet transaction + balance + audit row, one transaction
    each) at ``rate`` per second until ``stop()``; for incremental and PITR tests and demos."""

    def __init__(self, dsn: str, *, rate: float = 20.0, seed: int = 7) -> None:
        self.dsn = dsn
        self.rate = rate
        self.seed = seed
        self.stats = WorkloadStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Workload:
        self._thread = threading.Thread(target=self._run, name="bvh-workload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> WorkloadStats:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        return self.stats

    def _run(self) -> None:
        interval = 1.0 / self.rate if self.rate > 0 else 0
        i = self.seed * 1_000_000
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            users, open_draw = conn.execute(
                "SELECT (SELECT max(id) FROM users), (SELECT min(id) FROM draws WHERE status = 'open')").fetchone()
            conn.commit()
            while not self._stop.is_set():
                i += 1
                uid = 1 + i % users
                try:
                    with conn.transaction():
                        record_purchase(conn, user_id=uid, draw_id=open_draw,
                                        numbers=[1 + i % 6, 7 + i % 6, 13, 19, 25, 31], reference=f"wl-{i}")
                    self.stats.transactions += 1
                except psycopg.Error:
                    self.stats.errors += 1
                    if self._stop.wait(0.5):
                        break
                if interval:
                    self._stop.wait(interval)


def run_workload(dsn: str, *, rate: float, seconds: float) -> WorkloadStats:
    w = Workload(dsn, rate=rate).start()
    time.sleep(seconds)
    return w.stop()


@dataclass
class Cut:
    """An exact cut through the workload's writes: commits before it are in, after it out."""

    name: str
    time: str  # ISO 8601, the server's clock inside the cut
    lsn: str  # WAL insert position inside the cut
    counts: dict[str, tuple]  # table -> (rows, sum of row hashes)


CUT_TABLES = ("tickets", "transactions", "audit_log", "wallets")


def cut_fingerprints(conn: psycopg.Connection) -> dict[str, tuple]:
    return {t: tuple(conn.execute(
        f"SELECT count(*), coalesce(sum(hashtextextended(x::text, 0)), 0) FROM {t} x").fetchone())
        for t in CUT_TABLES}


def consistent_cut(dsn: str, name: str) -> Cut:
    """Block the workload's inserts for a moment (SHARE ROW EXCLUSIVE on the tables it writes),
    and inside that moment record the rows, a named restore point, the LSN and the time: what a
    point-in-time recovery to the name, the LSN or the time must give back exactly."""
    with psycopg.connect(dsn) as conn:
        conn.execute("LOCK TABLE tickets, transactions, audit_log, wallets IN SHARE ROW EXCLUSIVE MODE")
        counts = cut_fingerprints(conn)
        conn.execute("SELECT pg_create_restore_point(%s)", (name,))
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        ts = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.commit()
    return Cut(name, ts.isoformat(), lsn, counts)
