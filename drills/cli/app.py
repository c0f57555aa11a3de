"""``drctl``: the command line. Thin: it parses, calls the engine, and draws the result.

Exit codes: 0 passed; 1 ran but failed (a step or an objective); 2 invalid input;
3 refused, aborted or interrupted.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from drills.cli.common import EXIT, console, err, run_request
from drills.cli.continuation import register_continuation
from drills.cli.env import register_env
from drills.cli.incident import register_incident
from drills.cli.ops import register_ops
from drills.cli.records import register_records
from drills.cli.reports import register_reports
from drills.cli.status import register_status, version_callback
from drills.cli.verify import verify_app
from drills.engine.stopping import StopRequested
from drills.home import drctl_home, subdir
from drills.model.errors import DrillError, InputError, Problem, ValidationFailed

app = typer.Typer(
    help="drctl — run disaster-recovery drills that are timed, verified and recorded.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lab_app = typer.Typer(
    help="The local PostgreSQL lab: a primary and a streaming standby, on one host or on two "
    "sites reached over SSH (--sites 2).",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")
app.add_typer(verify_app, name="verify")
register_records(app)  # records, keys
register_reports(app)  # records status, records trend, report (after register_records)
register_ops(app)
register_incident(app)  # incident declare, ack
register_env(app)  # env check
register_status(app)  # status
register_continuation(app)  # resume, abort


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """drctl — run disaster-recovery drills that are timed, verified and recorded."""


# -- lab ---------------------------------------------------------------------------------------


def _lab(pg_bin: str | None = None) -> Any:
    from drills.lab.onehost import Lab

    return Lab(drctl_home(), pg_bin=pg_bin)


def _two_site_lab(pg_bin: str | None = None) -> Any:
    from drills.lab.twosite import TwoSiteLab

    return TwoSiteLab(drctl_home(), pg_bin=pg_bin)


def _sites_lab(sites: int, pg_bin: str | None = None) -> tuple[Any, str]:
    """The lab for ``--sites N`` and its environment's name."""
    if sites == 1:
        return _lab(pg_bin), "lab"
    if sites == 2:
        return _two_site_lab(pg_bin), "lab-ssh"
    raise InputError(f"--sites must be 1 (one host) or 2 (two sites over SSH), not {sites}")


SITES_HELP = "1: the one-host lab; 2: two sites reached over SSH (needs root and openssh-server)."


@lab_app.command("up")
def lab_up(
    pg_bin: Annotated[
        str | None, typer.Option("--pg-bin", help="PostgreSQL bin directory.")
    ] = None,
    primary_port: Annotated[int | None, typer.Option(help="Port for pg1 (default: free).")] = None,
    standby_port: Annotated[int | None, typer.Option(help="Port for pg2 (default: free).")] = None,
    sites: Annotated[int, typer.Option("--sites", help=SITES_HELP)] = 1,
    link_proxy: Annotated[
        bool,
        typer.Option(
            "--link-proxy",
            help="The standby streams through a loopback proxy that tests can cut and "
            "throttle (drills/lab/linkproxy.py).",
        ),
    ] = False,
) -> None:
    """Start the lab (or say it is already up) and write its environment (`lab`, `lab-ssh`)."""
    lab, environment = _sites_lab(sites, pg_bin)
    if sites == 2:
        if primary_port is not None or standby_port is not None:
            raise InputError(
                "--primary-port/--standby-port are for the one-host lab: the two-site lab "
                "gives both servers one port number, free on both sites' addresses"
            )
        result = lab.up(link_proxy=link_proxy)
    else:
        result = lab.up(primary_port=primary_port, standby_port=standby_port, link_proxy=link_proxy)
    for message in result.messages:
        console.print(message)
    _print_lab(result.nodes)
    console.print(f"environment: {result.environment_file} (use --env {environment})")


@lab_app.command("status")
def lab_status(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each node's live role, address, data directory and DSN (of every lab that exists)."""
    labs = {name: lab for name, lab in (("lab", _lab()), ("lab-ssh", _two_site_lab()))}
    existing = {name: lab for name, lab in labs.items() if lab.exists()}
    if not existing:
        labs["lab"].status()  # says there is no lab
        return
    shown = {name: (lab.status(), lab.app_status()) for name, lab in existing.items()}
    if json_out:
        as_json = {
            name: {"nodes": [n.as_dict() for n in nodes], "app": app}
            for name, (nodes, app) in shown.items()
        }
        first = next(iter(as_json))  # the one-host lab's, when it exists (as before)
        print(json.dumps({"environment": first, **as_json[first], "labs": as_json}, indent=2))
        return
    for name, (nodes, app) in shown.items():
        if len(shown) > 1 or name != "lab":
            what = "one host" if name == "lab" else "two sites, reached over SSH"
            console.rule(f"[bold]{name}[/] ({what})")
        _print_lab(nodes)
        if app is None:
            console.print("HIS stand-in: not running (`drctl lab up` starts it)")
        else:
            console.print(
                f"HIS stand-in: {app['url']} (pid {app['pid']}), /health → {app['health']}"
            )


@lab_app.command("down")
def lab_down(
    sites: Annotated[
        int | None, typer.Option("--sites", help="Only this lab (default: every lab that exists).")
    ] = None,
) -> None:
    """Stop everything the lab started and remove it."""
    from drills.records.lock import force_unlock

    if sites is None:
        chosen = [(lab, name) for lab, name in (_sites_lab(1), _sites_lab(2)) if lab.exists()]
        chosen = chosen or [_sites_lab(1)]  # says there is no lab
    else:
        chosen = [_sites_lab(sites)]
    for lab, environment in chosen:
        result = lab.down()
        if result.stopped:
            console.print(f"stopped {', '.join(result.stopped)}")
        for message in result.messages:
            console.print(message)
        if result.had_lab:
            stale = force_unlock(subdir("locks"), environment)
            if stale is not None:
                console.print(f"cleared the {environment} lock left by {stale.describe()}")


def _print_lab(nodes: list[Any]) -> None:
    table = Table()
    sites = bool(nodes) and hasattr(nodes[0], "sshd_port")
    columns = ["node", "role", "address", "pid", "data directory"]
    if sites:
        columns[4:4] = ["site", "OS user", "sshd"]
    for column in columns:
        table.add_column(column)
    for n in nodes:
        row = [n.name, n.role, f"{n.host}:{n.port}", str(n.pid or "—"), n.data_dir]
        if sites:
            sshd = f"{n.host}:{n.sshd_port} pid {n.sshd_pid or '—'}"
            row[4:4] = [n.site, n.os_user, sshd + ("" if n.sshd_alive else " (down)")]
        table.add_row(*row)
    console.print(table)


# -- playbooks ---------------------------------------------------------------------------------


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Playbook or environment files.")],
) -> None:
    """Check playbooks and environments; report every problem at once (exit 2 if any)."""
    from drills.engine.documents import read_yaml
    from drills.engine.loader import load_environment_file, load_playbook

    problems: list[Problem] = []
    for path in files:
        try:
            doc = read_yaml(path)
            if isinstance(doc.data, dict) and "nodes" in doc.data and "steps" not in doc.data:
                load_environment_file(path)
                what = "environment"
            else:
                load_playbook(path)
                what = "playbook"
            console.print(f"{path}: valid {what}")
        except ValidationFailed as exc:
            problems += exc.problems
    if problems:
        for problem in problems:
            err.print(f"[red]{escape(str(problem))}[/]")
        err.print(f"{len(problems)} problem(s) in {len({p.file for p in problems})} file(s)")
        raise typer.Exit(2)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the playbook format (for editors)."""
    from drills.model.playbook import playbook_json_schema

    print(json.dumps(playbook_json_schema(), indent=2, ensure_ascii=False))


@app.command()
def plan(
    playbook: Annotated[str, typer.Argument(help="Playbook file or shipped playbook name.")],
    env: Annotated[str, typer.Option("--env", help="Environment name or file.")],
    mode: Annotated[str, typer.Option(help="drill or real.")] = "drill",
) -> None:
    """Show every step, target and command that would run. Runs nothing that changes anything."""
    from drills.engine.catalogue import default_catalogue
    from drills.engine.loader import load_playbook, resolve_environment, resolve_playbook
    from drills.engine.roles import discover_roles, required_roles_problem
    from drills.engine.targets import Targets

    loaded = load_playbook(resolve_playbook(playbook))
    environment = resolve_environment(env)
    pb = loaded.playbook
    problem = required_roles_problem(environment, pb.roles)
    if problem:
        raise InputError(problem)
    catalogue = default_catalogue()
    targets = Targets(environment, {})
    try:
        roles = discover_roles(targets, pb.roles, catalogue).roles
        source = "as the servers report now"
    except DrillError as exc:
        roles = {r: environment.nodes_with_role(r)[0] for r in pb.roles}
        source = f"as configured (could not ask the servers: {exc})"
    targets.roles = roles
    console.print(
        f"[bold]plan[/]: {escape(pb.title.en)} / {escape(pb.title.zh)} ({pb.name} "
        f"v{pb.version}, sha256 {loaded.sha256[:12]}) on {environment.name}, mode {mode}"
    )
    if environment.protected:
        console.print(f"[yellow]environment {environment.name} is protected[/]")
    console.print(
        "roles " + escape(source) + ": " + ", ".join(f"{r} = {n}" for r, n in roles.items())
    )
    for name, objective in pb.objectives.items():
        basis = objective.measure or f"{objective.from_} → {objective.to}"
        console.print(f"objective {name}: <= {objective.target:g}s ({basis})")
    for pre in pb.preconditions:
        asked = "" if mode in pre.modes else f"  [dim](not asked in {mode} mode)[/]"
        console.print(
            f"precondition: {pre.check} on {pre.target} ({roles.get(pre.target or '', '?')})"
            f" {pre.with_ or ''}{asked}"
        )
    for phase, steps in (("step", pb.steps), ("rollback", pb.rollback)):
        for index, step in enumerate(steps, 1):
            skip = "" if mode in step.modes else f"  [dim](skipped in {mode} mode)[/]"
            console.print(
                f"\n[bold]{phase} {index}. {step.id}[/]: {step.action} on {step.target}"
                f" ({roles.get(step.target, '?')}), timeout {step.timeout:g}s, "
                f"on failure {step.on_failure.value}{skip}"
            )
            spec = catalogue.action(step.action)
            for command in spec.describe(
                targets, step.target, spec.params.model_validate(step.with_)
            ):
                console.print(f"    $ {escape(command)}")
            for check in step.verify:
                console.print(
                    f"    verify {check.check} on {check.target or step.target}"
                    f"{' ' + escape(str(check.with_)) if check.with_ else ''}"
                    f" within {step.within:g}s"
                )
            if step.milestone:
                console.print(f"    marks milestone {step.milestone} ({step.milestone_at})")
            if step.override:
                console.print(f"    may go on under override {step.override} (--override)")
            if step.undoes:
                console.print(f"    undoes {step.undoes}")
    targets.close()
    console.print("\nnothing was run.")


@app.command()
def run(
    playbook: Annotated[str, typer.Argument(help="Playbook file or shipped playbook name.")],
    env: Annotated[str, typer.Option("--env", help="Environment name or file.")],
    mode: Annotated[str, typer.Option(help="drill (default) or real.")] = "drill",
    operator: Annotated[str | None, typer.Option(help="Who runs it (default: you).")] = None,
    ticket: Annotated[str | None, typer.Option(help="Change or incident ticket.")] = None,
    override: Annotated[
        list[str] | None, typer.Option("--override", help="An override the playbook offers.")
    ] = None,
    approver: Annotated[
        str | None, typer.Option(help="Real run on a protected environment: who approves.")
    ] = None,
    confirm_env: Annotated[
        str | None, typer.Option(help="Real run on a protected environment: its name, typed back.")
    ] = None,
    reason: Annotated[
        str | None, typer.Option(help="Real run on a protected environment: why, now.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Run a playbook as a Prefect flow; show each step, then a summary. Exit 0/1/2/3.

    A real run (--mode real) on a protected environment needs an approval: --approver,
    --ticket, --confirm-env (the environment's name typed back) and --reason, asked for
    interactively when missing and a terminal is there."""
    from drills.engine.loader import resolve_environment
    from drills.model.request import RunRequest

    if mode not in ("drill", "real"):
        raise InputError(f"--mode must be drill or real, not {mode!r}")
    fields: dict[str, Any] = {
        "playbook": playbook,
        "environment": env,
        "mode": mode,
        "ticket": ticket,
        "overrides": override or [],
    }
    if operator:
        fields["operator"] = operator
    environment = resolve_environment(env)
    if mode == "real" and environment.protected:
        fields["approval"] = _cli_approval(
            environment.name,
            approver=approver,
            ticket=ticket,
            confirm_env=confirm_env,
            reason=reason,
        )
        fields["ticket"] = fields["approval"].ticket
    request = RunRequest(**fields)
    record = run_request(request, verbose=verbose, quiet=json_out)
    if json_out:
        print(record.to_json())
    raise typer.Exit(EXIT[record.status])


def _cli_approval(
    environment: str,
    *,
    approver: str | None,
    ticket: str | None,
    confirm_env: str | None,
    reason: str | None,
) -> Any:
    from drills.model.approval import Approval

    given = {
        "approver": approver,
        "ticket": ticket,
        "environment_confirmation": confirm_env,
        "reason": reason,
    }
    missing = [k for k, v in given.items() if not v]
    if missing and not sys.stdin.isatty():
        options = {
            "approver": "--approver",
            "ticket": "--ticket",
            "environment_confirmation": "--confirm-env",
            "reason": "--reason",
        }
        raise InputError(
            f"environment {environment!r} is protected: a real run needs an approval; give "
            + ", ".join(options[k] for k in missing)
        )
    if missing:
        console.print(
            f"[bold]environment {escape(environment)} is protected[/]: this real run "
            "changes production systems and needs an approval."
        )
        prompts = {
            "approver": "approver",
            "ticket": "ticket",
            "environment_confirmation": f"type the environment's name ({environment})",
            "reason": "reason",
        }
        for key in missing:
            given[key] = typer.prompt(prompts[key])
    return Approval(**{k: str(v) for k, v in given.items()}, via="cli")


@app.command()
def unlock(environment: Annotated[str, typer.Argument(help="Environment name.")]) -> None:
    """Release an environment's lock left by a run that died, after you checked the environment."""
    from drills.records.lock import force_unlock
    from drills.records.store import RecordStore

    stale = force_unlock(subdir("locks"), environment)
    console.print(
        f"released {environment}: it was held by {stale.describe()}"
        if stale
        else f"{environment} was not locked"
    )
    # The person has looked at the environment: the runs that died on it are sealed now.
    for run_id in RecordStore(subdir("records"), subdir("locks")).seal_pending(environment):
        console.print(f"sealed the record of {run_id} (interrupted) into the store")


# -- demo --------------------------------------------------------------------------------------


@app.command()
def demo(
    keep_lab: Annotated[bool, typer.Option("--keep-lab", help="Leave the lab running.")] = False,
    pg_bin: Annotated[
        str | None, typer.Option("--pg-bin", help="PostgreSQL bin directory.")
    ] = None,
    sites: Annotated[int, typer.Option("--sites", help=SITES_HELP)] = 1,
) -> None:
    """Bring the lab up, run the switchover and failover drills, summarise, take the lab down."""
    from drills.cli.console import measurements_line, styled
    from drills.engine.runner import RunRequest
    from drills.model.durations import format_seconds

    lab, environment = _sites_lab(sites, pg_bin)
    console.rule("[bold]1/3 lab up" + (" --sites 2" if sites == 2 else ""))
    up = lab.up()
    _print_lab(up.nodes)
    records = []
    try:
        for index, name in enumerate(("pg-switchover", "pg-failover"), 2):
            console.rule(f"[bold]{index}/3 {name}")
            records.append(run_request(RunRequest(playbook=name, environment=environment)))
    finally:
        if keep_lab:
            console.print("the lab keeps running (--keep-lab); `drctl lab down` stops it")
        elif not up.created:
            console.print("the lab was up before the demo; it keeps running")
        else:
            down = lab.down()
            if down.stopped:
                console.print(f"lab down: stopped {', '.join(down.stopped)}")
            for message in down.messages:
                console.print(message)
    console.rule("[bold]summary")
    table = Table(
        box=box.SIMPLE_HEAD,
        caption="steps: passed/all; db: write outage; app: service outage; lost: writes",
    )
    for column in ("drill", "status", "steps", "db", "app", "lost", "RPO", "objectives"):
        table.add_column(column, no_wrap=True)
    for r in records:
        m = r.measurements
        table.add_row(
            r.playbook["name"],
            styled(r.status),
            f"{sum(s.status == 'passed' for s in r.steps)}/{len(r.steps)}",
            format_seconds(m.write_outage_seconds),
            format_seconds(m.service_outage_seconds),
            "—" if m.lost_writes is None else str(m.lost_writes),
            format_seconds(m.rpo_seconds),
            f"{sum(o.met for o in r.objectives)}/{len(r.objectives)} met",
        )
    console.print(table)
    for r in records:
        missed = [o.name for o in r.objectives if not o.met]
        if missed:
            console.print(f"{r.playbook['name']}: missed {', '.join(missed)}")
    for r in records:
        console.print(f"{r.playbook['name']}: {measurements_line(r)}")
    console.print(f"records: {subdir('records')} (`drctl records list`, `drctl records show ID`)")
    from drills.cli.records import write_reports

    for path in write_reports([r.id for r in records]):
        console.print(f"report: {path}")
    worst = max((EXIT[r.status] for r in records), default=0)
    raise typer.Exit(worst)


def main(*, fast_exit: bool = False) -> None:
    """drctl's commands, their errors as exit codes. ``fast_exit`` (the ``drctl`` command
    itself, ``cli``): skip the interpreter's teardown after a command that loaded Prefect
    (``end_now``); never in a process that goes on, such as a test calling ``main()``."""
    try:
        try:
            app()
        except ValidationFailed as exc:
            for problem in exc.problems:
                err.print(f"[red]{escape(str(problem))}[/]")
            sys.exit(exc.exit_code)
        except DrillError as exc:
            err.print(f"[red]drctl: {escape(str(exc))}[/]")
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, StopRequested) as exc:
            # Outside a run (before it began, or after its record was written): nothing to undo.
            what = exc if isinstance(exc, StopRequested) else "interrupted (Ctrl-C)"
            err.print(f"[magenta]drctl: {escape(str(what))}, outside a run: nothing changed[/]")
            sys.exit(3)
    except SystemExit as exc:
        if not fast_exit or "prefect" not in sys.modules:
            raise
        end_now(exc.code)


def cli() -> None:
    """The ``drctl`` command: ``main``, ending the process at once when it is done."""
    main(fast_exit=True)


def end_now(code: object) -> None:
    """Exit after a command that loaded Prefect, once everything is written: the exit handlers
    run (Prefect's, which stop its temporary API and flush its logs), the interpreter's own
    teardown of Prefect's modules and threads does not (it took 2.5 s on a loaded 2-CPU host,
    after an interrupted run that must end within seconds)."""
    import atexit
    import os

    status = code if isinstance(code, int) else (0 if code is None else 1)
    if not isinstance(code, int) and code is not None:
        print(code, file=sys.stderr)
    # Prefect's logs and events go to its API first, while its temporary API is still up
    # (the exit handlers stop it before logging's own handler would flush them).
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=5)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    cli()
