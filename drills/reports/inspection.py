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
from drills.reports.times import local_time
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
    if name in STACK_CHECKS:
        key, more = stack_values(name, observed, w, when)
        values |= more
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


# -- the whole stack: host, application, change and the newer database items --------------------

STACK_CHECKS = frozenset(
    {
        "host.cpu_load", "host.memory", "host.filesystems", "host.clock_offset",
        "host.failed_units", "host.last_reboot", "host.log_errors", "pg.log_errors",
        "app.response_time", "app.tls_certificate", "pg.xid_age", "pg.replication_slots",
        "sql.returns", "release.current",
    }
)  # fmt: skip


def _ms(seconds: Any) -> str:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return "—"
    return f"{value * 1000:+.2f} ms" if abs(value) < 1 else f"{value:+.3f} s"


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _activity(slot: dict[str, Any]) -> str:
    return "active" if slot.get("active") else "inactive"


def stack_values(
    name: str, observed: dict[str, Any], w: dict[str, Any], when: Any
) -> tuple[str, dict[str, Any]]:
    """The template key and the values beyond the observed ones for a host, application or
    change check (``results.<check>[.<case>]`` in inspection.yaml)."""
    sep = w.get("list_separator", ", ")
    key = name
    more: dict[str, Any] = {}
    if name == "host.memory":
        more = {
            "total": size(observed.get("total_bytes")),
            "available": size(observed.get("available_bytes")),
            "swap": size(observed.get("swap_total_bytes")),
        }
    elif name == "host.filesystems":
        over = [f for f in observed.get("filesystems") or [] if f.get("over")]
        more = {
            "over_text": sep.join(
                f"{f.get('mount')} {f.get('used_percent')}%"
                + (
                    f" (inode {f.get('inodes_used_percent')}%)"
                    if f.get("inodes_used_percent") is not None
                    else ""
                )
                for f in over
            )
        }
        key = "host.filesystems.over" if over or observed.get("problems") else name
        if observed.get("problems"):
            more["over_text"] = sep.join([more["over_text"], *observed["problems"]]).strip(sep)
    elif name == "host.clock_offset":
        more = {
            "skew": _ms(observed.get("skew_seconds")),
            "bound": _ms(observed.get("skew_bound_seconds")).lstrip("+"),
            "offset": _ms(observed.get("offset_seconds")),
            "sync": w.get("clock_synced" if observed.get("synchronised") else "clock_unsynced"),
        }
        key = name if observed.get("source") == "nodes" else "host.clock_offset.ntp"
    elif name == "host.failed_units":
        key = name if observed.get("systemd") else "host.failed_units.none"
        failed = observed.get("failed") or []
        more = {"units": (": " + sep.join(failed)) if failed else ""}
    elif name == "host.last_reboot":
        more = {
            "booted_at": when(str(observed.get("booted_at") or "")),
            "uptime": _seconds(observed.get("uptime_seconds")),
            "since": when(str(observed.get("since"))) if observed.get("since") else "—",
        }
        key = "host.last_reboot.rebooted" if observed.get("rebooted_since") else name
    elif name in ("host.log_errors", "pg.log_errors"):
        files = [f for f in observed.get("files") or [] if isinstance(f, dict)]
        samples = [str(x) for f in files for x in f.get("samples") or []][:2]
        more = {
            "since": when(str(observed.get("since") or "")),
            "files_text": sep.join(f"{f.get('path')}: {f.get('matches', 0)}" for f in files),
            "samples": (": " + " | ".join(samples)) if samples else "",
        }
        if observed.get("missing"):
            key = "log_errors.missing"
            more["missing"] = sep.join(str(m) for m in observed["missing"])
        else:
            key = "log_errors"
    elif name == "app.tls_certificate":
        key = name if observed.get("https") else "app.tls_certificate.none"
        more = {
            "not_after": when(str(observed.get("not_after") or "")),
            "trust": "" if observed.get("trusted", True) else w.get("tls_untrusted", ""),
        }
    elif name == "pg.xid_age":
        more = {"age": _count(observed.get("age")), "margin": _count(observed.get("margin"))}
    elif name == "pg.replication_slots":
        found = [s for s in observed.get("slots") or [] if s.get("finding")]
        key = name if observed.get("count") else "pg.replication_slots.none"
        more = {
            "retained": size(observed.get("retained_bytes")),
            "findings_text": (
                " ✘ "
                + sep.join(
                    f"{s.get('slot')} ({w.get('slot_' + _activity(s))}"
                    f", {size(s.get('retained_bytes') or 0)})"
                    for s in found
                )
            )
            if found
            else "",
        }
    elif name == "release.current":
        more = {"current": observed.get("current") or w.get("none_found", "—")}
        if observed.get("files_intact") is False:
            key = "release.current.damaged"
    return key, more


def stack_limits(name: str, limits: dict[str, Any]) -> dict[str, Any]:
    """Values of a host or application check's standard, from the thresholds it recorded."""
    if name == "host.clock_offset":
        return {"max": _seconds(limits.get("max_offset_seconds"))}
    if name == "host.last_reboot":
        return {"max": _seconds(limits.get("min_uptime_seconds"))}
    if name in ("host.log_errors", "pg.log_errors"):
        return {"patterns": " | ".join(str(p) for p in limits.get("patterns") or [])}
    if name == "pg.replication_slots":
        return {"max_retained": size(limits.get("max_retained_bytes"))}
    if name == "app.response_time":
        return {
            "max_p95_ms": f"{limits.get('max_p95_ms', '—'):g}"
            if isinstance(limits.get("max_p95_ms"), int | float)
            else "—"
        }
    if name in ("host.memory",):
        value = limits.get("max_swap_used_percent")
        return {"max_swap_used_percent": f"{value:g}" if isinstance(value, int | float) else "—"}
    if name == "host.filesystems":
        value = limits.get("max_inodes_used_percent")
        return {"max_inodes_used_percent": f"{value:g}" if isinstance(value, int | float) else "—"}
    return {}


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
    values |= stack_limits(name, limits)
    return _fill(template, values)


# The report's groups, in order, and the node roles that belong to each.
GROUPS = ("client", "app", "database", "other")
DATABASE_ROLES = frozenset({"primary", "standby", "source", "target", "database"})


def server_group(role: str) -> str:
    """Which part of the stack a node is, by its role: client (客户端), app (应用服务器),
    database (数据库服务器: primary, standby), or other."""
    if role == "client" or role.startswith("client"):
        return "client"
    if role == "app" or role.startswith("app"):
        return "app"
    if role in DATABASE_ROLES:
        return "database"
    return "other"


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
    given_roles = {
        name: str(node.get("configured_role") or "")
        for name, node in (record.environment.get("nodes") or {}).items()
        if isinstance(node, dict)
    }
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
                "group": server_group(given_roles.get(node) or step.target),
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
    # By server: clients, then application servers, then database servers (the node's role).
    items.sort(key=lambda i: GROUPS.index(i["group"]))
    groups: list[dict[str, Any]] = []
    for n, item in enumerate(items, 1):
        item["n"] = n
        if not groups or groups[-1]["key"] != item["group"]:
            groups.append({"key": item["group"], "label": w[f"group_{item['group']}"], "rows": []})
        groups[-1]["rows"].append(item)
        item["group_label"] = groups[-1]["label"]
        if not item["normal"]:
            findings.append(item | {"advice": inline(advice.get(item["check"], advice["default"]))})
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
        "groups": groups,
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
