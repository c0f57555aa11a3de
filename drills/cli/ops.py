"""``drctl`` commands for operations: holidays, drill deployments, serving, notifications; and
the fallback to Prefect's ephemeral API when the configured server does not answer.

Registered on the main app by ``drills.cli.app`` (``register_ops``).
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drills.cli.common import configured_prefect_api_url, prefect_server_problem, prepare_prefect
from drills.model.errors import InputError, Problem, RefusedError

if TYPE_CHECKING:
    from drills.ops.definitions import LoadedDefinition
    from flows.deployments import DeploymentPlan

console = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

deployments_app = typer.Typer(
    help="Drill definitions as Prefect deployments (playbooks/drills/*.yaml).",
    no_args_is_help=True,
)
notify_app = typer.Typer(
    help="Notifications (WeCom, DingTalk, e-mail, webhook).", no_args_is_help=True
)

PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Definition files or folders (default: $DRCTL_HOME/drills if it has any, else the "
        "shipped examples).",
        show_default=False,
    ),
]
TodayOpt = Annotated[
    str | None,
    typer.Option(
        "--today",
        help="The day holiday dates are planned from, YYYY-MM-DD (default: today in Shanghai).",
    ),
]


def register_ops(app: typer.Typer) -> None:
    app.command("holidays")(holidays_command)
    app.command("serve")(serve_command)
    app.add_typer(deployments_app, name="deployments")
    app.add_typer(notify_app, name="notify")


def _today(value: str | None) -> date:
    if value is None:
        from flows.deployments import shanghai_today

        return shanghai_today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(f"--today {value!r} is not a date (write YYYY-MM-DD)") from None


# -- holidays ----------------------------------------------------------------------------------


def holidays_command(
    year: Annotated[
        int | None, typer.Argument(help="The year (default: this year).", show_default=False)
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    min_days: Annotated[
        int | None,
        typer.Option(help="Breaks of at least this many days (default 4: more than 3 days)."),
    ] = None,
    lead: Annotated[
        int | None,
        typer.Option(help="Verify this many working days before a break (default 3)."),
    ] = None,
    holidays_file: Annotated[
        Path | None,
        typer.Option(help="Override file for years not yet published (DRCTL_HOLIDAYS_FILE)."),
    ] = None,
) -> None:
    """Statutory breaks longer than the threshold, and each one's pre-holiday verification date.

    Dates come from chinesecalendar, cross-checked day by day against holidays; an unpublished
    year is an error (exit 2) that says how to write an override file, never a guess."""
    from drills.ops import holidays as hol

    if holidays_file is not None:
        os.environ[hol.HOLIDAYS_FILE_ENV] = str(holidays_file)
    year = year or _today(None).year
    min_days = min_days or hol.default_min_days()
    lead = lead or hol.default_lead_working_days()
    calendar = hol.year_calendar(year)
    breaks = hol.long_breaks(year, min_days=min_days, lead_working_days=lead)
    if json_out:
        print(
            json.dumps(
                {
                    "year": year,
                    "min_days": min_days,
                    "lead_working_days": lead,
                    "source": calendar.schedule.source,
                    "cross_checked_with": calendar.checked_against,
                    "disagreements": calendar.disagreements,
                    "notes": calendar.notes,
                    "breaks": [
                        {
                            "name": b.name,
                            "name_zh": hol.zh_name(b.name),
                            "start": b.start.isoformat(),
                            "end": b.end.isoformat(),
                            "days": b.days,
                            "verify_on": b.verify_on.isoformat(),
                        }
                        for b in breaks
                    ],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"{year}: breaks of {min_days} days or more; verification {lead} working "
        "day(s) before",
        title_justify="left",
    )
    for column in ("break", "days off", "days", "verify on"):
        table.add_column(column, no_wrap=column != "break")
    day = hol.WEEKDAYS
    for b in breaks:
        table.add_row(
            escape(f"{hol.zh_name(b.name)} {b.name}"),
            f"{b.start} {day[b.start.weekday()]} – {b.end:%m-%d} {day[b.end.weekday()]}",
            str(b.days),
            f"{b.verify_on} {day[b.verify_on.weekday()]}",
        )
    console.print(table)
    console.print(f"source: {escape(calendar.schedule.source)}")
    if calendar.checked_against:
        verdict = (
            "agrees on every day"
            if not calendar.disagreements
            else f"[red]disagrees on {len(calendar.disagreements)} day(s)[/]"
        )
        console.print(f"cross-checked with {escape(calendar.checked_against)}: {verdict}")
    for line in calendar.disagreements:
        console.print(f"[red]  {escape(line)}[/]")
    for note in calendar.notes:
        console.print(f"[yellow]{escape(note)}[/]")


# -- definitions and deployments ---------------------------------------------------------------


def _load(paths: list[Path] | None) -> tuple[list[LoadedDefinition], list[Problem], list[Path]]:
    from drills.ops.definitions import default_sources, load_definitions

    sources = paths or default_sources()
    loaded, broken = load_definitions(sources)
    if not loaded and not broken:
        raise InputError(f"no drill definitions (*.yaml) in {', '.join(map(str, sources))}")
    return loaded, broken, sources


def _report_problems(loaded: list[LoadedDefinition], broken: list[Problem]) -> int:
    count = 0
    for problem in broken:
        err.print(f"[red]{escape(str(problem))}[/]")
        count += 1
    for item in loaded:
        for problem in item.problems:
            err.print(f"[red]{escape(str(problem))}[/]")
            count += 1
    return count


def _print_plans(plans: list[DeploymentPlan], now: datetime) -> None:
    for plan in plans:
        d = plan.loaded.definition
        mark = "" if plan.loaded.usable else " [red]✘ not usable[/]"
        console.print(
            f"[bold]{escape(d.name)}[/]{mark}: {escape(d.playbook)} on {escape(d.environment)} "
            f"({d.mode}) — {escape(d.title.zh)}"
        )
        console.print(
            f"  deployments: drill/{escape(plan.name)} (prefect.yaml, work pool "
            f"{escape(d.work_pool)}) or drill/{escape(plan.served_name)} (drctl serve)",
            style="dim",
        )
        for schedule in plan.schedules:
            runs = ", ".join(f"{r:%Y-%m-%d %H:%M}" for r in schedule.next_runs(now, 2))
            console.print(f"  {escape(schedule.describe())}; next: {runs or 'none ahead'}")
        for trigger in plan.triggers:
            about = trigger["match"]["prefect.resource.id"]
            console.print(f"  on event {escape(trigger['expect'][0])} about {escape(about)}")
        if not plan.schedules and not plan.triggers:
            console.print("  [yellow]no schedule[/]")
        for note in [*plan.loaded.notes, *plan.notes]:
            console.print(f"  [yellow]note: {escape(note)}[/]")


def _plan_json(plan: DeploymentPlan, now: datetime) -> dict[str, Any]:
    return {
        "name": plan.name,
        "file": plan.loaded.path,
        "usable": plan.loaded.usable,
        "problems": [str(p) for p in plan.loaded.problems],
        "notes": [*plan.loaded.notes, *plan.notes],
        "parameters": plan.parameters,
        "triggers": plan.triggers,
        "schedules": [
            {
                **s.as_yaml(),
                "kind": s.kind,
                "dates": [d.isoformat() for d in s.dates],
                "next_runs": [r.isoformat() for r in s.next_runs(now, 3)],
            }
            for s in plan.schedules
        ],
    }


def _now(today: date) -> datetime:
    from drills.ops.definitions import SHANGHAI

    zone = ZoneInfo(SHANGHAI)
    now = datetime.now(zone)
    return now if now.date() == today else datetime(today.year, today.month, today.day, tzinfo=zone)


@deployments_app.command("list")
def deployments_list(
    paths: PathsArg = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    today: TodayOpt = None,
) -> None:
    """Each definition: playbook, environment, mode, schedules and next runs; problems on
    stderr (exit 2 if any)."""
    from flows.deployments import plan_deployments

    loaded, broken, _ = _load(paths)
    day = _today(today)
    plans = plan_deployments(loaded, day)
    now = _now(day)
    if json_out:
        print(json.dumps([_plan_json(p, now) for p in plans], indent=2, ensure_ascii=False))
    else:
        _print_plans(plans, now)
    if _report_problems(loaded, broken):
        raise typer.Exit(2)


@deployments_app.command("prefect-yaml")
def deployments_prefect_yaml(
    paths: PathsArg = None,
    today: TodayOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: print).")
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit 1 if --output differs from what would be written."),
    ] = False,
) -> None:
    """prefect.yaml for `prefect deploy --all`: the definitions as deployments on work pools."""
    from flows.deployments import plan_deployments, prefect_yaml

    loaded, broken, sources = _load(paths)
    day = _today(today)
    plans = plan_deployments(loaded, day)
    text = prefect_yaml(plans, day, sources_label(sources))
    _report_problems(loaded, broken)
    for plan in plans:
        for note in plan.notes:
            err.print(f"[yellow]{escape(plan.name)}: {escape(note)}[/]")
    if output is None:
        print(text, end="")
        return
    if check:
        current = output.read_text(encoding="utf-8") if output.is_file() else ""
        if current != text:
            err.print(f"{output} differs from the definitions: run without --check to update it")
            raise typer.Exit(1)
        console.print(f"{output} matches the definitions")
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output} ({len(plans)} deployment(s))")


def sources_label(sources: list[Path]) -> str:
    labels = []
    for source in sources:
        try:
            labels.append(str(source.resolve().relative_to(Path.cwd())))
        except ValueError:
            labels.append(str(source))
    return ", ".join(labels)


def serve_command(
    paths: PathsArg = None,
    check: Annotated[
        bool, typer.Option("--check", help="Validate and list what would be served; serve nothing.")
    ] = False,
    today: TodayOpt = None,
) -> None:
    """Serve the drill definitions as Prefect deployments from this process (flow.serve).

    Needs a Prefect server (PREFECT_API_URL). The deployments are named drill/NAME-served;
    a definition deployed to a work pool (drill/NAME, prefect deploy) is not served too.
    Schedules (Asia/Shanghai) stay active when this stops, and a restart applies them again.
    Definitions with problems are skipped, and said."""
    from flows.deployments import ownership_problems, plan_deployments, serve

    loaded, broken, sources = _load(paths)
    day = _today(today)
    problems = _report_problems(loaded, broken)
    usable = [item for item in loaded if item.usable]
    skipped = [item.definition.name for item in loaded if not item.usable]
    plans = plan_deployments(usable, day)
    console.print(f"definitions: {escape(sources_label(sources))}")
    _print_plans(plans, _now(day))
    if skipped:
        console.print(f"[red]not served (see the problems above): {escape(', '.join(skipped))}[/]")
    if check:
        raise typer.Exit(2 if problems else 0)
    if not plans:
        raise InputError("no usable drill definition to serve")
    prepare_prefect(verbose=True)
    url = configured_prefect_api_url()
    if not url:
        raise InputError(
            "drctl serve needs a Prefect server: start one (`prefect server start`) and set "
            "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )
    problem = prefect_server_problem(url)
    if problem is not None:
        raise RefusedError(f"the Prefect server at {url} did not answer: {problem}")
    owned = ownership_problems(plans)
    for name, why in owned.items():
        err.print(f"[red]not served: {escape(name)}: {escape(why)}[/]")
    plans = [plan for plan in plans if plan.name not in owned]
    if not plans:
        raise RefusedError("every definition is deployed to a work pool: nothing to serve")
    names = ", ".join(f"drill/{plan.served_name}" for plan in plans)
    console.print(
        f"serving {escape(names)} on {escape(url)}; Ctrl-C stops serving, the schedules stay active"
    )
    serve(plans)


# -- notifications -----------------------------------------------------------------------------


@notify_app.command("test")
def notify_test(
    message: Annotated[str, typer.Option(help="The text to send.")] = "drctl notification test",
) -> None:
    """Send a test message to every configured channel; exit 1 if one did not take it."""
    from drills.ops.notify import NOTIFY_ENV, load_settings, notify_file, send_test

    settings = load_settings()
    if settings is None:
        raise InputError(
            f"no notification channel is configured: set {NOTIFY_ENV} to apprise URLs, or "
            f"write {notify_file()} (see README, Notifications)"
        )
    failed = 0
    for channel, ok in send_test(settings, message):
        console.print(f"{escape(channel)}: {'sent' if ok else '[red]not delivered[/]'}")
        failed += not ok
    if failed:
        raise typer.Exit(1)
