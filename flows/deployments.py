"""Prefect deployments of the drill flow, built from drill definitions.

Two ways onto a Prefect server, from the same definitions:

- ``drctl serve``: ``prefect.serve`` runs the deployments in this process. Its schedules stay
  active when it stops (``pause_on_shutdown=False``), and a restart applies them again, so a
  restarted server or host keeps its drills scheduled.
- ``prefect.yaml`` (written by ``drctl deployments prefect-yaml``): ``prefect deploy --all`` puts
  them on a work pool, and workers near the database hosts run them.

Schedules are in Asia/Shanghai time unless a definition says otherwise. A ``pre_holiday``
schedule becomes an RRULE of RDATEs: the verification dates (``drills.ops.holidays``) of this year
and the next, whichever are published. The flow's parameter is the ``RunRequest`` model, so the
UI's run form shows its fields and the server validates runs against its schema.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from drills.ops.definitions import SHANGHAI, LoadedDefinition, PreHoliday, ScheduleSpec, slug
from drills.ops.holidays import (
    HOLIDAYS_FILE_ENV,
    chinesecalendar_version,
    default_lead_working_days,
    default_min_days,
    verification_dates,
)

FLOW_ENTRYPOINT = "flows.drill.drill"


@dataclass(frozen=True)
class PlannedSchedule:
    """A definition's schedule as Prefect gets it."""

    slug: str
    kind: str
    timezone: str
    active: bool
    cron: str | None = None
    day_or: bool = True
    rrule: str | None = None
    dates: list[date] = field(default_factory=list)  # a pre-holiday schedule's dates

    def as_prefect(self) -> Any:
        from prefect.schedules import Cron, RRule

        if self.cron is not None:
            return Cron(
                self.cron,
                timezone=self.timezone,
                day_or=self.day_or,
                active=self.active,
                slug=self.slug,
            )
        assert self.rrule is not None
        return RRule(self.rrule, timezone=self.timezone, active=self.active, slug=self.slug)

    def as_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cron is not None:
            out["cron"] = self.cron
            if not self.day_or:
                out["day_or"] = False
        else:
            out["rrule"] = self.rrule
        out.update(timezone=self.timezone, active=self.active, slug=self.slug)
        return out

    def describe(self) -> str:
        if self.kind == "pre_holiday":
            days = ", ".join(d.isoformat() for d in self.dates)
            return f"pre-holiday on {days} ({self.timezone})"
        if self.cron is not None:
            both = "" if self.day_or else ", day and weekday both"
            return f"cron {self.cron} ({self.timezone}{both})"
        return f"rrule {self.rrule} ({self.timezone})"

    def next_runs(self, after: datetime, count: int = 3) -> list[datetime]:
        """The next run times, as the Prefect server computes them."""
        from prefect.server.schemas import schedules as server

        schedule: Any
        if self.cron is not None:
            schedule = server.CronSchedule(
                cron=self.cron, timezone=self.timezone, day_or=self.day_or
            )
        else:
            schedule = server.RRuleSchedule(rrule=str(self.rrule), timezone=self.timezone)
        found: list[datetime] = asyncio.run(schedule.get_dates(n=count, start=after))
        return found


# What an event-started run is given: the event's time as the declaration (drills.engine.human).
# Prefect renders these Jinja templates when the automation fires.
EVENT_REQUEST = {
    "incident_declared_at": "{{ event.occurred.isoformat() }}",
    # In parentheses: Prefect appends `| tojson` to a single expression, and a filter binds
    # tighter than `or`.
    "declared_by": "{{ (event.payload.get('declared_by') or event.event ~ ' event ' ~ event.id) }}",
}


@dataclass(frozen=True)
class DeploymentPlan:
    """One definition, ready to become a deployment."""

    loaded: LoadedDefinition
    schedules: list[PlannedSchedule]
    notes: list[str]  # about its schedules (the definition's own are in loaded.notes)

    @property
    def name(self) -> str:
        return self.loaded.definition.name

    @property
    def parameters(self) -> dict[str, Any]:
        return {"request": self.loaded.definition.request()}

    @property
    def description(self) -> str:
        d = self.loaded.definition
        text = f"{d.title.en} / {d.title.zh}"
        more = " ".join(d.description.split())
        return f"{text}: {more}" if more else text

    @property
    def triggers(self) -> list[dict[str, Any]]:
        """Each event trigger as Prefect's deployment trigger (prefect.yaml's form)."""
        d = self.loaded.definition
        return [
            {
                "name": f"{d.name}: {t.event}",
                "enabled": t.enabled,
                "match": {"prefect.resource.id": t.resource or f"dr.environment.{d.environment}"},
                "expect": [t.event],
                "posture": "Reactive",
                "threshold": 1,
                "within": 0,
                "parameters": {"request": {**d.request(), **EVENT_REQUEST}},
            }
            for t in d.triggers
        ]

    @property
    def tags(self) -> list[str]:
        return list(dict.fromkeys(["drctl", *self.loaded.definition.tags]))


def shanghai_today() -> date:
    return datetime.now(ZoneInfo(SHANGHAI)).date()


def pre_holiday_dates(spec: PreHoliday, today: date) -> tuple[list[date], list[str]]:
    """This year's and next year's verification dates, and a note for each unpublished year."""
    breaks, missing = verification_dates(
        [today.year, today.year + 1],
        min_days=spec.min_days or default_min_days(),
        lead_working_days=spec.lead_working_days or default_lead_working_days(),
    )
    notes = [
        f"the holidays of {year} are not published in chinesecalendar "
        f"{chinesecalendar_version()}: no pre-holiday date in {year} until they are, or until "
        f"{HOLIDAYS_FILE_ENV} gives them (`drctl holidays {year}` says how)"
        for year in missing
    ]
    return sorted({b.verify_on for b in breaks}), notes


def plan_schedule(
    name: str, index: int, spec: ScheduleSpec, today: date
) -> tuple[PlannedSchedule | None, list[str]]:
    where = slug(name, index)
    if spec.cron is not None:
        cron = PlannedSchedule(
            where, "cron", spec.timezone, spec.active, cron=spec.cron, day_or=spec.day_or
        )
        return cron, []
    if spec.rrule is not None:
        return PlannedSchedule(where, "rrule", spec.timezone, spec.active, rrule=spec.rrule), []
    assert spec.pre_holiday is not None
    dates, notes = pre_holiday_dates(spec.pre_holiday, today)
    hour, minute = spec.pre_holiday.at.split(":")
    if not dates:
        notes.append("no pre-holiday verification date is known: this schedule is left out")
        return None, notes
    if dates[-1] < today:
        notes.append(
            f"the last known pre-holiday date is {dates[-1]}: nothing is scheduled after it until "
            "the next year's holidays are known and the deployments are applied again"
        )
    # Naive local times: the server reads RDATEs in the schedule's time zone.
    rrule = "RDATE:" + ",".join(f"{d:%Y%m%d}T{hour}{minute}00" for d in dates)
    planned = PlannedSchedule(
        where, "pre_holiday", spec.timezone, spec.active, rrule=rrule, dates=dates
    )
    return planned, notes


def plan_deployments(loaded: list[LoadedDefinition], today: date) -> list[DeploymentPlan]:
    plans = []
    for item in loaded:
        schedules: list[PlannedSchedule] = []
        notes: list[str] = []
        for index, spec in enumerate(item.definition.schedules):
            planned, said = plan_schedule(item.definition.name, index, spec, today)
            notes += said
            if planned is not None:
                schedules.append(planned)
        plans.append(DeploymentPlan(item, schedules, notes))
    return plans


# -- onto Prefect --------------------------------------------------------------------------------


def runner_deployments(plans: list[DeploymentPlan]) -> list[Any]:
    """The plans as Prefect ``RunnerDeployment`` objects of the drill flow."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.types.entrypoint import EntrypointType

    from flows.drill import drill

    return [
        drill.to_deployment(
            name=plan.name,
            schedules=[s.as_prefect() for s in plan.schedules],
            parameters=plan.parameters,
            description=plan.description,
            tags=plan.tags,
            enforce_parameter_schema=True,
            entrypoint_type=EntrypointType.MODULE_PATH,
            triggers=[DeploymentEventTrigger(**t) for t in plan.triggers],
        )
        for plan in plans
    ]


def serve(plans: list[DeploymentPlan]) -> None:
    """Serve the deployments until interrupted; their schedules stay active afterwards."""
    from prefect import serve as prefect_serve

    prefect_serve(*runner_deployments(plans), pause_on_shutdown=False)


def prefect_yaml(
    plans: list[DeploymentPlan], today: date, sources: str = "playbooks/drills"
) -> str:
    """``prefect.yaml`` for ``prefect deploy --all``: the same deployments, on work pools."""
    deployments = []
    for plan in plans:
        d = plan.loaded.definition
        pool: dict[str, Any] = {"name": d.work_pool}
        if d.work_queue:
            pool["work_queue_name"] = d.work_queue
        deployment: dict[str, Any] = {
            "name": plan.name,
            "description": plan.description,
            "entrypoint": FLOW_ENTRYPOINT,
            "tags": plan.tags,
            "parameters": plan.parameters,
            "enforce_parameter_schema": True,
            "work_pool": pool,
            "schedules": [s.as_yaml() for s in plan.schedules],
        }
        if plan.triggers:
            deployment["triggers"] = plan.triggers
        deployments.append(deployment)
    notes = sorted({f"{p.name}: {n}" for p in plans for n in p.notes})
    header = [
        "# Prefect deployments of drctl's drill flow, for work pools and workers.",
        f"# Generated from the drill definitions in {sources} by",
        f"#   drctl deployments prefect-yaml {sources} --today {today} --output prefect.yaml",
        "# Do not edit: change the definitions and generate it again (a test compares them).",
        "#",
        "#   prefect work-pool create drctl --type process",
        "#   prefect deploy --all            # from this folder, with PREFECT_API_URL set",
        "#   prefect worker start --pool drctl   # on a host near the databases, drctl installed",
        "#",
        "# Pre-holiday dates cover this year and the next where they are published: generate",
        "# it again and redeploy when a new year's holidays are published (or put in",
        "# DRCTL_HOLIDAYS_FILE).",
    ]
    header += [f"# note: {n}" for n in notes]
    body = {
        "name": "drctl",
        "prefect-version": _prefect_version(),
        # The flow is imported from the installed drctl package: nothing to pull.
        "pull": [],
        "deployments": deployments,
    }
    text = yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(header) + "\n" + text


def _prefect_version() -> str:
    import prefect

    major_minor = ".".join(str(prefect.__version__).split(".")[:2])
    return f"{major_minor}.0"
