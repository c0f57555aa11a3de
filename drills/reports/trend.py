"""Trends: per-step durations and the RTO of one playbook across its drills."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from drills.model.durations import format_seconds
from drills.model.record import Record
from drills.reports.charts import trend_chart
from drills.reports.view import local_time


@dataclass(frozen=True)
class TrendRow:
    id: str
    started_at: str
    environment: str
    status: str
    rto: float | None
    steps: dict[str, float]


def trend_rows(records: list[Record]) -> tuple[list[str], list[TrendRow]]:
    """Oldest first; step ids in the order they first appear (main steps only)."""
    ordered = sorted(records, key=lambda r: r.started_at)
    step_ids: list[str] = []
    rows = []
    for record in ordered:
        steps: dict[str, float] = {}
        for step in record.steps:
            if step.phase != "main" or step.status == "skipped":
                continue
            if step.id not in step_ids:
                step_ids.append(step.id)
            steps[step.id] = step.duration_seconds
        rto = next((o.measured_seconds for o in record.objectives if o.name == "rto"), None)
        rows.append(
            TrendRow(
                id=record.id,
                started_at=record.started_at,
                environment=str(record.environment.get("name", "")),
                status=record.status,
                rto=rto,
                steps=steps,
            )
        )
    return step_ids, rows


def trend_view(
    playbook: str, records: list[Record], site: dict[str, Any], lang: str
) -> dict[str, Any]:
    zone = ZoneInfo(str(site.get("timezone") or "UTC"))
    step_ids, rows = trend_rows(records)
    labels = [local_time(r.started_at, zone)[:10] for r in rows]
    chart = trend_chart(
        labels,
        {sid: [r.steps.get(sid) for r in rows] for sid in step_ids},
        [r.rto for r in rows],
    )
    return {
        "playbook": playbook,
        "timezone": zone.key,
        "step_ids": step_ids,
        "rows": [
            {
                "id": r.id,
                "started": local_time(r.started_at, zone),
                "environment": r.environment,
                "status": r.status,
                "rto": format_seconds(r.rto),
                "steps": [format_seconds(r.steps.get(s)) for s in step_ids],
            }
            for r in rows
        ],
        "chart": chart,
    }
