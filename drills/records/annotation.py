"""What people add to a drill after it ran: an annotation, sealed as a record of its own.

A drill record says what the machines did. The closed loop an auditor looks for (plan → drill →
timed log → evaluation → problems → rectification → plan revision) also needs what only people
know: who took part and in which role, the problems found, the rectification with its owner and
deadline, whether the plan must be revised, the planned times, attachments. ``drctl records
annotate ID`` seals these as a new record that refers to the drill; the drill record itself is
never rewritten.

Every field of an annotation is optional. A field an annotation gives replaces what earlier
annotations of the same drill gave (so a later annotation corrects an earlier one, and both stay
in the chain); a field it leaves out keeps its earlier value. ``merge`` applies them in chain
order, and the report names every annotation it used.
"""

from __future__ import annotations

import re
import secrets as token
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drills.model.errors import InputError

ANNOTATION_SCHEMA = "drctl.annotation/1"
MERGED_FIELDS = (
    "participants",
    "problems",
    "rectification",
    "plan_revised",
    "plan_revision_note",
    "planned_start",
    "planned_end",
    "scenario",
    "drill_type",
    "system",
    "data_consistency",
    "attachments",
)


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Participant(Model):
    name: str = Field(min_length=1)
    role: str = Field(min_length=1, description="e.g. 指挥 / commander, 信息科, vendor engineer")
    organisation: str = ""


class Rectification(Model):
    action: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    deadline: date
    status: Literal["open", "done"] = "open"


class Attachment(Model):
    name: str
    sha256: str
    size: int
    description: str = ""


class AnnotationInput(Model):
    """What a person gives (``--file`` YAML or options); everything optional."""

    participants: list[Participant] | None = None
    problems: list[str] | None = None
    rectification: list[Rectification] | None = None
    plan_revised: bool | None = None
    plan_revision_note: str | None = None
    planned_start: datetime | None = None
    planned_end: datetime | None = None
    scenario: str | None = None
    drill_type: str | None = None
    system: str | None = None
    data_consistency: str | None = None
    note: str = ""

    @field_validator("planned_start", "planned_end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-11-27T09:00+08:00")
        return value


class Annotation(Model):
    """An annotation as sealed."""

    schema_: str = Field(default=ANNOTATION_SCHEMA, alias="schema")
    id: str
    refers_to: str
    at: str
    by: str
    participants: list[Participant] | None = None
    problems: list[str] | None = None
    rectification: list[Rectification] | None = None
    plan_revised: bool | None = None
    plan_revision_note: str | None = None
    planned_start: str | None = None
    planned_end: str | None = None
    scenario: str | None = None
    drill_type: str | None = None
    system: str | None = None
    data_consistency: str | None = None
    attachments: list[Attachment] | None = None
    note: str = ""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def given(self) -> list[str]:
        return [name for name in MERGED_FIELDS if getattr(self, name) is not None]


def new_annotation_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-annotation-{token.token_hex(3)}"


def build_annotation(
    drill_id: str,
    given: AnnotationInput,
    *,
    by: str,
    attachments: list[Attachment] | None = None,
    now: datetime | None = None,
) -> Annotation:
    now = now or datetime.now(UTC)
    data = given.model_dump(exclude_none=True)
    for name in ("planned_start", "planned_end"):
        value = getattr(given, name)
        if value is not None:
            data[name] = value.isoformat()
    if "rectification" in data:
        data["rectification"] = [
            {**r, "deadline": r["deadline"].isoformat()} for r in data["rectification"]
        ]
    annotation = Annotation.model_validate(
        {
            **data,
            "id": new_annotation_id(now),
            "refers_to": drill_id,
            "at": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "by": by,
            **({"attachments": attachments} if attachments else {}),
        }
    )
    if not annotation.given() and not annotation.note:
        raise InputError("an annotation needs at least one field (see `drctl records annotate -h`)")
    return annotation


def input_from(data: dict[str, Any], source: str) -> AnnotationInput:
    try:
        return AnnotationInput.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{source}: {where}: {first['msg']}") from exc


PARTICIPANT = re.compile(r"^(?P<name>[^:]+):(?P<role>[^:]+)(?::(?P<org>.+))?$")


def parse_participant(text: str) -> dict[str, str]:
    match = PARTICIPANT.match(text.strip())
    if not match:
        raise InputError(f"--participant {text!r}: write NAME:ROLE or NAME:ROLE:ORGANISATION")
    return {
        "name": match["name"].strip(),
        "role": match["role"].strip(),
        "organisation": (match["org"] or "").strip(),
    }


def parse_rectification(text: str) -> dict[str, str]:
    parts = [p.strip() for p in text.split(";")]
    if len(parts) != 3 or not all(parts):
        raise InputError(f"--rectify {text!r}: write 'ACTION;OWNER;YYYY-MM-DD'")
    return {"action": parts[0], "owner": parts[1], "deadline": parts[2]}


class Merged(BaseModel):
    """The drill's annotations applied in chain order: the current view, and where it came from."""

    model_config = ConfigDict(frozen=True)

    participants: list[Participant] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    rectification: list[Rectification] = Field(default_factory=list)
    plan_revised: bool | None = None
    plan_revision_note: str | None = None
    planned_start: str | None = None
    planned_end: str | None = None
    scenario: str | None = None
    drill_type: str | None = None
    system: str | None = None
    data_consistency: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    sources: list[Annotation] = Field(default_factory=list)


def merge(annotations: list[Annotation]) -> Merged:
    values: dict[str, Any] = {}
    notes: list[str] = []
    attachments: list[Attachment] = []
    for annotation in annotations:
        for name in annotation.given():
            if name == "attachments":
                attachments += annotation.attachments or []
            else:
                values[name] = getattr(annotation, name)
        if annotation.note:
            notes.append(annotation.note)
    return Merged(**values, attachments=attachments, notes=notes, sources=annotations)
