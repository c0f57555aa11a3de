"""Prefect deployments of the drill flow, built from drill definitions.

Two ways onto a Prefect server, from the same definitions, under different names so that
neither takes over the other's deployments:

- ``drctl serve``: ``prefect.serve`` runs the deployments in this process, named
  ``drill/NAME-served``. Its schedules stay active when it stops (``pause_on_shutdown=False``),
  and a restart applies them again, so a restarted server or host keeps its drills scheduled. It
  refuses a definition whose ``drill/NAME`` is on a work pool (its schedules would run twice), and
  a ``drill/NAME-served`` that a work pool owns (``ownership_problems``).
- ``prefect.yaml`` (written by ``drctl deployments prefect-yaml``): ``prefect deploy --all`` puts
  them on a work pool as ``drill/NAME``, and workers near the database hosts run them. The pool
  is best made with drctl's template (``process_pool_template``; ``python -m flows.deployments``
  prints it): its runs start as ``python -m flows.preload``, sooner, and a run naming a parameter
  the form does not have ends Failed, clearly, before anything is done.

Schedules are in Asia/Shanghai time unless a definition says otherwise. A ``pre_holiday``
schedule becomes an RRULE of RDATEs: the verification dates (``drills.ops.holidays``) of this year
and the next, whichever are published. The flow's parameters are the run form (``flows.form``):
the deployment gives the playbook, environment, mode and objective targets; a run from the UI or
the API must add its operator and ticket, a scheduled run carries the definition's (each schedule's
``parameters``), an event-started run the event's (``EVENT_PARAMETERS``). An emergency
activation's deployment is of the ``activation`` flow, whose form has the incident's fields.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from drills.ops.definitions import (
    SERVED_SUFFIX,
    SHANGHAI,
    LoadedDefinition,
    PreHoliday,
    ScheduleSpec,
    slug,
)
from drills.ops.holidays import (
    HOLIDAYS_FILE_ENV,
    chinesecalendar_version,
    default_lead_working_days,
    default_min_days,
    verification_dates,
)

FLOW_ENTRYPOINT = "flows.drill.drill"
ACTIVATION_ENTRYPOINT = "flows.drill.activation"
FLOW_NAME = "drill"  # both flows' name in Prefect
SERVE_POLL_ENV = "DRCTL_SERVE_POLL_SECONDS"
SERVE_POLL_DEFAULT = 0.5  # seconds between drctl serve's queries for runs to start


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
    parameters: dict[str, Any] = field(default_factory=dict)  # what its runs add (who, ticket)

    def as_prefect(self) -> Any:
        from prefect.schedules import Cron, RRule

        if self.cron is not None:
            return Cron(
                self.cron,
                timezone=self.timezone,
                day_or=self.day_or,
                active=self.active,
                slug=self.slug,
                parameters=self.parameters,
            )
        assert self.rrule is not None
        return RRule(
            self.rrule,
            timezone=self.timezone,
            active=self.active,
            slug=self.slug,
            parameters=self.parameters,
        )

    def as_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cron is not None:
            out["cron"] = self.cron
            if not self.day_or:
                out["day_or"] = False
        else:
            out["rrule"] = self.rrule
        out.update(timezone=self.timezone, active=self.active, slug=self.slug)
        if self.parameters:
            out["parameters"] = dict(self.parameters)
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


# What an event-started run is given: on whose word it runs (the payload's declared_by, else the
# event itself) and, for an activation, the event's time as the declaration (drills.engine.human).
# Prefect renders these Jinja templates when the automation fires. In parentheses: Prefect appends
# `| tojson` to a single expression, and a filter binds tighter than `or`.
DECLARED_BY = "{{ (event.payload.get('declared_by') or event.event ~ ' event ' ~ event.id) }}"
EVENT_PARAMETERS = {
    "operator": DECLARED_BY,
    "ticket": "{{ (event.payload.get('ticket') or event.event ~ ' ' ~ event.id) }}",
}
EVENT_INCIDENT = {
    "incident_declared_at": "{{ event.occurred.isoformat() }}",
    "declared_by": DECLARED_BY,
}


@dataclass(frozen=True)
class DeploymentPlan:
    """One definition, ready to become a deployment."""

    loaded: LoadedDefinition
    schedules: list[PlannedSchedule]
    notes: list[str]  # about its schedules (the definition's own are in loaded.notes)

    @property
    def name(self) -> str:
        """The deployment's name on a work pool (prefect.yaml)."""
        return self.loaded.definition.name

    @property
    def served_name(self) -> str:
        """The deployment's name when ``drctl serve`` runs it."""
        return self.loaded.definition.name + SERVED_SUFFIX

    @property
    def entrypoint(self) -> str:
        return ACTIVATION_ENTRYPOINT if self.loaded.activation else FLOW_ENTRYPOINT

    @property
    def parameters(self) -> dict[str, Any]:
        return self.loaded.definition.parameters()

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
                "parameters": {
                    **self.parameters,
                    **EVENT_PARAMETERS,
                    **(EVENT_INCIDENT if self.loaded.activation else {}),
                },
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
    name: str,
    index: int,
    spec: ScheduleSpec,
    today: date,
    parameters: dict[str, Any] | None = None,
) -> tuple[PlannedSchedule | None, list[str]]:
    where = slug(name, index)
    given = dict(parameters or {})
    if spec.cron is not None:
        cron = PlannedSchedule(
            where,
            "cron",
            spec.timezone,
            spec.active,
            cron=spec.cron,
            day_or=spec.day_or,
            parameters=given,
        )
        return cron, []
    if spec.rrule is not None:
        planned = PlannedSchedule(
            where, "rrule", spec.timezone, spec.active, rrule=spec.rrule, parameters=given
        )
        return planned, []
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
        where,
        "pre_holiday",
        spec.timezone,
        spec.active,
        rrule=rrule,
        dates=dates,
        parameters=given,
    )
    return planned, notes


def plan_deployments(loaded: list[LoadedDefinition], today: date) -> list[DeploymentPlan]:
    plans = []
    for item in loaded:
        schedules: list[PlannedSchedule] = []
        notes: list[str] = []
        who = item.definition.scheduled_parameters()
        for index, spec in enumerate(item.definition.schedules):
            planned, said = plan_schedule(item.definition.name, index, spec, today, who)
            notes += said
            if planned is not None:
                schedules.append(planned)
        plans.append(DeploymentPlan(item, schedules, notes))
    return plans


# -- onto Prefect --------------------------------------------------------------------------------


def _deployment_options(plan: DeploymentPlan) -> dict[str, Any]:
    """What a served deployment of ``plan`` is made with (``to_deployment``, ``add_flow``)."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.types.entrypoint import EntrypointType

    from flows.form import know

    d = plan.loaded.definition
    know(d.playbook, d.environment)  # the run form offers them, whatever this host knows
    return {
        "name": plan.served_name,
        "schedules": [s.as_prefect() for s in plan.schedules],
        "parameters": plan.parameters,
        "description": plan.description,
        "tags": plan.tags,
        "enforce_parameter_schema": True,
        "entrypoint_type": EntrypointType.MODULE_PATH,
        "triggers": [DeploymentEventTrigger(**t) for t in plan.triggers],
    }


def _flow_of(plan: DeploymentPlan) -> Any:
    from flows.drill import activation, drill

    return activation if plan.loaded.activation else drill


def runner_deployments(plans: list[DeploymentPlan]) -> list[Any]:
    """The plans as Prefect ``RunnerDeployment`` objects, named as ``drctl serve`` names them."""
    return [_flow_of(plan).to_deployment(**_deployment_options(plan)) for plan in plans]


def ownership_problems(plans: list[DeploymentPlan]) -> dict[str, str]:
    """Why ``drctl serve`` must not serve a definition, by definition name: its ``drill/NAME``
    is on a work pool (``prefect deploy``: the same drills would run twice), or its
    ``drill/NAME-served`` belongs to a work pool (serving it would take it over)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    problems: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for plan in plans:
            for name in (plan.name, plan.served_name):
                try:
                    found = client.read_deployment_by_name(f"{FLOW_NAME}/{name}")
                except ObjectNotFound:
                    continue
                if not found.work_pool_name:
                    continue
                problems[plan.name] = (
                    f"deployment {FLOW_NAME}/{name} is on work pool {found.work_pool_name} "
                    "(prefect deploy): "
                    + (
                        "serving the definition too would run its drills twice; delete that "
                        f"deployment (prefect deployment delete {FLOW_NAME}/{name}) to serve it"
                        if name == plan.name
                        else "drctl serve does not take over a work pool's deployment"
                    )
                )
                break
    return problems


def serve_poll_seconds() -> float:
    """How often ``drctl serve`` asks the server for runs to start (``DRCTL_SERVE_POLL_SECONDS``).
    A run started from the UI waits for the next query, on average half of it."""
    import os

    raw = os.environ.get(SERVE_POLL_ENV, "")
    try:
        value = float(raw) if raw.strip() else SERVE_POLL_DEFAULT
    except ValueError:
        value = SERVE_POLL_DEFAULT
    return min(max(value, 0.1), 60.0)


def warm_flow_runs() -> bool:
    """Start served flow runs as forks of a process that has the flow loaded (``flows.preload``)
    rather than as new Python processes that import it: a run from the UI reaches its first step
    about two seconds sooner. True when it is set up.

    Prefect 3.9's runner starts a served flow run with ``run_flow_in_subprocess``, which asks
    ``multiprocessing`` for its ``spawn`` context; ``prefect.flow_engine`` is given a
    ``multiprocessing`` whose ``spawn`` context is a fork server that preloaded the flow (Prefect's
    own runner documents that module-level reference as the place to override). Anything else
    about the run is Prefect's: its environment, settings, control channel and cancellation."""
    import multiprocessing
    import types
    from multiprocessing import forkserver

    import prefect.flow_engine as engine

    real = getattr(engine, "multiprocessing", None)
    if real is not multiprocessing or "forkserver" not in multiprocessing.get_all_start_methods():
        return False  # another Prefect than the one this was written for, or no fork server
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["flows.preload"])

    def get_context(method: str | None = None) -> Any:
        return context if method == "spawn" else multiprocessing.get_context(method)

    shim = types.ModuleType("multiprocessing")
    shim.__dict__.update(vars(multiprocessing))
    shim.get_context = get_context  # type: ignore[attr-defined]
    engine.multiprocessing = shim  # type: ignore[attr-defined]
    forkserver.ensure_running()  # now, not when the first run comes
    return True


def process_pool_template(python: str | None = None) -> dict[str, Any]:
    """The base job template of a ``process`` work pool whose workers start each flow run as
    ``PYTHON -m flows.preload`` (``python``: this Python, the one drctl is installed in).

    With Prefect's default template (no command), a process worker of Prefect 3.9 starts a run in
    two processes one after the other: first a new Python that imports ``prefect.runner`` and
    prepares a workspace (it copies the folder the deployment was made from), then the engine's
    own, which imports Prefect again: about 0.8 s more before the run's process even begins.
    Naming a command makes the worker start it at once, in an empty working directory; drctl's
    deployments need no workspace (their flow is the installed package, ``pull: []``).
    ``flows.preload`` is Prefect's engine with the flow loaded first and a run that names a
    parameter the form does not have ended Failed, clearly, before anything is done."""
    import shlex
    import sys

    from prefect.workers.process import ProcessWorker

    template: dict[str, Any] = ProcessWorker.get_default_base_job_template()
    command = f"{shlex.quote(python or sys.executable)} -m flows.preload"
    template["variables"]["properties"]["command"]["default"] = command
    return template


def close_forms(deployment_ids: list[Any]) -> None:
    """Make the server refuse a run of these deployments that names a parameter their form does
    not have (``flows.form.closed``). Prefect's client cannot send that with the deployment (see
    ``flows.form``); the deployment's schema is replaced with the closed one once applied."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    from flows.form import closed

    with get_client(sync_client=True) as client:
        for deployment_id in deployment_ids:
            schema = client.read_deployment(deployment_id).parameter_openapi_schema
            client.update_deployment(
                deployment_id, DeploymentUpdate(parameter_openapi_schema=closed(schema))
            )


def serve(plans: list[DeploymentPlan]) -> None:
    """Serve the deployments until interrupted; their schedules stay active afterwards.

    As ``prefect.serve`` does, but with each deployment's flow given to the runner (``add_flow``),
    so that a run is started from the flow in memory (from the warm fork server) rather than by a
    ``python -m prefect.engine`` that imports everything again, with the runner asking for runs
    every ``serve_poll_seconds()``, and with each deployment's form closed (``close_forms``)."""
    import asyncio
    import contextlib

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    warm_flow_runs()
    runner = Runner(pause_on_shutdown=False, query_seconds=serve_poll_seconds())
    applied = [runner.add_flow(_flow_of(plan), **_deployment_options(plan)) for plan in plans]
    close_forms(applied)
    # Stopped as Ctrl-C or a service manager stops it: the schedules stay active.
    with contextlib.suppress(KeyboardInterrupt, TerminationSignal):
        asyncio.run(runner.start())


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
            "entrypoint": plan.entrypoint,
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
        "#   python -m flows.deployments > drctl-pool.json   # drctl's pool template: runs start",
        "#                          # as python -m flows.preload (README: Scheduled drills)",
        "#   prefect work-pool create drctl --type process --base-job-template drctl-pool.json",
        "#   prefect deploy --all   # with PREFECT_API_URL set, from a folder holding only this",
        "#                          # file: a worker copies that folder into each run's workspace",
        "#   # on a host near the databases, drctl installed (README: Scheduled drills):",
        "#   PREFECT_WORKER_QUERY_SECONDS=0.5 prefect worker start --pool drctl \\",
        "#       --prefetch-seconds 60",
        "# The flow is the installed drctl (pull: []). The deployments are drill/NAME; `drctl",
        "# serve` names its own drill/NAME-served and refuses a definition deployed here.",
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


def main(argv: list[str]) -> int:
    """``python -m flows.deployments [PYTHON]``: print drctl's ``process`` work pool template
    (``process_pool_template``) for PYTHON, by default this one, as JSON."""
    import json
    import sys

    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(
            "usage: python -m flows.deployments [PYTHON]  (prints the work pool template whose "
            "runs start as PYTHON -m flows.preload)",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(process_pool_template(argv[0] if argv else None), indent=2))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
