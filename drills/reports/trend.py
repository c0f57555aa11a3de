"""Trends: per-step durations and the RTO of one playbook across its drills, against the RTO
target, failed drills marked, every time in the site's zone (``timezone``, Asia/Shanghai unless
the site says otherwise)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from drills.model.durations import format_seconds
from drills.model.record import Record
from drills.reports.charts import trend_chart
from drills.reports.site import messages, text, zone_name
from drills.reports.times import local_time, utc_offset


@dataclass(frozen=True)
class TrendRow:
    id: str
    started_at: str
    environment: str
    status: str
    rto: float | None
    steps: dict[str, float]
    rto_target: float | None = None
    titles: dict[str, dict[str, str]] = field(default_factory=dict)


def trend_rows(records: list[Record]) -> tuple[list[str], list[TrendRow]]:
    """Oldest first; step ids in the order they first appear (main steps only)."""
    ordered = sorted(records, key=lambda r: r.started_at)
    step_ids: list[str] = []
    rows = []
    for record in ordered:
        steps: dict[str, float] = {}
        titles: dict[str, dict[str, str]] = {}
        for step in record.steps:
            if step.phase != "main" or step.status == "skipped":
                continue
            if step.id not in step_ids:
                step_ids.append(step.id)
            steps[step.id] = step.duration_seconds
            if step.title:
                titles[step.id] = step.title
        rto = next((o for o in record.objectives if o.name == "rto"), None)
        rows.append(
            TrendRow(
                id=record.id,
                started_at=record.started_at,
                environment=str(record.environment.get("name", "")),
                status=record.status,
                rto=rto.measured_seconds if rto else None,
                steps=steps,
                rto_target=rto.target_seconds if rto else None,
                titles=titles,
            )
        )
    return step_ids, rows


def _moment(value: str, zone: ZoneInfo) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=zone)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone)


def trend_view(
    playbook: str, records: list[Record], site: dict[str, Any], lang: str
) -> dict[str, Any]:
    zone = ZoneInfo(zone_name(site))
    t = messages()[lang]
    step_ids, rows = trend_rows(records)
    titles: dict[str, str] = {}
    for row in rows:  # the newest title of each step
        for sid, title in row.titles.items():
            titles[sid] = text(title, lang) or sid
    names = {sid: titles.get(sid, sid) for sid in step_ids}
    chart = trend_chart(
        [_moment(r.started_at, zone) for r in rows],
        {sid: [r.steps.get(sid) for r in rows] for sid in step_ids},
        [r.rto for r in rows],
        targets=[r.rto_target for r in rows],
        failed=[r.status != "passed" for r in rows],
        names=names,
        rto_name=t["trend_rto"],
    )
    offset = utc_offset(zone, rows[-1].started_at) if rows else utc_offset(zone)
    return {
        "playbook": playbook,
        "timezone": f"{zone.key} ({offset})",
        "step_ids": step_ids,
        "step_names": [names[s] for s in step_ids],
        "rows": [
            {
                "id": r.id,
                "started": local_time(r.started_at, zone)[:19],
                "environment": r.environment,
                "status": r.status,
                "status_label": t.get(f"status_{r.status}", r.status),
                "rto": format_seconds(r.rto),
                "rto_target": format_seconds(r.rto_target) if r.rto_target is not None else "—",
                "steps": [format_seconds(r.steps.get(s)) for s in step_ids],
            }
            for r in rows
        ],
        "chart": chart,
        "axis_note": t["trend_axis_note"].format(zone=f"{zone.key}, {offset}"),
        "target_off_scale": t["trend_target_off_scale"].format(target=chart.far_label)
        if chart.target_off_scale
        else "",
    }
