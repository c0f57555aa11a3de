"""``drctl resume RUN`` and ``drctl abort RUN``: going on after an interrupted run
(``drills.engine.continuation``). Both run in this process, without Prefect: the run was a
drctl run, and the environment waits.

Exit codes: resume as ``drctl run`` (0 passed, 1 failed, 3 aborted or interrupted again);
abort 0 when the rollback held and the record is sealed aborted, 1 when a rollback step failed,
3 interrupted again. Both exit 3 when they refuse, with nothing changed, and say what to run
instead. Registered on the main app by ``drills.cli.app`` (``register_continuation``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from drills.cli.common import EXIT, console, print_interruption
from drills.home import subdir

RUN_HELP = "The interrupted run's id (or a unique prefix of it)."
ABORT_EXIT = {"aborted": 0, "failed": 1, "interrupted": 3}


def register_continuation(app: typer.Typer) -> None:
    app.command("resume")(resume_command)
    app.command("abort")(abort_command)


def _show(record: Any, json_out: bool) -> None:
    from drills.cli.console import print_record
    from drills.records.store import RecordStore

    if json_out:
        print(record.to_json())
        return
    store = RecordStore(subdir("records"), subdir("locks"))
    print_record(console, record, store.describe(record.id))
    print_interruption(console, record)


def _progress(json_out: bool) -> Any:
    from rich.console import Console

    from drills.cli.console import ConsoleProgress

    out = Console(stderr=True, highlight=False, emoji=False) if json_out else console
    return ConsoleProgress(out)


def resume_command(
    run_id: Annotated[str, typer.Argument(help=RUN_HELP)],
    operator: Annotated[str | None, typer.Option(help="Who resumes it (default: you).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Continue an interrupted run from its next step, in the same run (same id, journal, lock).

    It takes a fresh snapshot of the roles and verifies that the last finished step's checks
    still hold; if they do not, it refuses (exit 3, nothing changed) and says what to run."""
    from drills.engine.continuation import resume_run
    from drills.engine.stopping import install_handlers

    install_handlers()
    record = resume_run(run_id, operator=operator, progress=_progress(json_out))
    _show(record, json_out)
    raise typer.Exit(EXIT[record.status])


def abort_command(
    run_id: Annotated[str, typer.Argument(help=RUN_HELP)],
    operator: Annotated[str | None, typer.Option(help="Who aborts it (default: you).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Roll back an interrupted run (the rollback steps of the steps it began, each verified by
    its checks), seal its record as aborted and release the environment's lock."""
    from drills.engine.continuation import abort_run
    from drills.engine.stopping import install_handlers

    install_handlers()
    record = abort_run(run_id, operator=operator, progress=_progress(json_out))
    _show(record, json_out)
    raise typer.Exit(ABORT_EXIT.get(record.status, 1))
