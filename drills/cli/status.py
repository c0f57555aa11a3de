"""``drctl status`` and ``drctl --version``: what is going on here, at a glance."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

import drills
from drills.cli.common import configured_prefect_api_url, console, prefect_server_problem
from drills.home import drctl_home, subdir


def _age(since: str) -> str:
    from drills.model.durations import format_seconds

    try:
        started = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    return format_seconds(max(0.0, (datetime.now(UTC) - started).total_seconds()))


def _journals() -> dict[str, Any]:
    """The journals a person must look at: damaged ones (path and what is wrong) and those in a
    fallback place because the records directory could not take them."""
    from drills.records.store import RecordStore, StoreError

    store = RecordStore(subdir("records"), subdir("locks"))
    found: dict[str, Any] = {"damaged": [], "moved": {}}
    try:
        found["damaged"] = [
            {"path": str(r.path), "problem": r.problem} for r in store.journal_problems()
        ]
    except StoreError as exc:  # the store is unreachable: the journals alone are still named
        found["store_problem"] = str(exc)
    found["moved"] = {run_id: str(path) for run_id, path in store.moved_journals().items()}
    return found


def status(
    json_out: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """Runs in progress, held and stale locks (holder and age), the labs, the Prefect API."""
    import json

    from drills.lab.onehost import Lab
    from drills.lab.twosite import TwoSiteLab
    from drills.records.lock import lock_holders

    home = drctl_home()
    locks = [
        {
            "environment": env,
            "run_id": h.run_id,
            "pid": h.pid,
            "host": h.host,
            "since": h.since,
            "age": _age(h.since),
            "state": "running" if alive else "left by a run that died",
        }
        for env, h, alive in lock_holders(subdir("locks"))
    ]
    labs = []
    for name, exists in (("lab", Lab(home).exists()), ("lab-ssh", TwoSiteLab(home).exists())):
        if exists:
            labs.append({"environment": name, "state": "up (see `drctl lab status`)"})
    api = configured_prefect_api_url()
    prefect: dict[str, Any] = {"api": api or "ephemeral (none configured)"}
    if api:
        problem = prefect_server_problem(api, timeout=2)
        prefect["answers"] = problem is None
        if problem:
            prefect["problem"] = problem
    journals = _journals()
    data = {
        "drctl": drills.__version__,
        "home": str(home),
        "runs_in_progress": [lock for lock in locks if lock["state"] == "running"],
        "locks": locks,
        "labs": labs,
        "prefect": prefect,
        "journals": journals,
        "os_user": os.environ.get("USER") or str(os.geteuid()),
    }
    if json_out:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    console.print(f"drctl {drills.__version__}, home {escape(str(home))}")
    if not locks:
        console.print("no run in progress, no environment locked")
    for lock in locks:
        mark = "[green]running[/]" if lock["state"] == "running" else "[yellow]stale[/]"
        console.print(
            f"{mark} {escape(str(lock['environment']))}: run {escape(str(lock['run_id']))} "
            f"(pid {lock['pid']} on {escape(str(lock['host']))}, for {lock['age']})"
            + (
                ""
                if lock["state"] == "running"
                else f" — left by a run that died: check it, then "
                f"`drctl unlock {escape(str(lock['environment']))}`"
            )
        )
    for found in labs:
        console.print(f"lab {found['environment']}: {found['state']}")
    if not labs:
        console.print("no lab here (`drctl lab up`, or `--sites 2`)")
    for damaged in journals["damaged"]:
        console.print(
            f"[yellow]damaged journal[/] {escape(damaged['path'])}: {escape(damaged['problem'])}"
        )
    for run_id, path in journals["moved"].items():
        console.print(
            f"[yellow]journal in a fallback place[/] {escape(path)} (run {escape(run_id)}: the "
            "records directory could not take it); `drctl records seal --pending` seals it"
        )
    if "store_problem" in journals:
        console.print(f"[yellow]record store:[/] {escape(journals['store_problem'])}")
    answers = prefect.get("answers")
    console.print(
        f"Prefect API: {escape(str(prefect['api']))}"
        + ("" if answers is None else " (answers)" if answers else f" — {prefect['problem']}")
    )


def version_callback(value: bool) -> None:
    if value:
        console.print(f"drctl {drills.__version__}")
        raise typer.Exit(0)


def register_status(app: typer.Typer) -> None:
    app.command("status")(status)
