"""Prefect artifacts: each finished drill shows its summary and its steps in the Prefect UI.

A listener (``drills.engine.listeners``): when a run ends it publishes, within the flow run,

- a markdown artifact ``drill-PLAYBOOK`` (the summary: status, reason, objectives, measurements),
- a table artifact ``drill-PLAYBOOK-steps`` (one row per step with its times and result),

keyed by playbook, so the UI's artifact page shows each playbook's latest drill and its history.
Everything comes from the record (already free of secrets) and every value written into the
markdown is escaped, so host output cannot become markup in the UI. As with every listener, a
failure here is logged and never changes the drill.
"""

from __future__ import annotations

import re
from typing import Any

from drills.engine.listeners import Listener
from drills.model.durations import format_seconds
from drills.model.record import Record
from drills.reports import md_code, md_escape


def artifact_key(playbook: str, suffix: str = "") -> str:
    """Prefect keys may hold lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", playbook.lower()).strip("-") or "playbook"
    return f"drill-{slug}{'-' + suffix if suffix else ''}"


def summary_markdown(record: Record) -> str:
    pb = record.playbook
    title = (pb.get("title") or {}).get("en") or pb.get("name", "")
    lines = [
        f"# {md_escape(title)} — {md_escape(record.status)}",
        "",
        f"**{md_escape(record.reason)}**",
        "",
        f"- record: `{md_code(record.id)}`",
        f"- playbook: {md_escape(pb.get('name'))} v{md_escape(pb.get('version'))}"
        f" (sha256 {md_escape(str(pb.get('sha256', ''))[:12])})",
        f"- environment: {md_escape(record.environment.get('name'))}, mode {record.mode}",
        f"- operator: {md_escape(record.request.get('operator'))}",
        f"- started {md_escape(record.started_at)}, took {format_seconds(record.duration_seconds)}",
        "",
    ]
    if record.objectives:
        lines += ["| objective | target | measured | met |", "|---|---:|---:|---|"]
        for o in record.objectives:
            lines.append(
                f"| {md_escape(o.name)} | {format_seconds(o.target_seconds)} | "
                f"{format_seconds(o.measured_seconds)} | {'yes' if o.met else '**no**'} |"
            )
        lines.append("")
    m = record.measurements
    measured = [
        f"{label} {format_seconds(value)}"
        for label, value in (
            ("write outage", m.write_outage_seconds),
            ("service outage", m.service_outage_seconds),
        )
        if value is not None
    ]
    if m.lost_writes is not None:
        measured.append(f"lost writes {m.lost_writes}")
    if m.rpo_seconds is not None:
        measured.append(f"RPO {format_seconds(m.rpo_seconds)}")
    if measured:
        lines.append("Measured: " + ", ".join(measured))
    for override in record.overrides_used:
        lines.append(f"- override used: {md_escape(override)}")
    lines.append("")
    lines.append(f"Report: `drctl report {md_code(record.id)}`")
    return "\n".join(lines)


def steps_table(record: Record) -> list[dict[str, Any]]:
    return [
        {
            "step": ("↩ " if s.phase == "rollback" else "") + s.id,
            "node": s.node,
            "status": s.status,
            "started_at": s.started_at,
            "took": format_seconds(s.duration_seconds),
            "attempts": s.attempts,
            "reason": s.reason,
        }
        for s in record.steps
    ]


class PrefectArtifacts(Listener):
    """Publishes the finished record's summary and steps as artifacts of the current flow run."""

    def finished(self, record: Record) -> None:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact

        name = str(record.playbook.get("name", ""))
        create_markdown_artifact(
            markdown=summary_markdown(record),
            key=artifact_key(name),
            description=f"{name} on {record.environment.get('name')}: {record.status}",
        )
        create_table_artifact(
            table=steps_table(record),
            key=artifact_key(name, "steps"),
            description=f"Steps of {record.id}",
        )
