"""Evidence freshness: is there a recent, still-valid passing drill for each playbook and place?

For each (playbook, environment) that has drill records, or that the site lists as expected
(``freshness.expected`` in site.yaml), ``drctl records status`` says:

- the last passing drill and its age in days (stale past ``freshness.max_age_days``);
- whether the playbook changed since (its SHA-256 now against the one the drill ran) — evidence
  for an old plan is not evidence for the new one;
- whether the next long public holiday (``drills.ops.holidays``) is covered: a passing drill within
  ``freshness.holiday_window_days`` before the break starts, with the current playbook. It is
  flagged once the break's verification day has come and no such drill exists.

A holiday schedule that is not published (or not installed) gives "unknown", with the reason,
never a guess.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from drills.model.errors import DrillError
from drills.model.record import Record


@dataclass
class Freshness:
    playbook: str
    environment: str
    drills: int = 0
    last_pass_id: str | None = None
    last_pass_date: str | None = None
    age_days: int | None = None
    playbook_changed: bool | None = None
    playbook_note: str = ""
    holiday: str = ""
    holiday_covered: bool | None = None
    stale: bool = False
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _local_date(iso: str, zone: ZoneInfo) -> date:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).date()


def current_playbook_sha(record: Record) -> tuple[str | None, str]:
    """The playbook's SHA-256 now, and where it was found (or why it was not)."""
    path = record.playbook.get("path")
    candidates: list[Path] = []
    if path:
        candidates.append(Path(str(path)))
    try:
        from drills.engine.loader import resolve_playbook

        candidates.append(resolve_playbook(str(record.playbook.get("name", ""))))
    except DrillError:
        pass
    for candidate in candidates:
        if candidate.is_file():
            return hashlib.sha256(candidate.read_bytes()).hexdigest(), str(candidate)
    return None, "the playbook file is not found here"


def freshness(
    records: list[Record],
    config: dict[str, Any],
    *,
    today: date | None = None,
    timezone: str = "Asia/Shanghai",
) -> list[Freshness]:
    zone = ZoneInfo(timezone)
    today = today or datetime.now(zone).date()
    max_age = int(config.get("max_age_days", 92))
    window = int(config.get("holiday_window_days", 30))
    min_days = int(config.get("holiday_min_days", 4))

    entries: dict[tuple[str, str], Freshness] = {}
    for expected in config.get("expected") or []:
        key = (str(expected["playbook"]), str(expected["environment"]))
        entries[key] = Freshness(*key)
    passes: dict[tuple[str, str], Record] = {}
    for record in records:
        if record.status == "running":
            continue
        key = (str(record.playbook.get("name", "")), str(record.environment.get("name", "")))
        entry = entries.setdefault(key, Freshness(*key))
        entry.drills += 1
        if record.status == "passed" and (
            key not in passes or record.started_at > passes[key].started_at
        ):
            passes[key] = record

    upcoming, holiday_problem = None, ""
    try:
        from drills.ops.holidays import next_long_break

        upcoming = next_long_break(today, min_days=min_days)
    except ImportError as exc:
        holiday_problem = f"unknown (holiday schedule unavailable: {exc})"
    except DrillError as exc:
        holiday_problem = f"unknown (holiday schedule unavailable: {exc})"

    for key, entry in sorted(entries.items()):
        last = passes.get(key)
        if last is None:
            entry.stale = True
            entry.reasons.append("no passing drill")
        else:
            day = _local_date(last.started_at, zone)
            entry.last_pass_id = last.id
            entry.last_pass_date = day.isoformat()
            entry.age_days = (today - day).days
            if entry.age_days > max_age:
                entry.stale = True
                entry.reasons.append(f"last pass {entry.age_days} days ago (> {max_age})")
            now_sha, where = current_playbook_sha(last)
            ran_sha = str(last.playbook.get("sha256", ""))
            if now_sha is None:
                entry.playbook_note = f"unknown ({where})"
            else:
                entry.playbook_changed = now_sha != ran_sha
                entry.playbook_note = (
                    f"changed since (sha256 {ran_sha[:12]}… → {now_sha[:12]}…)"
                    if entry.playbook_changed
                    else f"unchanged (sha256 {now_sha[:12]}…)"
                )
                if entry.playbook_changed:
                    entry.stale = True
                    entry.reasons.append("the playbook changed since the last pass")
        if holiday_problem:
            entry.holiday = holiday_problem
            continue
        if upcoming is None:
            entry.holiday = f"no break of {min_days}+ days ahead in the published schedule"
            continue
        opens = upcoming.start - timedelta(days=window)
        span = f"{upcoming.name} {upcoming.start.isoformat()}–{upcoming.end.isoformat()}"
        covered = (
            last is not None
            and entry.playbook_changed is not True
            and opens <= _local_date(last.started_at, zone) < upcoming.start
        )
        entry.holiday_covered = covered
        if covered:
            entry.holiday = f"{span}: covered by {entry.last_pass_date}"
        elif today >= upcoming.verify_on:
            entry.holiday = (
                f"{span}: NOT covered (verification was due {upcoming.verify_on.isoformat()})"
            )
            entry.stale = True
            entry.reasons.append(f"{upcoming.name} is not covered")
        else:
            entry.holiday = (
                f"{span}: due between {opens.isoformat()} and {upcoming.verify_on.isoformat()}"
            )
    return [entries[key] for key in sorted(entries)]
