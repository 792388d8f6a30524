"""Fetch the platform's own ``/api/metrics`` (runbook section 10) for the dashboard's SystemMetrics:
active users, error rate and uptime are known only to the platform. Only from an endpoint the
operator configured (its URL's path ends in ``/api/metrics``), with that endpoint's timeout and CA
bundle; a failure is a reason, never an exception, and never a number."""

from __future__ import annotations

import json
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from bvh_ops.config import Endpoint
from bvh_ops.monitoring.http import MAX_BODY, HttpSession, _reason

METRICS_PATH = "/api/metrics"


def metrics_endpoint(endpoints: Sequence[Endpoint]) -> Endpoint | None:
    """The first configured endpoint whose URL is the platform's metrics endpoint."""
    for ep in endpoints:
        if urlsplit(ep.url).path.rstrip("/").endswith(METRICS_PATH):
            return ep
    return None


def fetch_platform_metrics(endpoint: Endpoint) -> tuple[dict | None, str]:
    """(the JSON object the endpoint answers, '') or (None, why not)."""
    session = HttpSession()
    try:
        resp = session.client(endpoint.tls_ca_file).get(endpoint.url, timeout=httpx.Timeout(endpoint.timeout_seconds))
        if resp.status_code != 200:
            return None, f"{endpoint.name}: HTTP {resp.status_code}"
        if len(resp.content) > MAX_BODY:
            return None, f"{endpoint.name}: body larger than {MAX_BODY} bytes"
        body = json.loads(resp.content)
    except httpx.HTTPError as exc:
        return None, f"{endpoint.name}: {_reason(exc, endpoint.url)}"
    except (OSError, ssl.SSLError) as exc:
        return None, f"{endpoint.name}: {getattr(exc, 'strerror', None) or exc}"
    except ValueError:
        return None, f"{endpoint.name}: the body is not JSON"
    finally:
        session.close()
    if not isinstance(body, dict):
        return None, f"{endpoint.name}: the body is not a JSON object"
    return body, ""
