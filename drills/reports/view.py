"""What a report template gets: plain values drawn from the sealed record and its annotations.

Templates (shipped or a site's own) receive ``doc`` (built here), ``t`` (the words of the chosen
language, ``drills/reports/messages.yaml``), ``site`` (the merged site settings) and ``lang``.
Nothing here reads the world: a report is rendered from the record alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import drills
from drills.model.durations import format_seconds
from drills.model.record import Record
from drills.records.annotation import Merged, merge
from drills.records.chain import Entry
from drills.reports.charts import timeline
from drills.reports.site import text


@dataclass(frozen=True)
class ReportInput:
    """A drill record, where it sits in the chain (if sealed), and its annotations."""

    record: Record
    entry: Entry | None
    annotations: list[Any]
    location: str = ""


def local_time(value: str | None, zone: ZoneInfo) -> str:
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def _utc_offset(zone: ZoneInfo) -> str:
    offset = datetime.now(zone).strftime("%z")
    return f"UTC{offset[:3]}:{offset[3:]}"


def build_view(
    source: ReportInput, lang: str, site: dict[str, Any], t: dict[str, str]
) -> dict[str, Any]:
    record = source.record
    merged: Merged = merge(list(source.annotations))
    zone = ZoneInfo(str(site.get("timezone") or "UTC"))
    pb = record.playbook
    title = pb.get("title") or {}
    kind = str(pb.get("kind", ""))
    env_name = str(record.environment.get("name", ""))

    def when(value: str | None) -> str:
        return local_time(value, zone)

    def status_label(status: str) -> str:
        return t.get(f"status_{status}", status)

    step_titles = {s.id: (text(s.title, lang) if s.title else "") or s.id for s in record.steps}
    steps = []
    for n, s in enumerate(record.steps, 1):
        o = s.offsets
        steps.append(
            {
                "n": n,
                "id": s.id,
                "title": step_titles[s.id],
                "phase": s.phase,
                "action": s.action,
                "target": s.target,
                "node": s.node,
                "status": s.status,
                "status_label": status_label(s.status),
                "attempts": s.attempts,
                "started": when(s.started_at),
                "returned": when(s.returned_at) if s.returned_at else "—",
                "converged": when(s.converged_at) if s.converged_at else "—",
                "ended": when(s.ended_at),
                "offset": f"+{o.started:.3f}s",
                "took": format_seconds(s.duration_seconds),
                "reason": s.reason,
                "error": s.error or "",
                "output": s.output,
                "milestone": s.milestone or "",
                "override": s.override or "",
                "checks": [
                    {
                        "check": c.check,
                        "node": c.node,
                        "observed": str(c.observed),
                        "expected": c.expected,
                        "held": c.held,
                        "detail": c.detail,
                    }
                    for c in s.checks
                ],
            }
        )
    objectives = [
        {
            "name": o.name,
            "target": format_seconds(o.target_seconds),
            "measured": t["not_measured"]
            if o.measured_seconds is None
            else format_seconds(o.measured_seconds),
            "met": o.met,
            "met_label": t["affirm"] if o.met else t["deny"],
            "basis": o.basis,
            "source": o.source,
            "note": o.note,
        }
        for o in record.objectives
    ]
    m = record.measurements
    consistency: list[str] = []
    if m.canary is not None:
        consistency.append(
            t["canary"]
            + ": "
            + t["canary_text"].format(
                written=m.canary.written, acknowledged=m.canary.acknowledged, lost=m.canary.lost
            )
            + (f" ({m.canary.note})" if m.canary.note else "")
        )
    if m.rpo_seconds is not None:
        consistency.append(f"{t['rpo']}: {format_seconds(m.rpo_seconds)}")
    if m.write_outage_seconds is not None:
        outage = f"{t['write_outage']}: {format_seconds(m.write_outage_seconds)}"
        probe = m.write_probe
        if probe and probe.last_write_node and probe.first_write_node:
            outage += f" ({probe.last_write_node} → {probe.first_write_node})"
        consistency.append(outage)

    problems_auto: list[str] = []
    if record.status == "interrupted":
        problems_auto.append(t["problem_interrupted"].format(reason=record.reason))
    if record.rolled_back:
        problems_auto.append(t["problem_rolled_back"].format(reason=record.reason))
    for s in record.steps:
        if s.status == "failed":
            problems_auto.append(
                t["problem_step"].format(id=s.id, reason=s.reason or s.error or "")
            )
    for missed in record.objectives:
        if not missed.met:
            detail = (
                f"{t['measured']} {format_seconds(missed.measured_seconds)} / {t['target']} "
                f"{format_seconds(missed.target_seconds)}"
                + (f"; {missed.note}" if missed.note else "")
            )
            problems_auto.append(t["problem_objective"].format(name=missed.name, detail=detail))
    for name in record.overrides_used:
        problems_auto.append(t["problem_override"].format(name=name))

    participants = [p.model_dump() for p in merged.participants]
    operator = str(record.request.get("operator") or "")
    standards = [
        text(item, lang)
        for item in site.get("standards") or []
        if not item.get("kinds") or kind in item.get("kinds", [])
    ]
    level_cfg = site.get("dr_level") or {}
    dr_level = None
    if not level_cfg.get("kinds") or kind in level_cfg.get("kinds", []):
        level = level_cfg.get("level")
        dr_level = {
            "standard": str(level_cfg.get("standard") or "GB/T 20988"),
            "level": t["level"].format(level=level) if level is not None else t["dr_level_unset"],
            "note": text(level_cfg.get("note"), lang),
        }
    systems = site.get("systems") or {}
    system = merged.system or text(systems.get(env_name), lang) or env_name

    attachments = []
    seal = None
    if source.entry is not None:
        e = source.entry
        for item in e.evidence:
            attachments.append(
                {
                    "name": item.name,
                    "description": t["att_journal"] if item.name == "journal.jsonl" else "",
                    "sha256": item.sha256,
                    "size": item.size,
                }
            )
        seal = {
            "seq": e.seq,
            "hash": e.hash,
            "record_hash": e.fields.get("record_hash", ""),
            "prev_hash": e.fields.get("prev_hash", ""),
            "key_id": e.fields.get("key_id", ""),
            "sealed_at": when(str(e.fields.get("sealed_at", ""))),
            "location": source.location,
        }
    for a in merged.attachments:
        attachments.append(
            {"name": a.name, "description": a.description, "sha256": a.sha256, "size": a.size}
        )
    rollback_steps = [s for s in steps if s["phase"] == "rollback"]
    return {
        "id": record.id,
        "name": text(title, lang) or str(pb.get("name", "")),
        "playbook": pb,
        "kind": kind,
        "system": system,
        "environment": record.environment,
        "scenario": merged.scenario or str(pb.get("description") or "") or text(title, lang),
        "drill_type": merged.drill_type or text(site.get("drill_type"), lang),
        "mode": record.mode,
        "mode_label": t.get(f"mode_{record.mode}", record.mode),
        "status": record.status,
        "status_label": status_label(record.status),
        "reason": record.reason,
        "organisation": text(site.get("organisation"), lang),
        "timezone": f"{zone.key} ({_utc_offset(zone)})",
        "planned_start": when(merged.planned_start) if merged.planned_start else None,
        "planned_end": when(merged.planned_end) if merged.planned_end else None,
        "actual_start": when(record.started_at),
        "actual_end": when(record.ended_at),
        "duration": format_seconds(record.duration_seconds),
        "operator": operator,
        "ticket": record.request.get("ticket") or "",
        "approval": record.approval or {},
        "orchestrator": record.orchestrator,
        "participants": participants,
        "roles": record.roles,
        "preconditions": [
            {
                "check": c.check,
                "node": c.node,
                "observed": str(c.observed),
                "expected": c.expected,
                "held": c.held,
            }
            for c in record.preconditions
        ],
        "steps": steps,
        "milestones": [
            {"name": ms.name, "at": when(ms.at), "offset": f"+{ms.offset:.3f}s", "step": ms.step}
            for ms in record.milestones
        ],
        "objectives": objectives,
        "objectives_met": sum(o.met for o in record.objectives),
        "consistency": consistency,
        "manual_consistency": merged.data_consistency or "",
        "rolled_back": record.rolled_back,
        "rollback_steps": rollback_steps,
        "problems_auto": problems_auto,
        "problems": list(merged.problems),
        "rectification": [
            {
                "action": r.action,
                "owner": r.owner,
                "deadline": r.deadline.isoformat(),
                "status": t["rect_done"] if r.status == "done" else t["rect_open"],
            }
            for r in merged.rectification
        ],
        "plan_revised": merged.plan_revised,
        "plan_revision_note": merged.plan_revision_note or "",
        "standards": standards,
        "dr_level": dr_level,
        "attachments": attachments,
        "signatures": [text(s, lang) for s in site.get("signatures") or []],
        "seal": seal,
        "annotations": [
            {
                "id": a.id,
                "at": when(a.at),
                "by": a.by,
                "fields": ", ".join(a.given()),
                "note": a.note,
            }
            for a in merged.sources
        ],
        "notes": list(record.notes) + list(merged.notes),
        "overrides": list(record.overrides_used),
        "timeline": timeline(record, step_titles),
        "generated": t["generated"].format(version=drills.__version__),
        "generated_at": datetime.now(zone).strftime("%Y-%m-%d %H:%M:%S"),
    }
