"""The HTTP probe: one request per configured endpoint, judged by its conditions; for https URLs
also the certificate's days to expiry.

The whole request is bounded by the endpoint's ``timeout_seconds``: httpx bounds each connect and
read by it, and the body is read in chunks against the same deadline, so a server that trickles
bytes is cut too (a cut request is ``critical``, with what was seen). The response time is the
time to the response headers (as Gatus measures it). Bodies are read up to ``MAX_BODY`` bytes.
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import httpx

from bvh_ops.conditions import Observation
from bvh_ops.config import Endpoint
from bvh_ops.dsn import redact_dsn
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.thresholds import Limits, below
from bvh_ops.tls import default_context

# Conditions read the body as JSON: a health document is small, a runaway page is not read whole.
MAX_BODY = 1 << 20
USER_AGENT = "bvh-ops-monitor"


class HttpSession:
    """httpx clients shared by one cycle's threads (one per CA bundle): connection pools are built
    once per cycle, not per endpoint; the default TLS context once per process (bvh_ops.tls: 31 ms
    of CPU each), an endpoint's own CA bundle's once per cycle."""

    def __init__(self) -> None:
        self._clients: dict[Path | None, httpx.Client] = {}
        self._lock = threading.Lock()

    def client(self, ca_file: Path | None) -> httpx.Client:
        with self._lock:
            if ca_file not in self._clients:
                # An endpoint's own bundle never depends on the default one loading.
                verify = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else default_context()
                self._clients[ca_file] = httpx.Client(
                    verify=verify, follow_redirects=False, headers={"User-Agent": USER_AGENT},
                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))
            return self._clients[ca_file]

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def probe_endpoint(endpoint: Endpoint, limits: Limits, session: HttpSession) -> list[Check]:
    """The endpoint's check (and its certificate's, for https)."""
    try:
        session.client(endpoint.tls_ca_file)
    except (OSError, ssl.SSLError) as exc:  # the monitor's configuration, not the endpoint, is broken
        detail = f"cannot load tls_ca_file {endpoint.tls_ca_file}: {getattr(exc, 'strerror', None) or exc}"
        return [Check(endpoint.name, endpoint.service, Status.UNKNOWN, None, "ms", detail)]
    obs, problem, cert_error = _request(endpoint, session)
    checks = [_judge(endpoint, obs, problem, limits)]
    if endpoint.url.lower().startswith("https://"):
        checks.append(_certificate(endpoint, obs, cert_error, limits))
    return checks


def _request(endpoint: Endpoint, session: HttpSession) -> tuple[Observation, str, str]:
    """(what was observed, why it is incomplete or '', a certificate error or '')."""
    timeout = endpoint.timeout_seconds
    start = time.monotonic()
    client = session.client(endpoint.tls_ca_file)
    try:
        with client.stream(endpoint.method, endpoint.url, timeout=httpx.Timeout(timeout)) as resp:
            elapsed_ms = (time.monotonic() - start) * 1000
            cert_ms = _cert_expiration_ms(resp)
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) >= MAX_BODY:
                    del body[MAX_BODY:]
                    break
                if time.monotonic() - start > timeout:
                    return (Observation(True, resp.status_code, elapsed_ms, bytes(body), cert_ms),
                            f"body cut after {timeout:g} s (incomplete)", "")
            return Observation(True, resp.status_code, elapsed_ms, bytes(body), cert_ms), "", ""
    except httpx.TimeoutException as exc:
        phase = {httpx.ConnectTimeout: "connecting", httpx.PoolTimeout: "waiting for a connection"}.get(
            type(exc), "waiting for the response")
        return Observation(False), f"no response within {timeout:g} s ({phase})", ""
    except httpx.HTTPError as exc:
        reason = _reason(exc, endpoint.url)
        cert_error = reason if "CERTIFICATE" in reason.upper() else ""
        return Observation(False), f"request failed: {reason}", cert_error


def _reason(exc: Exception, url: str) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or (str(cause) if cause else "") or type(exc).__name__
    # A URL may carry user:password@ — never in a detail.
    return redact_dsn(text.replace(url, redact_dsn(url))).splitlines()[0][:200]


def _cert_expiration_ms(resp: httpx.Response) -> float | None:
    stream = resp.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert or "notAfter" not in cert:
        return None
    return (ssl.cert_time_to_seconds(cert["notAfter"]) - time.time()) * 1000


def _judge(endpoint: Endpoint, obs: Observation, problem: str, limits: Limits) -> Check:
    outcomes = [c.evaluate(obs) for c in endpoint.conditions]
    failed = [o.text for o in outcomes if not o.ok]
    mentions_connected = any(c.placeholder == "[CONNECTED]" for c in endpoint.conditions)
    value = round(obs.response_time_ms, 1) if obs.response_time_ms is not None else None
    parts = [problem] if problem else []
    if failed and obs.connected:  # with no response, every condition fails: the reason says it all
        parts.append("failed: " + "; ".join(failed))
    if failed or (problem and not mentions_connected):
        status = Status.CRITICAL
    elif value is not None and value > limits.response_time_warning_ms:
        status = Status.WARNING
        parts.append(f"slower than {limits.response_time_warning_ms:g} ms")
    else:
        status = Status.OK
    if not parts:
        parts.append(f"HTTP {obs.status} in {value:g} ms, {len(outcomes)} condition(s) met")
    elif obs.connected and obs.status is not None:
        parts.insert(0, f"HTTP {obs.status}")
    return Check(endpoint.name, endpoint.service, status, value, "ms", ", ".join(parts))


def _certificate(endpoint: Endpoint, obs: Observation, cert_error: str, limits: Limits) -> Check:
    name = f"{endpoint.name}:certificate"
    if obs.cert_expiration_ms is None:
        if cert_error:
            return Check(name, endpoint.service, Status.CRITICAL, None, "days", cert_error)
        return Check(name, endpoint.service, Status.UNKNOWN, None, "days", "no TLS session to read a certificate from")
    days = obs.cert_expiration_ms / 86_400_000
    status = below(days, limits.certificate_warning_days, limits.certificate_critical_days)
    return Check(name, endpoint.service, status, round(days, 2), "days", f"certificate expires in {days:.1f} days")
