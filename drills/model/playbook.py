"""The playbook: the *how* of a drill, as typed models loaded from YAML.

A playbook names the roles it needs, its objectives, the preconditions that gate it, its ordered
steps (each an action on a role, with checks that must hold within a deadline, a failure policy and
an optional milestone), and the rollback steps that undo them.

These models only describe; they do no I/O. ``drills.engine.validation`` checks what the
models cannot see alone (action and check names and their parameters, step references, milestones).
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drills.model.durations import PATTERN as DURATION_PATTERN
from drills.model.durations import Duration

ID_PATTERN = r"^[a-z][a-z0-9_]*$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
ROLE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # as an environment's node names
Role = Annotated[str, Field(pattern=ROLE_PATTERN)]
ENGINE_PATTERN = r"^[a-z][a-z0-9_]*$"  # an engine's name, as engines register it
# Steps in `steps`, and in `rollback`: the largest shipped playbook has 13. A longer list is
# refused before any of its steps is validated (the YAML limits bound the reading before that).
MAX_STEPS = 500


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Kind(StrEnum):
    backup = "backup"
    restore = "restore"
    switchover = "switchover"
    failover = "failover"
    migration = "migration"
    emergency = "emergency"
    inspection = "inspection"
    change = "change"  # an update with its update log (更新日志): backup, apply, verify, rollback


class Mode(StrEnum):
    drill = "drill"
    real = "real"


class OnFailure(StrEnum):
    abort = "abort"
    continue_ = "continue"
    rollback = "rollback"


class Title(Strict):
    en: str = Field(min_length=1)
    zh: str = Field(min_length=1)


class Check(Strict):
    """A question asked of a target, with its expectation in ``with``."""

    check: str = Field(description="Check name, e.g. pg.is_primary (see `drctl schema`).")
    target: str | None = Field(
        default=None, description="Role asked; defaults to the step's target."
    )
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class Precondition(Check):
    """A check that gates the run; ``modes`` says in which run modes it is asked (a real
    failover starts from a primary that is already down, which a drill must first see up)."""

    modes: list[Mode] = Field(
        default_factory=lambda: [Mode.drill, Mode.real],
        description="Modes in which the precondition is asked; in other modes it is not.",
    )


class Step(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Unique step id; the task run's name.")
    title: Title | None = None
    action: str = Field(description="Action name, e.g. pg.promote (see `drctl schema`).")
    target: str = Field(description="The role the action acts on.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: Duration = Field(default=60.0, description="Deadline for the action itself.")
    retries: int = Field(default=0, ge=0, le=20, description="Extra attempts of the action.")
    retry_delay: Duration = 1.0
    verify: list[Check] = Field(
        default_factory=list, description="Checks that must all hold within `within`."
    )
    within: Duration = Field(default=30.0, description="Deadline for the checks to hold.")
    poll: Duration = Field(default=0.05, description="How often checks are asked again.")
    on_failure: OnFailure = Field(default=OnFailure.abort)
    milestone: str | None = Field(default=None, pattern=ID_PATTERN)
    milestone_at: Literal["started", "returned", "converged", "ended"] = "ended"
    modes: list[Mode] = Field(
        default_factory=lambda: [Mode.drill, Mode.real],
        description="Modes in which the step runs; in other modes it is recorded as skipped.",
    )
    override: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Name of an override that lets the run go on when this step's checks fail; "
        "the run must carry it explicitly (--override NAME) and the record shows it.",
    )
    undoes: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="For a rollback step: the step it undoes. It runs only if that step started.",
    )


class Objective(Strict):
    target: Duration
    from_: str | None = Field(default=None, alias="from", pattern=ID_PATTERN)
    to: str | None = Field(default=None, pattern=ID_PATTERN)
    measure: Literal["rpo", "write_outage", "service_outage"] | None = None
    source: str = Field(default="", description="Where the target comes from (contract, level).")

    @model_validator(mode="after")
    def _one_basis(self) -> Objective:
        if self.measure is None and (self.from_ is None or self.to is None):
            raise ValueError("an objective needs `from` and `to` milestones, or a `measure`")
        if self.measure is not None and (self.from_ is not None or self.to is not None):
            raise ValueError("an objective has either `from`/`to` milestones or a `measure`")
        return self


# Objectives that may be written in short form (``rto: 5m``) and what they measure.
WELL_KNOWN_OBJECTIVES: dict[str, dict[str, str]] = {
    "rto": {"from": "incident_declared", "to": "service_restored"},
    "activation": {"from": "incident_declared", "to": "activation_started"},
    "response": {"from": "incident_declared", "to": "engineer_acknowledged"},
    "rpo": {"measure": "rpo"},
    "write_outage": {"measure": "write_outage"},
    "service_outage": {"measure": "service_outage"},
}


class Measurements(Strict):
    canary: bool = Field(default=False, description="Run the canary writer during the drill.")
    canary_interval: Duration = 0.05
    write_probe: bool = Field(default=False, description="Run the write probe during the drill.")
    write_probe_interval: Duration = 0.01
    writer_roles: list[str] = Field(
        default_factory=lambda: ["primary", "standby"],
        description="Roles whose nodes the writers may reach; they follow whichever is writable.",
    )
    service_probe: bool = Field(
        default=False,
        description="Register patients through the application during the drill (service outage).",
    )
    service_role: str = Field(default="app", description="Role of the application node.")
    service_probe_interval: Duration = 0.05
    settle: Duration = Field(
        default=2.0,
        description="After the last step, wait at most this long for a write on the "
        "new primary before the writers stop.",
    )


class Playbook(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    version: int | str
    kind: Kind
    title: Title
    description: str = ""
    roles: list[Role] = Field(min_length=1, description="Roles needed from the environment.")
    engines: list[str] = Field(
        default_factory=list,
        description="Database engines the playbook supports (postgres, oracle); empty: any. "
        "A run on an environment whose database nodes are another engine is refused.",
    )
    objectives: dict[str, Objective] = Field(default_factory=dict)
    measurements: Measurements = Field(default_factory=Measurements)
    preconditions: list[Precondition] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    rollback: list[Step] = Field(default_factory=list, max_length=MAX_STEPS)

    @field_validator("engines")
    @classmethod
    def _engine_names(cls, engines: list[str]) -> list[str]:
        for engine in engines:
            if not re.fullmatch(ENGINE_PATTERN, engine):
                raise ValueError(f"engine {engine!r} must match {ENGINE_PATTERN} (e.g. oracle)")
        return engines

    @field_validator("steps", "rollback", mode="before")
    @classmethod
    def _not_too_many(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_STEPS:
            raise ValueError(f"{len(value):,} steps; the limit is {MAX_STEPS} per list")
        return value

    @model_validator(mode="before")
    @classmethod
    def _expand_short_objectives(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("objectives"), dict):
            return data
        expanded: dict[str, Any] = {}
        for name, spec in data["objectives"].items():
            known = WELL_KNOWN_OBJECTIVES.get(str(name), {})
            if isinstance(spec, str | int | float) and not isinstance(spec, bool):
                spec = {"target": spec, **known}
            elif isinstance(spec, dict) and not {"from", "to", "measure"} & spec.keys():
                spec = {**spec, **known}
            expanded[name] = spec
        return {**data, "objectives": expanded}

    def step(self, step_id: str) -> Step:
        for step in (*self.steps, *self.rollback):
            if step.id == step_id:
                return step
        raise KeyError(step_id)


def playbook_sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def playbook_json_schema() -> dict[str, Any]:
    schema = Playbook.model_json_schema(by_alias=True)
    # Objectives may be written short (`rpo: 0s`): say so to editors too.
    objectives = schema["properties"]["objectives"]
    short = {"anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"type": "number"}]}
    objectives["additionalProperties"] = {"anyOf": [objectives["additionalProperties"], short]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "drctl playbook"
    return schema
