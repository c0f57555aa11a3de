"""Approval of a real run on a protected environment.

An approval is typed, not clicked: the approver names themselves and the ticket, types the
environment's name back, and gives a reason. It comes from the Prefect UI (a paused run with a
form) or from the CLI (options or prompts). Judging it is pure; asking for it is the flow's job.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Approval(BaseModel):
    """What an approver says. The Prefect UI renders these fields as the resume form."""

    model_config = ConfigDict(extra="forbid")

    approver: str = Field(min_length=1, description="Who approves this real run.")
    ticket: str = Field(min_length=1, description="Change or incident ticket.")
    environment_confirmation: str = Field(
        description="Type the environment's name to confirm which systems this run changes."
    )
    reason: str = Field(min_length=1, description="Why this run is needed now.")
    approve: bool = Field(default=True, description="Untick to deny the run.")
    via: Literal["cli", "prefect-ui"] = "cli"


def refusal(approval: Approval, environment: str) -> str | None:
    """Why the approval does not allow the run, or None when it does."""
    if not approval.approve:
        return f"approval denied by {approval.approver}: {approval.reason}"
    if approval.environment_confirmation.strip() != environment:
        return (
            f"approval by {approval.approver} typed {approval.environment_confirmation!r}, "
            f"not the environment's name {environment!r}"
        )
    return None
