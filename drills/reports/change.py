"""A change's record (``kind: change``) as the update log (更新日志) of the 系统更新记录.

``render_report`` renders a change with the drill record's templates, its words replaced by those
of ``drills/reports/change.yaml`` (系统更新记录, 更新内容, 回退与回退验证) and ``doc.change``
built here from the sealed record alone, which ``templates/change_log.*.j2`` prints: what
changed and by whom under which ticket, the outcome in one sentence, the backup steps with where
the backup is and its checksum and verification, the steps that applied the change with what
they ran, the checks that verified it, and the rollback with its own checks.

Which step is which comes from its action (``drills.engine.validation.change_stage``): an action
that backs up or tests the backup, one that changes something, or one that only observes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml

from drills.engine.catalogue import default_catalogue
from drills.engine.validation import change_stage
from drills.model.record import Record, StepRecord
from drills.reports.inspection import size
from drills.reports.phrases import Said, code
from drills.reports.site import PACKAGE


@cache
def _words_file() -> dict[str, dict[str, str]]:
    with (PACKAGE / "change.yaml").open(encoding="utf-8") as handle:
        data: dict[str, dict[str, str]] = yaml.safe_load(handle)
    return data


def change_words(lang: str) -> dict[str, str]:
    """The words that replace or add to ``t`` for a change's record."""
    return dict(_words_file()[lang])


class _Default(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "—"


def _fill(template: str, values: dict[str, Any]) -> str:
    return template.format_map(_Default(values))


def backup_facts(step: StepRecord, w: dict[str, str]) -> list[str]:
    """Where a backup step put the backup, its checksum and what its verification found."""
    data = step.data or {}
    action = step.action
    if step.status != "passed":
        return []
    if action == "pg.dump":
        return [_fill(w["fact_dump"], data | {"size": size(data.get("size_bytes"))})]
    if action == "pg.basebackup":
        return [_fill(w["fact_basebackup"], data | {"size": size(data.get("size_bytes"))})]
    if action == "pg.verifydump":
        return [_fill(w["fact_verifydump"], data)]
    if action == "pg.verifybackup":
        return [w["fact_verifybackup"]]
    if action in ("pg.restore_scratch", "pg.restore_dump_scratch"):
        return [_fill(w["fact_restore"], data)]
    if action == "pg.reconcile_scratch":
        return [_fill(w["fact_reconcile"], data)]
    if action == "pg.drop_scratch":
        return [w["fact_drop"]]
    if action == "files.backup":
        facts = [_fill(w["fact_files"], data)]
        for path in data.get("paths") or []:
            if not isinstance(path, dict):
                continue
            if path.get("kind") == "absent":
                facts.append(_fill(w["fact_absent"], path))
                continue
            link = f" -> {path['link_target']}" if path.get("link_target") else ""
            facts.append(_fill(w["fact_files_path"], path | {"link": link}))
        return facts
    return []


def _by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{s['phase']}:{s['id']}": s for s in doc.get("steps") or []}


def _row(step: StepRecord, shown: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": step.id,
        "title": shown.get("title") or step.id,
        "node": step.node,
        "status": step.status,
        "status_label": shown.get("status_label", step.status),
        "reason": shown.get("reason", ""),
        "checks": shown.get("checks") or [],
    }


def _ran(step: StepRecord) -> Said | str:
    """What a step that changes something ran: its SQL, or what its action said it did."""
    statement = (step.data or {}).get("statement")
    if isinstance(statement, str) and statement:
        return code(statement)
    return code(step.output) if step.output else ""


def outcome(record: Record, applied: bool, rollback: list[dict[str, Any]]) -> str:
    """Which sentence says how the change ended."""
    if record.status == "passed":
        return "outcome_passed"
    if record.status == "aborted" and not applied:
        return "outcome_aborted"
    if not applied:
        return "outcome_not_applied"
    if record.rolled_back:
        verified = (
            bool(rollback)
            and all(r["status"] == "passed" for r in rollback)
            and any(r["checks"] for r in rollback)
        )
        return "outcome_rolled_back_verified" if verified else "outcome_rolled_back_unverified"
    return "outcome_failed"


def change_view(record: Record, doc: dict[str, Any], lang: str) -> dict[str, Any]:
    """``doc.change``: the update log of a change's record."""
    w = change_words(lang)
    catalogue = default_catalogue()
    shown = _by_id(doc)
    backups: list[dict[str, Any]] = []
    applied: list[dict[str, Any]] = []
    verification: list[dict[str, Any]] = []
    rollback: list[dict[str, Any]] = []
    prechecks: list[dict[str, Any]] = []
    started_apply = False
    for step in record.steps:
        row = _row(step, shown.get(f"{step.phase}:{step.id}", {}))
        if step.phase == "rollback":
            rollback.append(row | {"ran": _ran(step)})
            continue
        stage = change_stage(step.action, catalogue)
        if stage == "backup":
            backups.append(row | {"facts": backup_facts(step, w)})
        elif stage == "apply":
            started_apply = started_apply or step.status != "skipped"
            applied.append(row | {"ran": _ran(step)})
        elif applied:
            verification.append(row)
        else:
            prechecks.append(row)
    key = outcome(record, started_apply, rollback)
    return {
        "what": doc.get("scenario") or "",
        "playbook": f"{record.playbook.get('name', '')} v{record.playbook.get('version', '')}",
        "playbook_sha256": str(record.playbook.get("sha256", "")),
        "by": doc.get("operator") or "",
        "ticket": doc.get("ticket") or "",
        "outcome": w[key],
        "outcome_key": key,
        "ok": key == "outcome_passed",
        "prechecks": prechecks,
        "backups": backups,
        "applied": applied,
        "verification": verification,
        "rolled_back": record.rolled_back,
        "rollback": rollback,
        "rollback_verified": key == "outcome_rolled_back_verified",
    }
