"""The run request: what to run, where, how, and on whose word.

The operator is the person who answers for the run, never the operating-system account the
orchestrator happens to run as (a worker's ``root``): the Prefect run form requires it, an
event-started run takes it from the event, a scheduled run from its drill definition, and only
the CLI defaults it to the local user. The OS user is recorded apart, in the record's
``orchestrator.os_user``.

Each field's ``title`` is the run form's label, in Chinese and English (the Prefect UI shows it).
"""

from __future__ import annotations

import getpass
import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drills.model.approval import Approval

RunMode = Literal["drill", "real"]


class RunRequest(BaseModel):
    """What to run, where, how, and on whose word."""

    model_config = ConfigDict(extra="forbid")

    playbook: str = Field(
        title="预案 / Playbook", description="A shipped playbook's name, or a playbook file."
    )
    environment: str = Field(
        title="环境 / Environment", description="An environment's name (e.g. lab), or its file."
    )
    mode: RunMode = Field(
        default="drill",
        title="模式 / Mode",
        description="drill: may touch unprotected environments only; real: needs an approval on "
        "a protected one.",
    )
    operator: str = Field(
        default_factory=getpass.getuser,
        min_length=1,
        title="执行人 / Operator",
        description="Who runs this drill and answers for it: a person's name, as the record and "
        "the report show it.",
    )
    ticket: str | None = Field(
        default=None, title="工单 / Ticket", description="The change or incident ticket."
    )
    overrides: list[str] = Field(
        default_factory=list,
        title="放行项 / Overrides",
        description="Overrides the playbook offers, given explicitly (e.g. unfenced_promotion).",
    )
    objectives: dict[str, str | float] = Field(
        default_factory=dict,
        title="目标值 / Objective targets",
        description="Targets that replace the playbook's, by name (e.g. rto: 2m); empty: the "
        "playbook's.",
    )
    approval: Approval | None = Field(
        default=None,
        description="For a real run on a protected environment, given up front (CLI); when "
        "absent, the run pauses and asks for it.",
    )
    approval_timeout: int = Field(
        default=900,
        ge=1,
        le=86400,
        title="审批等待（秒） / Approval wait (s)",
        description="Seconds a real run on a protected environment waits for its approval.",
    )
    incident_declared_at: datetime | None = Field(
        default=None,
        title="事件宣布时间 / Incident declared at",
        description="When the incident was declared (ISO 8601, UTC; e.g. 2026-11-27T01:02:03Z); "
        "a playbook's incident.declared step stamps it. Empty: the run's start.",
    )
    declared_by: str | None = Field(
        default=None, title="宣布人 / Declared by", description="Who declared the incident."
    )

    @field_validator("operator")
    @classmethod
    def _someone(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the operator must name a person")
        return value

    @field_validator("incident_declared_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if value.timestamp() > time.time() + 60:
            raise ValueError("the incident cannot be declared in the future")
        return value
