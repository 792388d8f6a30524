"""Plant abnormal patterns among the sample platform's normal traffic, with known ground truth:
``plant(url, dsn, patterns)`` returns, per detector, the subjects it must find.

Through the HTTP API (the platform's real log lines), each attacker or fraudster from an
address of its own in 203.0.113.0/24 (X-Forwarded-For, trusted from the loopback): brute force,
credential stuffing, a known-bad address, a 403 spike, structured deposits, accounts sharing an
IP, ticket-purchase velocity, and one slow endpoint (the ``slow_path`` fault on GET /api/wallet).
The platform has no withdrawal and no admin-balance endpoint, so those patterns are written
straight into its database as the rows such endpoints would write (a deposit, a ticket, a
withdrawal; an admin action with or without its refund transaction, wallet balance updated),
with legitimate look-alikes beside them so the detector has something to tell them from.

Accounts: planted behaviour uses users ``first_account`` .. ``first_account + 9``; the workload
driver should be given ``users = first_account - 1`` so normal traffic never touches them."""

from __future__ import annotations

import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import psycopg
from psycopg.types.json import Jsonb

from bvh_ops.demo.platform.accounts import sample_password
from bvh_ops.tls import default_context

PATTERNS = ("brute_force", "credential_stuffing", "known_bad_ip", "access_violations", "structuring", "shared_ip",
            "purchase_velocity", "slow_endpoint", "deposit_withdrawal_no_play", "admin_off_hours",
            "admin_balance_without_transaction")
KNOWN_BAD = "198.51.100.0/24"  # put this in log_analysis.known_bad_ips


def _email(uid: int) -> str:
    return f"user{uid}@example.org"


class Planter:
    def __init__(self, url: str, dsn: str, *, first_account: int = 41, seed: int = 5,
                 business_hours: tuple[int, int] = (6, 18), business_days: Iterable[int] = (7, 1, 2, 3, 4)) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=30, verify=default_context())
        self.business_hours = business_hours
        self.business_days = set(business_days)
        self.admin_calls: list[datetime] = []  # this planter's own admin API calls (the slow fault)
        self.dsn = dsn
        self.a = first_account
        self.rng = random.Random(seed)

    def _login(self, uid: int, ip: str, *, password: str | None = None) -> httpx.Response:
        email = _email(uid)
        return self.client.post("/api/auth/login", headers={"X-Forwarded-For": ip},
                                json={"email": email, "password": password or sample_password(email)})

    def _session(self, uid: int, ip: str) -> dict[str, str]:
        r = self._login(uid, ip)
        r.raise_for_status()
        return {"Authorization": f"Bearer {r.json()['token']}", "X-Forwarded-For": ip}

    # -- through the API --------------------------------------------------------------------------

    def brute_force(self) -> set[str]:
        ip, uid = "203.0.113.10", self.a
        for i in range(14):
            self._login(uid, ip, password=f"guess-{i}")
        return {f"ip:{ip}", f"account:{uid}"}

    def credential_stuffing(self) -> set[str]:
        ip = "203.0.113.20"  # nine accounts once each (unknown ones too): stuffing, below brute force's 10
        for n in range(9):
            email = f"leaked{n}@example.net" if n % 2 else _email(self.a + 1 + n % 8)
            self.client.post("/api/auth/login", headers={"X-Forwarded-For": ip},
                             json={"email": email, "password": "Summer2026!"})
        return {f"ip:{ip}"}

    def known_bad_ip(self) -> set[str]:
        ip = "198.51.100.66"
        self._login(self.a + 2, ip)
        return {f"ip:{ip}"}

    def access_violations(self) -> set[str]:
        ip = "203.0.113.30"
        for _ in range(12):
            self.client.post("/admin/faults", headers={"X-Forwarded-For": ip}, json={"slow_ms": 1})
        return {f"ip:{ip}"}

    def structuring(self) -> set[str]:
        uid = self.a + 3
        headers = self._session(uid, "10.200.0.3")
        for amount in (4850, 4900, 4790, 4950):  # just under a 5000 reporting threshold
            self.client.post("/api/wallet/deposit", headers=headers,
                             json={"amount": amount, "provider": "visa"}).raise_for_status()
        return {f"account:{uid}"}

    def shared_ip(self) -> set[str]:
        ip = "203.0.113.40"
        for uid in range(self.a, self.a + 6):
            self._login(uid, ip).raise_for_status()
        return {f"ip:{ip}"}

    def purchase_velocity(self) -> set[str]:
        uid = self.a + 4
        headers = self._session(uid, "10.200.0.4")
        self.client.post("/api/wallet/deposit", headers=headers, json={"amount": 500, "provider": "visa"})
        for _ in range(60):
            self.client.post("/api/tickets", headers=headers,
                             json={"numbers": self.rng.sample(range(1, 38), 6)}).raise_for_status()
        return {f"account:{uid}"}

    def slow_endpoint(self, requests: int = 24) -> set[str]:
        headers = self._session(self.a + 5, "10.200.0.5")
        self.admin_calls += [datetime.now(UTC)] * 2
        self.client.post("/admin/faults", json={"slow_ms": 1300, "slow_path": "/api/wallet"}).raise_for_status()
        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: self.client.get("/api/wallet", headers=headers), range(requests)))
        finally:
            self.client.post("/admin/faults", json={}).raise_for_status()
        return {"endpoint:GET /api/wallet"}

    # -- straight into the database ---------------------------------------------------------------

    def deposit_withdrawal_no_play(self, now: datetime) -> set[str]:
        cash_out, player = self.a + 6, self.a + 7
        with psycopg.connect(self.dsn) as conn:
            # deposit 3000, one ticket, withdraw 2900 within two hours: money through, no play
            _ledger(conn, cash_out, [(now - timedelta(hours=3), "deposit", 3000),
                                     (now - timedelta(hours=2, minutes=50), "ticket_purchase", -5.90),
                                     (now - timedelta(hours=1), "withdrawal", -2900)])
            # a player: deposit 200, play 177, withdraw winnings of 150 — legitimate
            _ledger(conn, player, [(now - timedelta(hours=3), "deposit", 200)]
                    + [(now - timedelta(hours=2, minutes=59 - i), "ticket_purchase", -5.90) for i in range(30)]
                    + [(now - timedelta(hours=1), "prize", 150), (now - timedelta(minutes=30), "withdrawal", -150)])
        return {f"account:{cash_out}"}

    def admin_off_hours(self, now: datetime) -> set[str]:
        day = _last_business_day(now, self.business_days)
        with psycopg.connect(self.dsn) as conn:
            for h, who in ((2, "mallory"), (3, "mallory"), (10, "rivka"), (11, "moshe"), (14, "rivka")):
                conn.execute("INSERT INTO admin_actions (admin_user, action, target, details, ip, created_at) "
                             "VALUES (%s, 'ban_user', %s, '{}', '10.0.9.9', %s)",
                             (who, f"user:{self.a}", day.replace(hour=h, minute=17)))
        return {"admin:mallory"}

    def admin_balance_without_transaction(self, now: datetime) -> set[str]:
        day = _last_business_day(now, self.business_days).replace(hour=9)
        uid_ok, uid_bad = self.a + 8, self.a + 9
        with psycopg.connect(self.dsn) as conn:
            wallet_ok, wallet_bad = (_wallet(conn, u) for u in (uid_ok, uid_bad))
            ok = _admin(conn, "dana", wallet_ok, 250, day)
            _ledger(conn, uid_ok, [(day + timedelta(minutes=1), "refund", 250)], admin_action=ok)
            bad = _admin(conn, "dana", wallet_bad, 800, day + timedelta(minutes=30))
            conn.execute("UPDATE wallets SET balance = balance + 800 WHERE id = %s", (wallet_bad,))  # no trail
        return {f"action:{bad}"}

    def plant(self, patterns: Iterable[str], now: datetime | None = None) -> dict[str, set[str]]:
        now = now or datetime.now(UTC)
        truth: dict[str, set[str]] = {}
        for p in patterns:
            if p not in PATTERNS:
                raise ValueError(f"unknown pattern {p!r}; known: {', '.join(PATTERNS)}")
            method = getattr(self, p)
            truth[p] = method(now) if p in ("deposit_withdrawal_no_play", "admin_off_hours",
                                            "admin_balance_without_transaction") else method()
        start, end = self.business_hours
        if "admin_off_hours" in truth and any(  # the fault calls above are admin actions too
                at.isoweekday() not in self.business_days or not start <= at.hour < end for at in self.admin_calls):
            truth["admin_off_hours"].add("admin:127.0.0.1")
        return truth

    def close(self) -> None:
        self.client.close()


def plant(url: str, dsn: str, patterns: Iterable[str] = PATTERNS, **kw) -> dict[str, set[str]]:
    """Plant ``patterns``; per detector the subjects it must find."""
    planter = Planter(url, dsn, **kw)
    try:
        return planter.plant(patterns)
    finally:
        planter.close()


def _last_business_day(now: datetime, days: set[int]) -> datetime:
    d = (now - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    while d.isoweekday() not in days:
        d -= timedelta(days=1)
    return d


def _wallet(conn: psycopg.Connection, uid: int) -> int:
    return conn.execute("SELECT id FROM wallets WHERE user_id = %s", (uid,)).fetchone()[0]


def _admin(conn: psycopg.Connection, who: str, wallet: int, amount: float, at: datetime) -> int:
    return conn.execute("INSERT INTO admin_actions (admin_user, action, target, details, ip, created_at) "
                        "VALUES (%s, 'adjust_balance', %s, jsonb_build_object('amount', %s::numeric), '10.0.9.9', %s) "
                        "RETURNING id", (who, f"wallet:{wallet}", amount, at)).fetchone()[0]


def _ledger(conn: psycopg.Connection, uid: int, rows, admin_action: int | None = None) -> None:
    """Transactions on a user's wallet, the balance kept equal to their sum."""
    wallet = _wallet(conn, uid)
    for at, kind, amount in rows:
        meta = {"planted": True, **({"admin_action": admin_action} if admin_action else {})}
        conn.execute("INSERT INTO transactions (wallet_id, kind, amount, created_at, reference, metadata) "
                     "VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
                     (wallet, kind, Decimal(str(amount)), at, f"planted-{kind}", Jsonb(meta)))
        conn.execute("UPDATE wallets SET balance = balance + %s WHERE id = %s", (Decimal(str(amount)), wallet))
