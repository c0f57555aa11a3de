"""What a report template gets: plain values drawn from the sealed record and its annotations.

Templates (shipped or a site's own) receive ``doc`` (built here), ``t`` (the words of the chosen
language, ``drills/reports/messages.yaml``), ``site`` (the merged site settings) and ``lang``.
Nothing here reads the world or the clock: a report is a function of the record, its
annotations and the site settings alone.

What the record says in English (the runner's sentences, the checks' expectations, milestone
names) stays in the record; in a Chinese report it is translated here
(``drills.reports.phrases``), and values that were sentences become ``Said`` objects, which the
templates print as they print text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import drills
from drills.engine.human import HUMAN_ACTIONS
from drills.model.durations import format_seconds
from drills.model.record import LostTransactions, Record
from drills.records.annotation import Merged, merge
from drills.records.chain import Entry
from drills.reports.charts import timeline
from drills.reports.phrases import Phrasebook, Said, code, compose, inline, joined
from drills.reports.site import default_fields, text, zone_name
from drills.reports.times import local_time, utc_offset


@dataclass(frozen=True)
class ReportInput:
    """A drill record, where it sits in the chain (if sealed), and its annotations."""

    record: Record
    entry: Entry | None
    annotations: list[Any]
    location: str = ""


@dataclass(frozen=True)
class Clause:
    """A standard clause the drill gives evidence for; prints as its heading and text."""

    heading: str
    clause: str | None = None
    unset: str = ""
    body: str = ""

    def __str__(self) -> str:
        head = f"{self.heading}（{self.unset}）" if self.unset else self.heading
        return f"{head}：{self.body}" if self.body else head


@dataclass(frozen=True)
class Signature:
    """Who signs: the role, and the signatory's name if the site gave one; prints as the role."""

    role: str
    name: str = ""

    def __str__(self) -> str:
        return self.role


def _approval(approval: dict[str, Any], t: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"label": t.get(f"approval_{key}", key), "value": value}
        for key, value in approval.items()
        if key != "approve" or value is not True
    ]


def _standards(site: dict[str, Any], kind: str, lang: str, t: dict[str, str]) -> list[Clause]:
    """Each clause this kind of drill gives evidence for: standard, level, number and title as
    the standard names them, then its text; a number not configured is said to be so."""
    clauses: list[Clause] = []
    for item in site.get("standards") or []:
        if not isinstance(item, dict):
            continue
        if item.get("kinds") and kind not in item.get("kinds", []):
            continue
        if "title" not in item and "text" not in item:
            clauses.append(Clause(text(item, lang)))
            continue
        clause = str(item.get("clause") or "").strip()
        named = " ".join(
            p for p in (str(item.get("standard") or ""), text(item.get("level"), lang)) if p
        )
        rest = " ".join(p for p in (clause, text(item.get("title"), lang)) if p)
        # "GB/T 22239-2019 第三级 8.1.4.9 数据备份恢复"; "GB/T 22239-2019 level 3, 8.1.4.9 ..."
        heading = (", " if lang == "en" else " ").join(p for p in (named, rest) if p)
        clauses.append(
            Clause(
                heading,
                clause or None,
                t["clause_unset"] if not clause else "",
                text(item.get("text"), lang),
            )
        )
    return clauses


LOST_ROWS = 100  # lost transactions the report lists one by one (the record keeps them all)


def _sentences(says: Phrasebook, text: str, semicolon: str) -> Said | str:
    """A note of several sentences joined by "; ", each translated."""
    if not text:
        return ""
    return joined([says.sentence(part) for part in text.split("; ")], semicolon)


def _lost_transactions(
    lost: LostTransactions | None,
    t: dict[str, str],
    says: Phrasebook,
    when: Callable[[str | None], str],
    semicolon: str,
) -> dict[str, Any] | None:
    """The lost transactions as the report shows them: how they were counted, each of them
    (the first ``LOST_ROWS``), per table, and the WAL segments kept as evidence."""
    if lost is None:
        return None
    exact = lost.loss_accounting == "exact"
    oracle = lost.engine == "oracle"
    if lost.loss_accounting == "bound":
        text = t["lost_tx_bound"].format(
            node=lost.node or "?",
            window=format_seconds(lost.rpo_seconds) if lost.rpo_seconds is not None else "?",
            new=str((lost.readings.get("after_failover") or {}).get("new_primary") or "?"),
            scn=lost.switch_scn if lost.switch_scn is not None else "?",
            count=lost.count if lost.count is not None else "?",
        )
    elif oracle:
        text = (
            t["lost_tx_oracle_lower_bound"].format(count=lost.count)
            if lost.count is not None
            else t["lost_tx_oracle_unknown"]
        )
    elif exact:
        text = t["lost_tx_exact"].format(
            node=lost.node or "?",
            count=lost.count,
            switch=lost.switch_lsn or "?",
            old=lost.timeline or "?",
            new=lost.new_timeline or "?",
        )
    elif lost.count is not None:
        text = t["lost_tx_lower_bound"].format(count=lost.count)
    else:
        text = t["lost_tx_unknown"]
    rpo = ""
    if exact and lost.count and lost.rpo_seconds is not None:
        rpo = t["lost_tx_rpo"].format(
            surviving=when(lost.last_surviving_commit_at),
            last=when(lost.last_lost_commit_at),
            rpo=format_seconds(lost.rpo_seconds),
        )
    if lost.loss_accounting == "bound" and lost.rpo_seconds is not None:
        rpo = t["lost_tx_rpo_bound"].format(rpo=format_seconds(lost.rpo_seconds))
    summary = compose("{label}: {text}", label=t["lost_tx"], text=text)
    rows = [
        {
            "xid": tx.xid,
            "committed_at": when(tx.committed_at),
            "lsn": tx.lsn,
            "tables": joined([says.sentence(name) for name in tx.tables], "、")
            if tx.tables
            else t["lost_tx_none_listed"],
        }
        for tx in lost.transactions[:LOST_ROWS]
    ]
    more = (lost.count or 0) - len(rows) if exact else 0
    return {
        "exact": exact,
        "summary": summary,
        "text": text,
        "rpo": rpo,
        "note": _sentences(says, lost.note, semicolon),
        "exactness": compose(
            "{label}: {text}",
            label=t["lost_tx_exactness"],
            text=_sentences(says, lost.what_is_exact, semicolon),
        )
        if lost.what_is_exact
        else "",
        "rows": rows,
        "more": t["lost_tx_more"].format(n=more) if more > 0 else "",
        "tables": [
            {"name": says.sentence(name), "count": count} for name, count in lost.tables.items()
        ],
        "segments": [
            {"name": seg.name, "path": seg.path, "size": seg.size, "sha256": seg.sha256}
            for seg in lost.wal_segments
        ],
    }


def build_view(
    source: ReportInput, lang: str, site: dict[str, Any], t: dict[str, str]
) -> dict[str, Any]:
    record = source.record
    merged: Merged = merge(list(source.annotations))
    zone = ZoneInfo(zone_name(site))
    says = Phrasebook(lang, zone=zone)
    semicolon = "；" if lang == "zh" else "; "
    pb = record.playbook
    title = pb.get("title") or {}
    kind = str(pb.get("kind", ""))
    env_name = str(record.environment.get("name", ""))

    def when(value: str | None) -> str:
        return local_time(value, zone)

    def status_label(status: str) -> str:
        return t.get(f"status_{status}", status)

    def check_row(c: Any) -> dict[str, Any]:
        observed: Any = says.observed(c.observed)
        if c.verdict == "error":  # the question could not be asked: what went wrong
            observed = says.sentence(c.detail) or observed
        elif isinstance(c.observed, dict):  # in words, as the inspection report says it
            from drills.reports.inspection import result_text, words

            observed = result_text(c, words(lang), when, says)
        return {
            "check": c.check,
            "name": says.check(c.check),
            "node": c.node,
            "observed": observed,
            "expected": says.expected(c.expected),
            "held": c.held,
            "detail": says.sentence(c.detail) if c.detail else "",
        }

    titles: dict[str, Said | str] = {s.id: says.title(s.title) or s.id for s in record.steps}
    step_titles = {sid: str(value) for sid, value in titles.items()}  # for the chart's labels
    steps = []
    for n, s in enumerate(record.steps, 1):
        o = s.offsets
        steps.append(
            {
                "n": n,
                "id": s.id,
                "title": titles[s.id],
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
                "reason": says.sentence(s.reason),
                # the error, when the reason does not already quote it
                "error": says.sentence(s.error) if s.error and s.error not in s.reason else "",
                "output": s.output,
                # the output of a person's step is drctl's sentence (who acknowledged, when):
                # translated; any other step's output is the host's, shown as it is
                "output_said": says.known(s.output) if s.action in HUMAN_ACTIONS else None,
                "output_code": code(s.output),
                "milestone": says.milestone(s.milestone) if s.milestone else "",
                "override": s.override or "",
                "checks": [check_row(c) for c in s.checks],
            }
        )
    objectives = [
        {
            "name": o.name,
            "label": says.objective(o.name),
            "target": format_seconds(o.target_seconds),
            "measured": t["not_measured"]
            if o.measured_seconds is None
            else format_seconds(o.measured_seconds),
            "met": o.met,
            "met_label": t["affirm"] if o.met else t["deny"],
            "basis": says.sentence(o.basis),
            "source": says.source(o.source),
            "note": says.sentence(o.note) if o.note else "",
        }
        for o in record.objectives
    ]
    m = record.measurements
    consistency: list[Any] = []
    lost = _lost_transactions(m.lost_transactions, t, says, when, semicolon)
    if lost is not None:
        consistency.append(lost["summary"])
    if m.canary is not None:
        canary = compose(
            "{label}: {text}",
            label=t["canary_sample"] if lost is not None else t["canary"],
            text=t["canary_text"].format(
                written=m.canary.written, acknowledged=m.canary.acknowledged, lost=m.canary.lost
            ),
        )
        if m.canary.note:
            canary = compose("{c} ({note})", c=canary, note=says.sentence(m.canary.note))
        consistency.append(canary)
    if m.rpo_seconds is not None:
        consistency.append(f"{t['rpo']}: {format_seconds(m.rpo_seconds)}")
    for label, seconds, probe in (
        (t["write_outage"], m.write_outage_seconds, m.write_probe),
        (t["service_outage"], m.service_outage_seconds, m.service_probe),
    ):
        if seconds is None and probe is None:
            continue
        line = compose("{label}: {value}", label=label, value=format_seconds(seconds))
        if probe and probe.last_write_node and probe.first_write_node:
            line = compose(
                "{line} ({a} → {b})", line=line, a=probe.last_write_node, b=probe.first_write_node
            )
        if probe and probe.note:
            line = compose(
                "{line}{s}{note}", line=line, s=semicolon, note=says.sentence(probe.note)
            )
        consistency.append(line)

    problems_auto: list[Any] = []
    reason = says.sentence(record.reason)
    if record.status == "interrupted":
        problems_auto.append(compose(t["problem_interrupted"], reason=reason))
    if record.rolled_back:
        problems_auto.append(compose(t["problem_rolled_back"], reason=reason))
    for s in record.steps:
        if s.status == "failed":
            problems_auto.append(
                compose(t["problem_step"], id=s.id, reason=says.sentence(s.reason or s.error or ""))
            )
    for missed in record.objectives:
        if not missed.met:
            detail: Said | str = (
                f"{t['measured']} {format_seconds(missed.measured_seconds)} / {t['target']} "
                f"{format_seconds(missed.target_seconds)}"
            )
            if missed.note:
                detail = compose(
                    "{d}{s}{note}", d=detail, s=semicolon, note=says.sentence(missed.note)
                )
            problems_auto.append(
                compose(t["problem_objective"], name=says.objective(missed.name), detail=detail)
            )
    for name in record.overrides_used:
        problems_auto.append(compose(t["problem_override"], name=name))

    participants = [p.model_dump() for p in merged.participants]
    operator = str(record.request.get("operator") or "")
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
    configured_system = merged.system or text(systems.get(env_name), lang)
    system = configured_system or env_name
    gaps = default_fields(site, lang, system_known=bool(configured_system))

    def site_value(key: str) -> str:
        return "" if key in gaps else text(site.get(key), lang)

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
    nodes = record.environment.get("nodes") or {}
    scope = [
        {
            "name": name,
            "configured_role": says.name("roles", str(node.get("configured_role") or "")),
            "live_roles": "、".join(
                says.name("roles", role) for role, n in record.roles.items() if n == name
            )
            if lang == "zh"
            else ", ".join(role for role, n in record.roles.items() if n == name),
            "address": f"{node.get('host')}:{node.get('port')}",
        }
        for name, node in nodes.items()
        if isinstance(node, dict)
    ]
    signatures = [
        Signature(text(item, lang), text(item.get("name"), lang) if isinstance(item, dict) else "")
        for item in site.get("signatures") or []
    ]
    notes: list[Any] = [says.sentence(n) for n in record.notes] + list(merged.notes)
    doc = {
        "id": record.id,
        "name": says.title(title) or str(pb.get("name", "")),
        "playbook": pb,
        "kind": kind,
        "kind_label": says.name("kinds", kind),
        "system": system,
        "environment": record.environment,
        "scope": scope,
        "scenario": merged.scenario
        or says.sentence(str(pb.get("description") or ""))
        or says.title(title),
        "drill_type": merged.drill_type or text(site.get("drill_type"), lang),
        "mode": record.mode,
        "mode_label": t.get(f"mode_{record.mode}", record.mode),
        "status": record.status,
        "status_label": status_label(record.status),
        "reason": reason,
        "organisation": site_value("organisation"),
        "location": site_value("location"),
        "department": site_value("department"),
        "site_gaps": [t.get(f"field_{key}", key) for key in gaps],
        "site_gap_keys": gaps,
        "banner": compose(
            t["banner_text"],
            fields=("、" if lang == "zh" else ", ").join(t[f"field_{k}"] for k in gaps),
        )
        if gaps
        else None,
        "timezone": f"{zone.key} ({utc_offset(zone, record.started_at)})",
        "planned_start": when(merged.planned_start) if merged.planned_start else None,
        "planned_end": when(merged.planned_end) if merged.planned_end else None,
        "actual_start": when(record.started_at),
        "actual_end": when(record.ended_at),
        "duration": format_seconds(record.duration_seconds),
        "operator": operator,
        "ticket": record.request.get("ticket") or "",
        "approval": record.approval or {},
        "approval_items": _approval(record.approval or {}, t),
        "orchestrator": record.orchestrator,
        "participants": participants,
        "roles": record.roles,
        "preconditions": [check_row(c) for c in record.preconditions],
        "steps": steps,
        "milestones": [
            {
                "name": ms.name,
                "label": says.milestone(ms.name),
                "at": when(ms.at),
                "offset": f"+{ms.offset:.3f}s",
                "step": ms.step,
            }
            for ms in record.milestones
        ],
        "objectives": objectives,
        "objectives_met": sum(o.met for o in record.objectives),
        "consistency": consistency,
        "lost_transactions": lost,
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
        "revised_unknown": inline(t["revised_unknown"]),
        "standards": _standards(site, kind, lang, t),
        "dr_level": dr_level,
        "attachments": attachments,
        "signatures": signatures,
        "seal": seal,
        "seal_verify": inline(t["seal_verify"].format(id=record.id)),
        "annotations": [
            {
                "id": a.id,
                "at": when(a.at),
                "by": a.by,
                "fields": ("、" if lang == "zh" else ", ").join(
                    says.name("annotation_fields", f) for f in a.given()
                ),
                "note": a.note,
            }
            for a in merged.sources
        ],
        "notes": notes,
        "overrides": list(record.overrides_used),
        "timeline": timeline(
            record,
            step_titles,
            milestone_label=says.milestone,
            objective_label=says.objective,
        ),
        "generated": t["generated"].format(version=drills.__version__),
    }
    # Whether the report quotes an original no table knew: it then explains the 「原文：…」 mark.
    doc["unknown"] = quotes_unknown(doc)
    return doc


def quotes_unknown(value: Any) -> bool:
    """Whether ``value`` (a doc, or any part of one) holds an original no table knew."""
    if isinstance(value, Said):
        return bool(value.unknown)
    if isinstance(value, dict):
        return any(quotes_unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(quotes_unknown(v) for v in value)
    return False
