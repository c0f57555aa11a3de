"""The run request: what to run, where, how, and on whose word."""

from __future__ import annotations

import getpass
import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drills.model.approval import Approval


class RunRequest(BaseModel):
    """What to run, where, how, and on whose word. The Prefect UI renders it as a form."""

    model_config = ConfigDict(extra="forbid")

    playbook: str = Field(description="Playbook file, or the name of a shipped playbook.")
    environment: str = Field(description="Environment name (e.g. lab) or file.")
    mode: Literal["drill", "real"] = Field(
        default="drill", description="drill: may touch unprotected environments only."
    )
    operator: str = Field(default_factory=getpass.getuser, description="Who runs it.")
    ticket: str | None = Field(default=None, description="Change or incident ticket.")
    overrides: list[str] = Field(
        default_factory=list, description="Overrides the playbook offers, given explicitly."
    )
    objectives: dict[str, str | float] = Field(
        default_factory=dict,
        description="Objective targets that replace the playbook's, by name (e.g. rto: 2m).",
    )
    approval: Approval | None = Field(
        default=None,
        description="For a real run on a protected environment, given up front (CLI); when "
        "absent, the run pauses and asks for it.",
    )
    approval_timeout: int = Field(
        default=900, ge=1, le=86400, description="Seconds to wait for an approval."
    )
    incident_declared_at: datetime | None = Field(
        default=None,
        description="When the incident was declared (ISO 8601, UTC; e.g. 2026-11-27T01:02:03Z); "
        "a playbook's incident.declared step stamps it. Empty: the run's start.",
    )
    declared_by: str | None = Field(default=None, description="Who declared the incident.")

    @field_validator("incident_declared_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if value.timestamp() > time.time() + 60:
            raise ValueError("the incident cannot be declared in the future")
        return value
