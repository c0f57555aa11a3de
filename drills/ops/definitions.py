"""Drill definitions: which playbook runs where, when, in which mode, against which targets.

A definition is a YAML file (``playbooks/drills/*.yaml`` ship as examples; a site keeps its own
in ``$DRCTL_HOME/drills/``). Each one becomes a Prefect deployment of the ``drill`` flow, through
``drctl serve`` or through ``prefect.yaml`` and a worker (``flows.deployments``)::

    name: quarterly-switchover
    title: {en: Quarterly DR switchover drill, zh: 季度容灾切换演练}
    playbook: pg-switchover          # a shipped playbook's name, or a file on the flow's host
    environment: lab                 # an environment name or file on the flow's host
    mode: drill
    objectives: {rto: 2m}            # targets that replace the playbook's, by name
    schedules:
      - cron: "0 2 15-21 1,4,7,10 6" # in Asia/Shanghai unless `timezone` says otherwise
        day_or: false
      - pre_holiday: {at: "09:00", lead_working_days: 3}

A definition that does not parse is a located problem (file, line). One whose playbook is missing
or whose objectives the playbook lacks parses, and carries its problems: listing shows it, serving
skips it, and says why.

A deployment's parameters are the definition's playbook, environment, mode and objective targets.
Who runs it is not among them: a run started from the Prefect UI or API must name its operator
and ticket. A scheduled run names the definition's ``operator`` and ``ticket`` (by default, the
schedule itself), an event-started one the event's ``declared_by`` (``flows.deployments``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator

from drills.engine.documents import YamlDocument, model_problems, parse_model, read_yaml
from drills.engine.loader import (
    bundled_playbooks,
    load_playbook,
    resolve_environment,
    resolve_playbook,
)
from drills.home import drctl_home
from drills.model.durations import parse_duration
from drills.model.errors import DrillError, InputError, Problem, ValidationFailed
from drills.model.playbook import NAME_PATTERN, Strict, Title

SERVED_SUFFIX = "-served"  # drctl serve's deployments are named NAME-served (flows.deployments)

SHANGHAI = "Asia/Shanghai"
DEFAULT_WORK_POOL = "drctl"
TIME_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$"


class PreHoliday(Strict):
    """Run on the verification date before each long statutory break (see drctl holidays)."""

    at: str = Field(default="09:00", pattern=TIME_PATTERN, description="Time of day, HH:MM.")
    lead_working_days: int | None = Field(
        default=None,
        ge=1,
        le=60,
        description="Working days before the break (default: DRCTL_HOLIDAY_LEAD_DAYS or 3).",
    )
    min_days: int | None = Field(
        default=None,
        ge=1,
        le=60,
        description="Breaks of at least this many days (default: DRCTL_HOLIDAY_MIN_DAYS or 4, "
        "i.e. more than 3 days).",
    )


class ScheduleSpec(Strict):
    """One schedule: exactly one of cron, rrule, pre_holiday."""

    cron: str | None = Field(default=None, description="Cron expression.")
    day_or: bool = Field(
        default=True,
        description="false: a day must match both day-of-month and day-of-week "
        "(e.g. the third Saturday).",
    )
    rrule: str | None = Field(default=None, description="An iCalendar RRULE (RFC 5545).")
    pre_holiday: PreHoliday | None = None
    timezone: str = Field(default=SHANGHAI, description="IANA time zone of the schedule.")
    active: bool = True

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleSpec:
        kinds = [k for k in ("cron", "rrule", "pre_holiday") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a schedule has exactly one of cron, rrule, pre_holiday"
                + (f" (this one has {', '.join(kinds)})" if kinds else "")
            )
        if self.cron is not None:
            from prefect._internal.schemas.validators import validate_cron_string

            validate_cron_string(self.cron)
        if self.rrule is not None:
            from prefect._internal.schemas.validators import validate_rrule_string

            validate_rrule_string(self.rrule)
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (write e.g. Asia/Shanghai)") from None
        return value

    @property
    def kind(self) -> str:
        return "cron" if self.cron else "rrule" if self.rrule else "pre_holiday"


class EventTriggerSpec(Strict):
    """Run when an event arrives: a Prefect automation whose action runs the deployment, with
    the event's time as the run request's ``incident_declared_at``."""

    event: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="The event, e.g. dr.incident.declared."
    )
    resource: str | None = Field(
        default=None,
        description="Only events about this resource id (default: "
        "dr.environment.<the definition's environment>).",
    )
    enabled: bool = True


class DrillDefinition(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="The deployment's name.")
    title: Title
    description: str = ""
    playbook: str = Field(description="A shipped playbook's name, or a playbook file.")
    environment: str = Field(description="An environment name or file on the flow's host.")
    mode: Literal["drill", "real"] = "drill"
    ticket: str | None = Field(
        default=None,
        description="The ticket of the scheduled runs (default: 'scheduled (NAME)'); a run from "
        "the UI or API gives its own.",
    )
    operator: str | None = Field(
        default=None,
        description="Recorded as the operator of the scheduled runs: who answers for them "
        "(default: 'schedule of drill definition NAME'); a run from the UI or API names its own.",
    )
    objectives: dict[str, str | float] = Field(
        default_factory=dict, description="Objective targets that replace the playbook's."
    )
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    triggers: list[EventTriggerSpec] = Field(
        default_factory=list, description="Events that start the drill (Prefect automations)."
    )
    tags: list[str] = Field(default_factory=list)
    work_pool: str = Field(
        default=DEFAULT_WORK_POOL, description="Work pool in prefect.yaml (drctl serve needs none)."
    )
    work_queue: str | None = None

    @field_validator("objectives")
    @classmethod
    def _durations(cls, value: dict[str, str | float]) -> dict[str, str | float]:
        for name, target in value.items():
            try:
                parse_duration(target)
            except ValueError as exc:
                raise ValueError(f"objective {name}: {exc}") from None
        return value

    @field_validator("name")
    @classmethod
    def _not_served(cls, value: str) -> str:
        if value.endswith(SERVED_SUFFIX):
            raise ValueError(
                f"a definition's name may not end in {SERVED_SUFFIX!r}: drctl serve names its "
                f"deployments NAME{SERVED_SUFFIX}"
            )
        return value

    @model_validator(mode="after")
    def _runs_somehow(self) -> DrillDefinition:
        if not self.schedules and not self.triggers:
            raise ValueError("a definition needs a schedule or a trigger")
        return self

    def parameters(self) -> dict[str, Any]:
        """The deployment's parameters (the run form's defaults): what runs where, how."""
        fields: dict[str, Any] = {
            "playbook": self.playbook,
            "environment": self.environment,
            "mode": self.mode,
        }
        if self.objectives:
            fields["objectives"] = {k: _as_text(v) for k, v in self.objectives.items()}
        return fields

    def scheduled_parameters(self) -> dict[str, Any]:
        """What a scheduled run adds: on whose word it runs."""
        return {
            "operator": self.operator or f"schedule of drill definition {self.name}",
            "ticket": self.ticket or f"scheduled ({self.name})",
        }

    def request(self) -> dict[str, Any]:
        """The ``RunRequest`` of a scheduled run, as JSON."""
        return {**self.parameters(), **self.scheduled_parameters()}


def _as_text(target: str | float) -> str:
    """An objective target as the run form's text (a bare number is seconds)."""
    return target if isinstance(target, str) else f"{target:g}s"


@dataclass(frozen=True)
class LoadedDefinition:
    definition: DrillDefinition
    path: str
    doc: YamlDocument
    problems: list[Problem] = field(default_factory=list)  # it parsed, but cannot run
    notes: list[str] = field(default_factory=list)  # worth knowing, not blocking
    activation: bool = False  # its playbook declares an incident (the activation flow's form)

    @property
    def usable(self) -> bool:
        return not self.problems


def shipped_definitions() -> Path:
    return bundled_playbooks() / "drills"


def site_definitions() -> Path:
    return drctl_home() / "drills"


def default_sources() -> list[Path]:
    """The site's definitions when it has any, else the shipped examples."""
    site = site_definitions()
    if site.is_dir() and any(site.glob("*.yaml")):
        return [site]
    return [shipped_definitions()]


def definition_files(sources: list[Path]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.glob("*.yaml") if p.is_file())
        elif source.is_file():
            files.append(source)
        else:
            raise InputError(f"{source}: no such file or folder of drill definitions")
    return files


def load_definition(path: Path) -> LoadedDefinition:
    """Parse one definition (ValidationFailed if it does not), then check what it names."""
    doc = read_yaml(path)
    definition = parse_model(doc, DrillDefinition, "drill definition")
    problems: list[Problem] = []
    notes: list[str] = []
    activation = False
    what = f"definition {definition.name}"
    try:
        from drills.engine.runner import RunRequest

        RunRequest.model_validate(definition.request())
    except ValidationError as exc:
        problems += model_problems(doc, exc)
    try:
        loaded = load_playbook(resolve_playbook(definition.playbook))
    except ValidationFailed as exc:
        problems.append(
            doc.problem(("playbook",), f"{what}: playbook {definition.playbook!r} is not valid")
        )
        problems += exc.problems
    except InputError as exc:
        problems.append(doc.problem(("playbook",), f"{what}: {exc}"))
    else:
        from drills.engine.human import DECLARED

        activation = any(s.action == DECLARED for s in loaded.playbook.steps)
        known = loaded.playbook.objectives
        for name in definition.objectives:
            if name not in known:
                problems.append(
                    doc.problem(
                        ("objectives", name),
                        f"{what}: objective {name!r} is not one of playbook "
                        f"{loaded.playbook.name}'s ({', '.join(known) or 'it has none'})",
                    )
                )
    try:
        resolve_environment(definition.environment)
    except ValidationFailed as exc:
        notes.append(f"environment {definition.environment!r} is not valid here: {exc}")
    except DrillError:
        notes.append(
            f"environment {definition.environment!r} is not on this host; "
            "it must be where the flow runs"
        )
    return LoadedDefinition(definition, str(path), doc, problems, notes, activation)


def load_definitions(sources: list[Path]) -> tuple[list[LoadedDefinition], list[Problem]]:
    """Every definition in ``sources``; files that do not parse are returned as problems."""
    loaded: list[LoadedDefinition] = []
    broken: list[Problem] = []
    seen: dict[str, str] = {}
    for path in definition_files(sources):
        try:
            item = load_definition(path)
        except ValidationFailed as exc:
            broken += exc.problems
            continue
        name = item.definition.name
        if name in seen:
            broken.append(
                item.doc.problem(("name",), f"definition name {name!r} is used by {seen[name]} too")
            )
            continue
        seen[name] = item.path
        loaded.append(item)
    return loaded, broken


def slug(name: str, index: int) -> str:
    return re.sub(r"[^a-z0-9-]", "-", f"{name}-{index + 1}")
