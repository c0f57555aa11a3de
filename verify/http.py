"""Checks of the application tier over HTTP: does it answer, how fast, and does a patient
registration (挂号) go in and come back out."""

from __future__ import annotations

import secrets

from pydantic import BaseModel, ConfigDict, Field

from drills.model.durations import Duration
from drills.model.errors import DrillError
from verify.result import Observation, Probe


class HttpParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(
        default=None, description="Path to ask; default the node's health path."
    )
    status: int = Field(default=200, ge=100, le=599)
    max_latency: Duration | None = Field(default=None, description="Slowest answer allowed.")


class RegistrationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    department: str = "急诊"
    max_latency: Duration | None = Field(
        default=None, description="Slowest write-and-read-back allowed."
    )


def answers(probe: Probe, role: str, params: HttpParams) -> Observation:
    """The service answers a GET with the expected status (and fast enough)."""
    _, node = probe.node(role)
    path = params.path or (node.http.health_path if node.http else "/health")
    response = probe.http(role).request("GET", path)
    latency_ms = round(response.seconds * 1000, 1)
    expected = f"HTTP {params.status}" + (
        f" within {params.max_latency * 1000:g} ms" if params.max_latency is not None else ""
    )
    held = response.status == params.status and (
        params.max_latency is None or response.seconds <= params.max_latency
    )
    return Observation({"status": response.status, "latency_ms": latency_ms}, expected, held)


def registration_roundtrip(probe: Probe, role: str, params: RegistrationParams) -> Observation:
    """A registration is written through the application and read back, unchanged."""
    http = probe.http(role)
    patient = f"drctl-check-{secrets.token_hex(4)}"
    expected = "a registration written and read back" + (
        f" within {params.max_latency * 1000:g} ms" if params.max_latency is not None else ""
    )
    try:
        created = http.request(
            "POST",
            "/registrations",
            body={"patient_name": patient, "department": params.department},
        )
        if created.status != 201:
            return Observation(
                f"POST answered HTTP {created.status}", expected, False, created.body[:200]
            )
        record = created.json() or {}
        read = http.request("GET", f"/registrations/{record.get('id')}")
    except DrillError as exc:
        return Observation(f"unreachable: {exc.message}", expected, False)
    back = read.json() or {}
    seconds = created.seconds + read.seconds
    same = read.status == 200 and back.get("patient_name") == patient
    fast = params.max_latency is None or seconds <= params.max_latency
    observed = (
        f"registration #{record.get('id')} written and read back in {seconds * 1000:.1f} ms"
        if same
        else f"read back answered HTTP {read.status}: {read.body[:120]}"
    )
    return Observation(observed, expected, same and fast)
