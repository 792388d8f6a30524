"""A workload over the platform's HTTP API: threads that log sample users in (some with a wrong
password), deposit, and buy tickets, at a target rate, with counters; start() / stop().

Each user comes from an address of their own (``client_ip``, sent as X-Forwarded-For; every
tenth user shares the previous user's, as a household does), and a user refused with the right
password (an inactive account) gives up rather than retrying forever: the normal traffic the log
analysis is measured against (bvh_ops/demo/planter.py plants the abnormal)."""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass

import httpx

from bvh_ops.demo.platform.accounts import sample_password
from bvh_ops.tls import default_context


def client_ip(uid: int) -> str:
    """A sample user's address (10.0.0.0/8); users 10, 20, ... share the previous user's."""
    n = uid - 1 if uid % 10 == 0 else uid
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


@dataclass
class DriverStats:
    requests: int = 0
    logins: int = 0
    failed_logins: int = 0  # refused logins (a deliberately wrong password, an inactive user)
    deposits: int = 0
    purchases: int = 0
    rejected: int = 0  # 4xx other than the intended failed logins
    errors: int = 0  # 5xx and transport errors

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class WorkloadDriver:
    """``rate`` requests per second in total over ``threads`` threads, as users 1..``users`` of
    the sample database (user<N>@example.org)."""

    def __init__(self, url: str, *, rate: float = 20.0, threads: int = 2, users: int = 50,
                 bad_login_share: float = 0.05, deposit_share: float = 0.15, seed: int = 11,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.rate = rate
        self.threads = threads
        self.users = users
        self.bad_login_share = bad_login_share
        self.deposit_share = deposit_share
        self.seed = seed
        self.timeout = timeout
        self.stats = DriverStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._gone: set[int] = set()  # refused with the right password: they stop trying

    def start(self) -> WorkloadDriver:
        self._stop.clear()
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), name=f"platform-driver-{n}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> DriverStats:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=self.timeout + 5)
        self._workers.clear()
        return self.stats

    def __enter__(self) -> WorkloadDriver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _count(self, **inc: int) -> None:
        with self._lock:
            for k, v in inc.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def _run(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        interval = self.threads / self.rate if self.rate > 0 else 0.0
        tokens: dict[int, str] = {}
        with httpx.Client(base_url=self.url, timeout=self.timeout, verify=default_context()) as client:
            while not self._stop.is_set():
                try:
                    self._step(client, rng, tokens)
                except httpx.HTTPError:
                    self._count(requests=1, errors=1)
                if interval and self._stop.wait(interval):
                    break

    def _step(self, client: httpx.Client, rng: random.Random, tokens: dict[int, str]) -> None:
        uid = rng.randint(1, self.users)
        if uid in self._gone:
            return
        email = f"user{uid}@example.org"
        if uid not in tokens:
            wrong = rng.random() < self.bad_login_share
            password = "not-" + sample_password(email) if wrong else sample_password(email)
            r = client.post("/api/auth/login", json={"email": email, "password": password},
                            headers={"X-Forwarded-For": client_ip(uid)})
            self._tally(r, login=True)
            if r.status_code == 200:
                tokens[uid] = r.json()["token"]
                self._count(logins=1)
            elif r.status_code == 401 and not wrong:
                self._gone.add(uid)
            return
        headers = {"Authorization": f"Bearer {tokens[uid]}", "X-Forwarded-For": client_ip(uid)}
        if rng.random() < self.deposit_share:
            amount = rng.choice((20, 50, 100, 250))
            r = client.post("/api/wallet/deposit", json={"amount": amount, "provider": "visa"}, headers=headers)
            self._tally(r)
            if r.status_code == 200:
                self._count(deposits=1)
        else:
            numbers = rng.sample(range(1, 38), 6)
            r = client.post("/api/tickets", json={"numbers": numbers}, headers=headers)
            self._tally(r)
            if r.status_code == 201:
                self._count(purchases=1)
        if r.status_code == 401:  # session gone (expired, or the cache lost it): log in again
            tokens.pop(uid, None)

    def _tally(self, r: httpx.Response, *, login: bool = False) -> None:
        if r.status_code >= 500:
            self._count(requests=1, errors=1)
        elif r.status_code == 401 and login:
            self._count(requests=1, failed_logins=1)
        elif r.status_code >= 400:
            self._count(requests=1, rejected=1)
        else:
            self._count(requests=1)
