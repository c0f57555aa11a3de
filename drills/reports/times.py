"""Times as a report shows them: a record's UTC instants in the site's time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def _moment(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def local_time(value: str | None, zone: ZoneInfo) -> str:
    if not value:
        return "—"
    moment = _moment(value)
    if moment is None:
        return value
    local = moment.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def utc_offset(zone: ZoneInfo, at: str | None = None) -> str:
    """``UTC+08:00``: the zone's offset at ``at`` (the record's start), so the report does not
    depend on when it is rendered."""
    moment = (_moment(at) if at else None) or datetime(2000, 1, 1, tzinfo=UTC)
    offset = moment.astimezone(zone).strftime("%z")
    return f"UTC{offset[:3]}:{offset[3:]}"
