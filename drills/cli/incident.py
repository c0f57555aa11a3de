"""``drctl incident declare`` and ``drctl ack``: the human moments of an emergency activation.

``incident declare`` starts the activation drill (``his-emergency-activation``) with the moment
of the declaration in its run request. ``ack RUN`` acknowledges a run that waits for an engineer:
through the Prefect API the run uses (the journal's ``run_started`` event names it and the flow
run), or, when that API cannot be reached from here (the ephemeral API of another process),
through a file under ``$DRCTL_HOME/acks/`` that the waiting run picks up.

Registered on the main app by ``drills.cli.app`` (``register_incident``).
"""

from __future__ import annotations

import getpass
import os
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from drills.model.errors import InputError, RefusedError

console = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

incident_app = typer.Typer(help="Incidents: declare one (starts the activation).")

ACTIVATION_PLAYBOOK = "his-emergency-activation"


def register_incident(app: typer.Typer) -> None:
    app.add_typer(incident_app, name="incident")
    app.command("ack")(ack_command)


def parse_when(value: str | None) -> datetime:
    """An ISO 8601 time (UTC unless it says otherwise), or now."""
    if value is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--at {value!r} is not an ISO 8601 time (write e.g. 2026-11-27T01:02:03Z)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@incident_app.command("declare")
def declare_command(
    env: Annotated[str, typer.Option("--env", help="Environment name or file.")],
    at: Annotated[
        str | None,
        typer.Option("--at", help="When it was declared, ISO 8601 (UTC unless given); now."),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who declares it (default: you).")] = None,
    ticket: Annotated[str | None, typer.Option(help="Incident ticket.")] = None,
    mode: Annotated[str, typer.Option(help="drill (default) or real.")] = "drill",
    playbook: Annotated[str, typer.Option(help="The activation playbook.")] = ACTIVATION_PLAYBOOK,
    json_out: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Declare an incident: run the emergency activation with the declaration's time.

    The run waits for an engineer: `drctl ack RUN --by NAME` from another terminal, or the form
    on the paused flow run in the Prefect UI. Exit codes as `drctl run`."""
    from pydantic import ValidationError

    from drills.cli.common import EXIT, run_request
    from drills.engine.runner import RunRequest

    if mode not in ("drill", "real"):
        raise InputError(f"--mode must be drill or real, not {mode!r}")
    declared_by = by or getpass.getuser()
    fields: dict[str, Any] = {
        "playbook": playbook,
        "environment": env,
        "mode": mode,
        "ticket": ticket,
        "incident_declared_at": parse_when(at),
        "declared_by": declared_by,
        "operator": declared_by,
    }
    try:
        request = RunRequest(**fields)
    except ValidationError as exc:
        raise InputError("; ".join(str(e["msg"]) for e in exc.errors())) from None
    console.print(
        f"incident declared at {request.incident_declared_at:%Y-%m-%dT%H:%M:%S}Z by "
        f"{escape(declared_by)} on {escape(env)}: starting {escape(playbook)}; it waits for an "
        "engineer (`drctl ack RUN --by NAME`, or the form in the Prefect UI)"
    )
    record = run_request(request, verbose=verbose, quiet=json_out)
    if json_out:
        print(record.to_json())
    raise typer.Exit(EXIT[record.status])


# -- ack ---------------------------------------------------------------------------------------


def waiting_step(events: list[dict[str, Any]]) -> str | None:
    """The human step the run waits at now, from its journal; None if none."""
    waiting: str | None = None
    for event in events:
        kind = event.get("event")
        if kind == "human_waiting":
            waiting = str(event["step"])
        elif kind == "step" and event["step"].get("id") == waiting:
            waiting = None
    return waiting


def ack_command(
    run_id: Annotated[str, typer.Argument(help="The run (record) id that waits.")],
    by: Annotated[str | None, typer.Option("--by", help="The engineer (default: you).")] = None,
    note: Annotated[str, typer.Option(help="Optional note.")] = "",
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the run to confirm (0: do not wait).")
    ] = 15.0,
) -> None:
    """Acknowledge a run that waits for an engineer (the activation's `acknowledge` step)."""
    from drills.engine.human import write_ack_file
    from drills.home import subdir
    from drills.records.journal import read_journal
    from drills.records.store import RecordStore

    engineer = by or getpass.getuser()
    store = RecordStore(subdir("records"), subdir("locks"))
    path = store.journal_path(run_id)
    if not path.is_file():
        raise InputError(f"no run {run_id!r} (no journal at {path})")
    events = read_journal(path)
    if any(e.get("event") == "run_ended" for e in events):
        raise RefusedError(f"run {run_id} has ended: there is nothing to acknowledge")
    step = waiting_step(events)
    if step is None:
        raise RefusedError(f"run {run_id} is not waiting for an acknowledgement now")
    orchestrator = events[0].get("orchestrator", {}) if events else {}
    api = str(orchestrator.get("prefect_api") or "")
    flow_run_id = orchestrator.get("prefect_flow_run_id")
    channel, why = "file", ""
    if api.startswith("http") and flow_run_id:
        problem = _resume_through_api(api, str(flow_run_id), engineer, note)
        if problem is None:
            channel = "prefect-api"
        else:
            why = f"the run's Prefect API {api} did not take it ({problem}); "
    else:
        why = f"the run's Prefect API ({api or 'none'}) is not reachable from here; "
    if channel == "file":
        written = write_ack_file(run_id, step, engineer, note)
        console.print(f"{escape(why)}left the acknowledgement in {written} for the run to take")
    else:
        console.print(f"resumed flow run {flow_run_id} through {escape(api)}")
    if wait <= 0:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for event in read_journal(path):
            done = event.get("step") if event.get("event") == "step" else None
            if isinstance(done, dict) and done.get("id") == step:
                console.print(
                    f"step {step} {done.get('status')}: {escape(str(done.get('output') or ''))}"
                )
                return
        time.sleep(0.2)
    err.print(f"the run did not confirm within {wait:g}s; it takes the acknowledgement when it can")


def _resume_through_api(api: str, flow_run_id: str, engineer: str, note: str) -> str | None:
    """Resume the paused flow run with the form; None when done, else what went wrong."""
    from uuid import UUID

    from drills.cli.common import prefect_server_problem

    problem = prefect_server_problem(api)
    if problem is not None:
        return problem
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            resume_flow_run(
                UUID(flow_run_id),
                run_input={"engineer": engineer, "note": note, "via": "drctl-ack"},
            )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
