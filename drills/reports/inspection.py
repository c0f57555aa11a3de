"""The quarterly inspection report (季度巡检报告): what its templates get beyond the drill view.

``render_report`` uses the templates ``inspection.{html,md}.j2`` for a record whose playbook kind
is ``inspection``, with ``doc.inspection`` built here from the sealed record alone: the header
(hospital, system, period, time, inspector), one row per check (item, server, observed, standard,
normal/abnormal), the findings with a suggested handling each, the conclusion and the signature
block. The words are in ``drills/reports/inspection.yaml``; a site changes the signers with
``inspection: {signatures: [...]}`` in its site.yaml (each a string or a {zh:, en:} map).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from drills.model.durations import format_seconds
from drills.model.record import Record
from drills.reports.phrases import Phrasebook, Said, compose, inline
from drills.reports.site import PACKAGE, messages, text, zone_name
from drills.reports.view import local_time
from verify.result import CheckResult


@cache
def _words_file() -> dict[str, dict[str, Any]]:
    with (PACKAGE / "inspection.yaml").open(encoding="utf-8") as handle:
        data: dict[str, dict[str, Any]] = yaml.safe_load(handle)
    return data


def words(lang: str) -> dict[str, Any]:
    return _words_file()[lang]


def plain_words(lang: str) -> dict[str, str]:
    """The single words, to merge into ``t``."""
    return {k: v for k, v in words(lang).items() if isinstance(v, str)}


def size(n: Any) -> str:
    try:
        value = float(n)
    except (TypeError, ValueError):
        return str(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _seconds(value: Any) -> str:
    try:
        return format_seconds(float(value))
    except (TypeError, ValueError):
        return str(value)


class _Default(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "—"


def _fill(template: str, values: dict[str, Any]) -> str:
    return template.format_map(_Default(values))


_LAG = re.compile(r"<= (\d+) bytes and <= ([\d.]+)s")
_STREAMING = re.compile(r"(\w+) from (\S+)")


def _sessions(observed: dict[str, Any]) -> str:
    listed = observed.get("sessions") or []
    if not listed:
        return ""
    named = "; ".join(
        f"pid {s.get('pid')} {s.get('user', '')} {_seconds(s.get('seconds'))}"
        + (f" `{s['query']}`" if s.get("query") else "")
        for s in listed
    )
    more = observed.get("count", 0) - len(listed)
    return f": {named}" + (f" (+{more})" if more > 0 else "")


def _settings_text(values: Any) -> str:
    if not isinstance(values, dict):
        return str(values)
    return ", ".join(
        f"{k}={v if isinstance(v, str) else '|'.join(str(x) for x in v)}" for k, v in values.items()
    )


def result_text(
    check: CheckResult, w: dict[str, Any], when: Any, says: Phrasebook | None = None
) -> str | Said:
    """What the check observed, in the report's language; when it has no form, what the check
    said (translated by ``says``, if given)."""
    observed = check.observed
    results: dict[str, str] = w["results"]

    def raw(value: str) -> str | Said:
        return says.sentence(value) if says is not None else value

    if check.verdict == "error":
        return raw(check.detail) if check.detail else raw(str(observed))
    name = check.check
    if name == "pg.streaming" and isinstance(observed, str):
        match = _STREAMING.fullmatch(observed)
        if match and "pg.streaming.from" in results:
            return _fill(results["pg.streaming.from"], {"status": match[1], "source": match[2]})
    if name in ("pg.is_primary", "pg.is_standby") and isinstance(observed, str):
        return _fill(results[name], {"role": w.get(f"role_{observed}", observed)})
    if not isinstance(observed, dict):
        if name not in results and says is not None:
            return says.observed(observed)
        return _fill(results.get(name, "{observed}"), {"observed": observed})
    values: dict[str, Any] = dict(observed)
    values |= {
        "free": size(observed.get("free_bytes")),
        "size": size(observed.get("size_bytes")),
        "wal": size(observed.get("wal_bytes")),
        "ready": observed.get("ready_to_archive", "—"),
        "age": _seconds(observed.get("age_seconds")),
        "sessions": _sessions(observed),
        "values": _settings_text(observed.get("values")),
    }
    if name == "pg.replay_lag":
        values |= {
            "bytes": size(observed.get("bytes")),
            "seconds": _seconds(observed.get("seconds")),
        }
    if "finished_at" in observed:
        values["finished_at"] = when(str(observed["finished_at"]))
    key = name
    if name == "pg.backup_age":
        if observed.get("method") == "archiver":
            key = "pg.backup_age.archiver" if "age_seconds" in observed else ""
        elif not observed.get("found"):
            key = "pg.backup_age.none"
    if key in results:
        text_ = _fill(results[key], values)
        if name == "pg.settings" and observed.get("wrong"):
            text_ += " ✘ " + _settings_text(observed["wrong"])
        return text_
    return raw(check.detail) if check.detail else raw(str(observed))


def standard_text(
    check: CheckResult, w: dict[str, Any], says: Phrasebook | None = None
) -> str | Said:
    """The standard the check was judged against, from the thresholds it recorded; else what
    the check expected (translated by ``says``, if given)."""
    standards: dict[str, str] = w["standards"]
    name = check.check
    template = standards.get(name)
    observed = check.observed
    limits = observed.get("limits") if isinstance(observed, dict) else None
    expected = says.expected(check.expected) if says is not None else check.expected
    if template is None:
        return expected
    if name == "pg.streaming":
        match = _STREAMING.fullmatch(check.expected)
        return _fill(template, {"source": match[2]}) if match else expected
    if name == "pg.replay_lag":
        match = _LAG.search(check.expected)
        if not match:
            return expected
        return _fill(template, {"max_bytes": size(match.group(1)), "max": _seconds(match.group(2))})
    if "{" not in template:
        return template
    if not isinstance(limits, dict):
        return expected
    values: dict[str, Any] = dict(limits)
    values |= {
        "min_free": size(limits.get("min_free_bytes")),
        "max_wal": size(limits.get("max_wal_bytes")),
        "max": _seconds(limits.get("max_seconds", limits.get("max_age_seconds"))),
        "max_used_percent": f"{limits.get('max_used_percent', '—'):g}"
        if isinstance(limits.get("max_used_percent"), int | float)
        else "—",
        "expected": _settings_text(limits.get("expected")),
    }
    return _fill(template, values)


def _period(record: Record, zone: ZoneInfo, w: dict[str, Any]) -> str:
    try:
        moment = datetime.fromisoformat(record.started_at.replace("Z", "+00:00"))
    except ValueError:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(zone)
    return _fill(w["i_period_value"], {"year": local.year, "quarter": (local.month - 1) // 3 + 1})


def inspection_view(
    record: Record, doc: dict[str, Any], lang: str, site: dict[str, Any]
) -> dict[str, Any]:
    """``doc.inspection``: header, items, findings, conclusion and signers of the report."""
    w = words(lang)
    zone = ZoneInfo(zone_name(site))
    says = Phrasebook(lang, zone=zone)

    def when(value: str | None) -> str:
        return local_time(value, zone)

    addresses = {
        name: f"{node.get('host')}:{node.get('port')}"
        for name, node in (record.environment.get("nodes") or {}).items()
        if isinstance(node, dict)
    }
    roles_of: dict[str, str] = {}
    for role, node_name in record.roles.items():
        roles_of.setdefault(node_name, w.get(f"role_{role}", role))
    advice: dict[str, str] = w["advice"]
    items: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for step in record.steps:
        if step.phase != "main" or step.status == "skipped":
            continue
        title = says.title(step.title) or step.id
        checks: list[CheckResult | None] = list(step.checks) or [None]
        for check in checks:
            node = check.node if check else step.node
            obj = (
                f"{node}（{roles_of.get(node, step.target)}）"
                if lang == "zh"
                else (f"{node} ({roles_of.get(node, step.target)})")
            )
            result: str | Said
            standard: str | Said
            if check is None:
                # The action itself failed: nothing was observed.
                normal, verdict = step.status == "passed", "normal"
                if not normal:
                    verdict = "error"
                result = says.sentence(step.error or step.reason) or "—"
                standard, name = "—", ""
            else:
                normal = check.held
                verdict = (
                    "normal" if normal else ("error" if check.verdict == "error" else "abnormal")
                )
                result = result_text(check, w, when, says)
                standard = standard_text(check, w, says)
                name = check.check
            item = {
                "n": len(items) + 1,
                "item": title,
                "check": name,
                "step": step.id,
                "object": obj,
                "address": addresses.get(node, ""),
                "result": result,
                "standard": standard,
                "normal": normal,
                "verdict": verdict,
                "verdict_label": w["i_normal"]
                if normal
                else (w["i_error"] if verdict == "error" else w["i_abnormal"]),
            }
            items.append(item)
            if not normal:
                findings.append(item | {"advice": inline(advice.get(name, advice["default"]))})
    normal_count = sum(1 for i in items if i["normal"])
    participants = doc.get("participants") or []
    inspector = ", ".join(
        f"{p['name']}"
        + (
            f"（{p['role']}）"
            if lang == "zh" and p.get("role")
            else f" ({p['role']})"
            if p.get("role")
            else ""
        )
        for p in participants
    ) or str(doc.get("operator") or "")
    configured = (site.get("inspection") or {}).get("signatures")
    signers = [text(s, lang) for s in configured] if configured else list(w["i_signers"])
    # The banner names the site details this report shows that are still as shipped.
    gaps = [g for g in doc.get("site_gap_keys", []) if g in ("organisation", "system")]
    if not configured:
        gaps.append("signatures")
    t = messages()[lang]
    separator = "、" if lang == "zh" else ", "
    banner = (
        compose(t["banner_text"], fields=separator.join(t[f"field_{g}"] for g in gaps))
        if gaps
        else None
    )
    return {
        "hospital": doc.get("organisation") or "",
        "system": doc.get("system") or "",
        "period": _period(record, zone, w),
        "time": f"{doc['actual_start']} — {doc['actual_end']}",
        "inspector": inspector,
        "rows": items,
        "findings": findings,
        "total": len(items),
        "normal": normal_count,
        "abnormal": len(items) - normal_count,
        "summary": _fill(
            w["i_summary"],
            {"total": len(items), "normal": normal_count, "abnormal": len(items) - normal_count},
        ),
        "verdict": inline(w["i_all_normal"] if not findings else w["i_some_abnormal"]),
        "banner": banner,
        "interrupted": record.status in ("interrupted", "aborted"),
        "signers": signers,
    }
