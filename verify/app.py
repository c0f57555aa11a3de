"""Inspection items of the application tier (``app.*``), beside ``http.answers`` (the health URL)
and ``his.registration_roundtrip`` (a real registration through the application).

    app.response_time     N requests to a path (the health URL by default): p50 and p95 of
                          their times against thresholds, every answer with the expected status
    app.tls_certificate   where the application is served over HTTPS, the days left before its
                          certificate expires (read from the application's own host and port,
                          as a client sees it)

Both ask from where drctl runs, as the application's clients do: through the node's HTTP
session, and for TLS a handshake with the service (``drills.executors.tls``).
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from drills.executors.tls import peer_certificate
from drills.model.durations import Duration
from drills.model.errors import DrillError, InputError
from verify.result import Observation, Probe


class AppParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


class ResponseTimeParams(AppParams):
    path: str | None = Field(default=None, description="Path asked; default the health path.")
    requests: int = Field(default=20, ge=1, le=1000, description="Requests made, one by one.")
    status: int = Field(default=200, ge=100, le=599)
    max_p95: Duration = Field(default=1.0, description="Slowest the 95th percentile may be.")
    max_p50: Duration | None = Field(
        default=None, description="Slowest the median may be (default: not judged)."
    )


def response_time(probe: Probe, role: str, params: ResponseTimeParams) -> Observation:
    """Response time over N requests: p50 and p95 within their thresholds, every answer OK."""
    _, node = probe.node(role)
    path = params.path or (node.http.health_path if node.http else "/health")
    http = probe.http(role)
    seconds: list[float] = []
    statuses: dict[str, int] = {}
    for _ in range(params.requests):
        started = time.monotonic()
        try:
            answer = http.request("GET", path)
            status, took = str(answer.status), float(answer.seconds)
        except DrillError as exc:
            status, took = f"error: {exc.message[:80]}", time.monotonic() - started
        statuses[status] = statuses.get(status, 0) + 1
        seconds.append(took)
    ok = statuses.get(str(params.status), 0)
    p50, p95 = percentile(seconds, 0.5), percentile(seconds, 0.95)
    observed = {
        "path": path,
        "requests": params.requests,
        "ok": ok,
        "failed": params.requests - ok,
        "statuses": statuses,
        "p50_ms": round(p50 * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "limits": {
            "max_p95_ms": round(params.max_p95 * 1000, 1),
            "max_p50_ms": None if params.max_p50 is None else round(params.max_p50 * 1000, 1),
            "status": params.status,
        },
    }
    held = (
        ok == params.requests
        and p95 <= params.max_p95
        and (params.max_p50 is None or p50 <= params.max_p50)
    )
    expected = f"{params.requests} x HTTP {params.status}, p95 <= {params.max_p95 * 1000:g} ms" + (
        f", p50 <= {params.max_p50 * 1000:g} ms" if params.max_p50 is not None else ""
    )
    detail = (
        f"GET {path} x{params.requests}: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"{ok} answered {params.status}"
    )
    return Observation(observed, expected, held, detail)


class TlsParams(AppParams):
    host: str | None = Field(
        default=None, description="Where the HTTPS service answers; default: from base_url."
    )
    port: int | None = Field(default=None, ge=1, le=65535)
    server_name: str | None = Field(default=None, description="SNI name; default the host.")
    min_days_left: int = Field(
        default=30, ge=0, le=3650, description="Fewest days before the certificate expires."
    )
    require_trusted: bool = Field(
        default=False,
        description="Also a finding when the system's CAs do not trust the chain (internal CAs "
        "and self-signed certificates are common in hospitals, so off by default).",
    )


def tls_certificate(probe: Probe, role: str, params: TlsParams) -> Observation:
    """The certificate of the application's HTTPS service is valid for ``min_days_left`` more
    days (where the application is not served over HTTPS: a note, not a finding)."""
    name, node = probe.node(role)
    url = urlsplit(node.http.base_url) if node.http else None
    host = params.host or (url.hostname if url else None)
    port = params.port or (url.port if url and url.port else None)
    https = params.port is not None or (url is not None and url.scheme == "https")
    expected = f"a certificate valid for at least {params.min_days_left} more day(s)"
    observed: dict[str, Any]
    if not https:
        observed = {"https": False, "url": node.http.base_url if node.http else None}
        return Observation(observed, expected, True, "not served over HTTPS: no certificate")
    if host is None:
        raise InputError(f"app.tls_certificate: no host to ask on {name} (give host)", host=name)
    port = port or 443
    cert = peer_certificate(host, port, server_name=params.server_name, node=name)
    now = time.time()
    days_left = round((cert.not_after.timestamp() - now) / 86400, 1)
    observed = {
        "https": True,
        "endpoint": f"{host}:{port}",
        "subject": cert.subject,
        "issuer": cert.issuer,
        "not_before": cert.not_before.isoformat(timespec="seconds"),
        "not_after": cert.not_after.isoformat(timespec="seconds"),
        "days_left": days_left,
        "self_signed": cert.self_signed,
        "trusted": cert.trusted,
        "trust_error": cert.trust_error,
        "sha256": cert.sha256,
        "protocol": cert.protocol,
        "limits": {
            "min_days_left": params.min_days_left,
            "require_trusted": params.require_trusted,
        },
    }
    valid_now = cert.not_before.timestamp() <= now
    held = valid_now and days_left >= params.min_days_left
    if params.require_trusted and not cert.trusted:
        held = False
    detail = (
        f"{host}:{port}: {cert.subject}, expires {observed['not_after']} "
        f"({days_left:g} days left)"
        + ("" if cert.trusted else f"; not trusted: {cert.trust_error}")
    )
    return Observation(observed, expected, held, detail)
