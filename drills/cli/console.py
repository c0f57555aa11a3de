"""What the terminal shows: live step progress and summaries, drawn with rich from records."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drills.engine.listeners import Listener
from drills.engine.loader import LoadedPlaybook
from drills.engine.roles import RoleMap
from drills.model.durations import format_seconds
from drills.model.environment import Environment
from drills.model.playbook import Step
from drills.model.record import Record, StepRecord
from verify.result import CheckResult

STATUS_STYLE = {
    "passed": "green",
    "overridden": "yellow",
    "skipped": "dim",
    "failed": "red",
    "aborted": "red",
    "interrupted": "magenta",
    "running": "cyan",
}


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


class ConsoleProgress(Listener):
    """Prints one line per step as it starts and as it ends."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def started(self, run_id: str, loaded: LoadedPlaybook, env: Environment) -> None:
        pb = loaded.playbook
        self.console.print(
            f"[bold]{pb.title.en}[/] ({pb.name} v{pb.version}) on [bold]{env.name}[/]"
            f" — run {run_id}"
        )

    def roles(self, role_map: RoleMap) -> None:
        mapped = ", ".join(f"{role} = {node}" for role, node in role_map.roles.items())
        self.console.print(f"  roles now: {mapped}")
        for note in role_map.notes:
            self.console.print(f"  [yellow]{escape(note)}[/]")

    def preconditions(self, checks: list[CheckResult]) -> None:
        for check in checks:
            mark = "✔" if check.held else "✘"
            self.console.print(
                escape(
                    f"  {mark} precondition {check.check} on {check.node}: {check.observed!r}"
                    f" (expected {check.expected})"
                ),
                style=None if check.held else "red",
                highlight=False,
            )

    def step_started(self, step: Step, node: str, phase: str) -> None:
        prefix = "rollback " if phase == "rollback" else ""
        self.console.print(
            f"  ▶ {prefix}{step.id}: {step.action} on {step.target} ({node})",
            style="dim",
            highlight=False,
        )

    def step_ended(self, record: StepRecord) -> None:
        line = f"  {styled(record.status)} {record.id} in {format_seconds(record.duration_seconds)}"
        if record.reason:
            line += f" — {escape(record.reason)}"
        self.console.print(line, highlight=False)

    def note(self, text: str) -> None:
        self.console.print(f"  {escape(text)}")


def steps_table(record: Record) -> Table:
    table = Table(
        title=f"{record.playbook['name']} on {record.environment['name']}", title_justify="left"
    )
    for column in ("step", "node", "status", "tries", "returned", "converged", "took"):
        table.add_column(
            column,
            justify="right" if column in ("returned", "converged", "took", "tries") else "left",
        )
    for step in record.steps:
        start = step.offsets.started
        returned = step.offsets.returned
        converged = step.offsets.converged
        table.add_row(
            ("↩ " if step.phase == "rollback" else "") + step.id,
            step.node,
            styled(step.status),
            str(step.attempts),
            format_seconds(returned - start) if returned is not None else "—",
            format_seconds(converged - start) if converged is not None else "—",
            format_seconds(step.duration_seconds),
        )
    return table


def objectives_table(record: Record) -> Table:
    table = Table(title="objectives", title_justify="left")
    for column in ("objective", "target", "measured", "met", "basis"):
        table.add_column(column)
    for o in record.objectives:
        table.add_row(
            o.name,
            format_seconds(o.target_seconds),
            format_seconds(o.measured_seconds),
            "[green]yes[/]" if o.met else "[red]no[/]",
            escape(o.basis + (f" — {o.note}" if o.note else "")),
        )
    return table


def measurements_line(record: Record) -> str:
    m = record.measurements
    parts = [
        f"write outage {format_seconds(m.write_outage_seconds)}",
        *(
            [f"service outage {format_seconds(m.service_outage_seconds)}"]
            if m.service_probe is not None
            else []
        ),
        f"lost writes {m.lost_writes if m.lost_writes is not None else '—'}",
        f"RPO {format_seconds(m.rpo_seconds)}",
    ]
    lost = m.lost_transactions
    if lost is not None:  # counted from the old primary's WAL, or only a lower bound
        parts[-2:] = [
            f"{parts[-2]}, RPO {format_seconds(m.rpo_seconds)}"
            + (" (from the WAL)" if lost.loss_accounting == "exact" else " (at least: WAL unread)")
        ]
    if m.write_probe and m.write_probe.last_write_node and m.write_probe.first_write_node:
        parts.append(
            f"writes moved {m.write_probe.last_write_node} → {m.write_probe.first_write_node}"
        )
    return "measured: " + ", ".join(parts)


def print_record(console: Console, record: Record, path: str | None = None) -> None:
    console.print(steps_table(record))
    if record.objectives:
        console.print(objectives_table(record))
    if (
        record.measurements.write_probe
        or record.measurements.canary
        or record.measurements.service_probe
    ):
        console.print(measurements_line(record), highlight=False)
    for override in record.overrides_used:
        console.print(f"[yellow]override used: {override}[/]")
    for note in record.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    console.print(f"{styled(record.status)}: {escape(record.reason)}", highlight=False)
    if path:
        console.print(f"record: {path}", highlight=False)
