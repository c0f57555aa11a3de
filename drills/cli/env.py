"""``drctl env check``: a read-only report, per node, of what drctl can reach and do there."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from drills.cli.common import console

env_app = typer.Typer(help="Environments: check that drctl can reach and act on every node.")

MARK = {"ok": "[green]✔[/]", "problem": "[red]✘[/]", "note": "[yellow]•[/]"}


@env_app.command("check")
def env_check(
    env: Annotated[str, typer.Option("--env", help="Environment name or file.")],
) -> None:
    """Reach every node (SSH host key, user, become; database version, role, replication,
    privileges; the application's health URL) and say what holds. An Oracle node: its
    ORACLE_HOME and tools as the Oracle OS user, the login in thin mode with the credential it
    names, its role from V$DATABASE. Changes nothing. Exit 1 on any problem."""
    from drills.engine.envcheck import check_environment
    from drills.engine.loader import resolve_environment

    environment = resolve_environment(env)
    findings = check_environment(environment)
    table = Table(box=box.SIMPLE, show_header=True, header_style="bold", expand=False)
    table.add_column("node")
    table.add_column("")
    table.add_column("item")
    table.add_column("what drctl found", overflow="fold")
    for finding in findings:
        table.add_row(finding.node, MARK[finding.verdict], finding.item, escape(finding.detail))
    console.print(f"[bold]environment {escape(environment.name)}[/]")
    console.print(table)
    problems = [f for f in findings if f.verdict == "problem"]
    if problems:
        console.print(f"[red]{len(problems)} problem(s): fix them before a drill runs here[/]")
        raise typer.Exit(1)
    console.print("[green]every node can be reached and acted on[/]")


def register_env(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")
