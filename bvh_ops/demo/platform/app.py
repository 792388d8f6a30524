"""The sample lottery API (Starlette): login, draws, wallet, deposit, ticket purchase, the
runbook's four monitoring endpoints, and ``/admin/faults`` (loopback only).

Every ``/api/`` request passes :class:`Instrument`: the ``slow_ms`` fault delays it (monitoring
endpoints too, as a slow platform is slow for its probes), the ``error_rate`` fault fails business
requests with 500 (never the monitoring endpoints, which report the rate they see), business
requests are timed into the rolling window, every business request gets an access line
(``request.completed``, performance: method, path, status, durationMs, ip — the input of the
log analysis' per-endpoint percentiles), and slow requests and 5xx responses are logged.

The client address is the peer's, or — when the peer is loopback, i.e. a local reverse proxy —
the last address of its ``X-Forwarded-For`` (the workload driver and the pattern planter use it
to act as many clients)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from contextlib import asynccontextmanager
from decimal import Decimal, InvalidOperation

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bvh_ops.demo.platform import db as ops
from bvh_ops.demo.platform.accounts import open_session, password_ok, session_user
from bvh_ops.demo.platform.faults import parse_faults
from bvh_ops.demo.platform.health import detailed_payload, health_payload, metrics_payload, status_payload
from bvh_ops.demo.platform.state import PlatformConfig, PlatformState
from bvh_ops.errors import DatabaseError, DatabaseUnavailable

MONITORING = frozenset({"/api/health", "/api/health/detailed", "/api/metrics", "/api/status"})
PROVIDERS = ("visa", "mastercard", "paypal", "bit")
MAX_DEPOSIT = Decimal("10000")
DRAWS_TTL_S = 5.0
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Instrument:
    """Pure ASGI middleware: faults, timing, slow-request and error logging."""

    def __init__(self, app, state: PlatformState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        path, st = scope["path"], self.state
        spec = st.faults.spec
        started = time.perf_counter()
        status = 0

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if spec.slow_ms and spec.slow_path in ("", path):
                await asyncio.sleep(spec.slow_ms / 1000)
            if path not in MONITORING and spec.error_rate and random.random() < spec.error_rate:
                await _error(500, "internal error (fault: error_rate)")(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        except Exception as exc:
            st.log.write("application", "request.exception", level="error", method=scope["method"], path=path,
                         error=exc.__class__.__name__, message=str(exc)[:300])
            if not status:
                await _error(500, "internal error")(scope, receive, send_status)
        finally:
            ms = round((time.perf_counter() - started) * 1000, 2)
            if path not in MONITORING:
                st.window.record(ms, status or 500)
            if path == "/api/wallet/deposit":
                st.payments.record(ms, status or 500)
            elif path == "/api/auth/login":
                st.logins.record(ms, status or 500)
            if status >= 500:
                st.log.write("application", "request.failed", level="error", method=scope["method"],
                             path=path, status=status, durationMs=ms)
            if path not in MONITORING:
                st.log.write("performance", "request.completed", method=scope["method"], path=path,
                             status=status or 500, durationMs=ms, ip=_scope_ip(scope))
            if ms > st.config.slow_request_ms:
                st.log.write("performance", "request.slow", level="warning", method=scope["method"],
                             path=path, status=status, durationMs=ms,
                             thresholdMs=st.config.slow_request_ms)


def _scope_ip(scope) -> str | None:
    """The client's address: the peer, or a loopback proxy's last X-Forwarded-For hop."""
    peer = scope["client"][0] if scope.get("client") else None
    if peer in LOOPBACK:
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                hop = value.decode("latin-1").split(",")[-1].strip()
                return hop or peer
    return peer


def _state(request: Request) -> PlatformState:
    return request.app.state.platform


def _client_ip(request: Request) -> str | None:
    return _scope_ip(request.scope)


async def _body(request: Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


async def _user(request: Request) -> int | None:
    st = _state(request)
    user_id = await run_in_threadpool(session_user, st.cache, request.headers.get("authorization"))
    if user_id is not None:
        st.active.seen(user_id)
    return user_id


# -- business endpoints --------------------------------------------------------------------------

async def login(request: Request) -> JSONResponse:
    st = _state(request)
    try:
        body = await _body(request)
        email, password = str(body["email"]), str(body["password"])
    except (ValueError, KeyError):
        return _error(400, "expected {\"email\": …, \"password\": …}")
    ip = _client_ip(request)
    found = await run_in_threadpool(ops.find_user, st.db, email)
    reason = None if found else "unknown_user"
    if found and not found[1]:
        reason = "inactive_user"
    elif found and not password_ok(email, password):
        reason = "bad_password"
    if reason:
        st.log.write("security", "auth.login_failed", level="warning", email=email, ip=ip, reason=reason,
                     userId=found[0] if found else None)
        await run_in_threadpool(ops.record_failed_login, st.db, user_id=found[0] if found else None, ip=ip,
                                reason=reason)
        return _error(401, "invalid e-mail or password")
    token = await run_in_threadpool(open_session, st.cache, found[0])
    st.active.seen(found[0])
    st.log.write("security", "auth.login", email=email, ip=ip, userId=found[0])
    return JSONResponse({"token": token, "userId": found[0]})


async def draws(request: Request) -> JSONResponse:
    st = _state(request)
    cached = await run_in_threadpool(st.cache.get, "draws:list")
    if cached is not None:
        st.cache_hits += 1
        return JSONResponse({"draws": json.loads(cached), "cached": True})
    st.cache_misses += 1
    rows = await run_in_threadpool(ops.list_draws, st.db)
    await run_in_threadpool(st.cache.set, "draws:list", json.dumps(rows), DRAWS_TTL_S)
    st.log.write("debug", "cache.miss", key="draws:list")
    return JSONResponse({"draws": rows, "cached": False})


async def wallet(request: Request) -> JSONResponse:
    user_id = await _user(request)
    if user_id is None:
        return _error(401, "log in first")
    funds = await run_in_threadpool(ops.balance, _state(request).db, user_id)
    return JSONResponse({"userId": user_id, "balance": float(funds), "currency": "ILS"})


async def deposit(request: Request) -> JSONResponse:
    st = _state(request)
    user_id = await _user(request)
    if user_id is None:
        return _error(401, "log in first")
    try:
        body = await _body(request)
        amount = Decimal(str(body["amount"])).quantize(Decimal("0.01"))
        provider = str(body.get("provider", "visa"))
    except (ValueError, KeyError, InvalidOperation):
        return _error(400, "expected {\"amount\": 50.00, \"provider\": \"visa\"}")
    if not Decimal("0") < amount <= MAX_DEPOSIT or provider not in PROVIDERS:
        return _error(400, f"amount must be in (0, {MAX_DEPOSIT}] and provider one of {', '.join(PROVIDERS)}")
    done = await run_in_threadpool(ops.deposit, st.db, user_id=user_id, amount=amount, provider=provider,
                                   reference=f"api-{uuid.uuid4().hex[:16]}")
    st.log.write("audit", "wallet.deposit", userId=user_id, amount=float(amount), currency="ILS",
                 provider=provider, transactionId=done["transactionId"], balance=float(done["balance"]))
    return JSONResponse({**done, "balance": float(done["balance"]), "amount": float(amount)})


async def buy_ticket(request: Request) -> JSONResponse:
    st = _state(request)
    user_id = await _user(request)
    if user_id is None:
        return _error(401, "log in first")
    try:
        body = await _body(request)
        numbers = [int(n) for n in body["numbers"]]
        draw_id = int(body["drawId"]) if body.get("drawId") is not None else None
    except (ValueError, KeyError, TypeError):
        return _error(400, "expected {\"numbers\": [six distinct numbers 1-37], \"drawId\": optional}")
    if len(numbers) != 6 or len(set(numbers)) != 6 or not all(1 <= n <= 37 for n in numbers):
        return _error(400, "numbers: six distinct numbers from 1 to 37")
    try:
        done = await run_in_threadpool(ops.purchase, st.db, user_id=user_id, draw_id=draw_id,
                                       numbers=sorted(numbers), reference=f"api-{uuid.uuid4().hex[:16]}")
    except ops.InsufficientFunds as exc:
        return _error(402, str(exc))
    except ops.DrawClosed as exc:
        return _error(409, str(exc))
    st.log.write("audit", "ticket.purchase", userId=user_id, ticketId=done["ticketId"], drawId=done["drawId"],
                 amount=float(done["price"]), currency="ILS", balance=float(done["balance"]))
    return JSONResponse({**done, "price": float(done["price"]), "balance": float(done["balance"])},
                        status_code=201)


# -- monitoring --------------------------------------------------------------------------------

async def _snapshot(request: Request):
    return await run_in_threadpool(_state(request).snapshot)


async def health(request: Request) -> JSONResponse:
    body = health_payload(await _snapshot(request))
    return JSONResponse(body, status_code=503 if body["status"] == "unhealthy" else 200)


async def health_detailed(request: Request) -> JSONResponse:
    body = detailed_payload(await _snapshot(request))
    return JSONResponse(body, status_code=503 if body["status"] == "unhealthy" else 200)


async def metrics(request: Request) -> JSONResponse:
    return JSONResponse(metrics_payload(await _snapshot(request)))


async def status(request: Request) -> JSONResponse:
    return JSONResponse(status_payload(await _snapshot(request)))


# -- admin ---------------------------------------------------------------------------------------

async def admin_faults(request: Request) -> JSONResponse:
    st = _state(request)
    if _client_ip(request) not in LOOPBACK:
        st.log.write("security", "access.denied", level="warning", ip=_client_ip(request), method=request.method,
                     path=request.url.path, status=403)
        return _error(403, "faults are set from the loopback interface only")
    if request.method == "POST":
        try:
            spec = parse_faults(await _body(request))
        except ValueError as exc:
            return _error(400, str(exc))
        st.faults.set(spec)
        st.log.write("audit", "admin.faults", ip=_client_ip(request), faults=spec.as_dict())
    return JSONResponse({**st.faults.spec.as_dict(), "ballast_mb": st.faults.ballast_mb()})


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, f"database unavailable: {exc}")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(500, "database error")


def create_app(config: PlatformConfig) -> Starlette:
    state = PlatformState(config)

    @asynccontextmanager
    async def lifespan(app):
        state.start()
        if config.pid_file is not None:
            config.pid_file.write_text(f"{os.getpid()}\n")
        try:
            yield
        finally:
            # here, not after uvicorn returns: it re-raises the SIGTERM it stopped for
            if config.pid_file is not None:
                config.pid_file.unlink(missing_ok=True)
            state.stop()

    routes = [
        Route("/api/auth/login", login, methods=["POST"]),
        Route("/api/draws", draws),
        Route("/api/wallet", wallet),
        Route("/api/wallet/deposit", deposit, methods=["POST"]),
        Route("/api/tickets", buy_ticket, methods=["POST"]),
        Route("/api/health", health),
        Route("/api/health/detailed", health_detailed),
        Route("/api/metrics", metrics),
        Route("/api/status", status),
        Route("/admin/faults", admin_faults, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={DatabaseUnavailable: _unavailable, DatabaseError: _database_error})
    app.state.platform = state
    app.add_middleware(Instrument, state=state)
    return app
