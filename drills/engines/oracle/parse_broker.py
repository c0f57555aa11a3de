"""DGMGRL's output: SHOW CONFIGURATION, VALIDATE DATABASE, and the role changes (SWITCHOVER,
FAILOVER, REINSTATE). Pure functions. See ``parsers``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from drills.engines.oracle.parse_common import (
    CODE,
    OracleError,
    broker_seconds,
    error_codes,
    plain,
    unique_errors,
)

# -- DGMGRL: SHOW CONFIGURATION ------------------------------------------------------------------

Role = Literal[
    "primary", "physical_standby", "logical_standby", "snapshot_standby", "far_sync", "other"
]

_ROLES: list[tuple[str, Role]] = [
    ("primary database", "primary"),
    ("physical standby database", "physical_standby"),
    ("logical standby database", "logical_standby"),
    ("snapshot standby database", "snapshot_standby"),
    ("far sync instance", "far_sync"),
]

_MEMBER = re.compile(r"^\s*(\S+)\s+-\s+(\(\*\)\s+)?(.+?)\s*$")


def broker_role(text: str) -> Role:
    lowered = text.strip().lower()
    for phrase, role in _ROLES:
        if lowered.startswith(phrase):
            return role
    return "other"


@dataclass(frozen=True)
class Member:
    """One database of a broker configuration, as SHOW CONFIGURATION lists it."""

    name: str
    role: Role
    description: str  # as printed: "Physical standby database (disabled)"
    fast_start_target: bool = False
    disabled: bool = False
    warnings: tuple[OracleError, ...] = ()
    errors: tuple[OracleError, ...] = ()
    notes: tuple[OracleError, ...] = ()  # codes printed without Warning:/Error: (ORA-16661)

    @property
    def needs_reinstate(self) -> bool:
        return any(e.code == "ORA-16661" for e in (*self.notes, *self.warnings, *self.errors))


@dataclass(frozen=True)
class ConfigurationStatus:
    """The broker's summary of a configuration (DGMGRL ``SHOW CONFIGURATION``)."""

    name: str | None
    protection_mode: str | None
    members: tuple[Member, ...]
    fast_start_failover: str | None
    status: str | None  # SUCCESS, WARNING, ERROR, DISABLED, ... (the first word)
    status_line: str | None
    errors: tuple[OracleError, ...]  # every code in the output

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS"

    def member(self, name: str) -> Member | None:
        for member in self.members:
            if member.name.lower() == name.lower():
                return member
        return None

    def role_of(self, name: str) -> Role | None:
        member = self.member(name)
        return member.role if member else None

    @property
    def primary(self) -> str | None:
        primaries = [m.name for m in self.members if m.role == "primary"]
        return primaries[0] if len(primaries) == 1 else None

    def as_dict(self) -> dict[str, Any]:
        return plain(self)


def parse_show_configuration(text: str) -> ConfigurationStatus:
    """DGMGRL ``SHOW CONFIGURATION``: the configuration's name, protection mode, its members with
    their roles and the warnings and errors listed under each, and the overall status."""
    lines = _dgmgrl_lines(text)
    name = _after(lines, r"^\s*Configuration\s+-\s+(.+?)\s*$")
    protection = _after(lines, r"^\s*Protection Mode:\s*(.+?)\s*$")
    fsfo = _after(lines, r"^\s*Fast-Start Failover:\s*(.+?)\s*$")
    status_line: str | None = None
    for index, line in enumerate(lines):
        if re.match(r"^\s*Configuration Status:\s*$", line):
            status_line = next((x.strip() for x in lines[index + 1 :] if x.strip()), None)
            break
        inline = re.match(r"^\s*Configuration Status:\s*(\S.*)$", line)
        if inline:
            status_line = inline.group(1).strip()
            break
    status = None
    if status_line:
        word = status_line.split()[0]
        status = word if word.isupper() and word.isalpha() else None
    members = _members(lines)
    return ConfigurationStatus(
        name=name,
        protection_mode=protection,
        members=tuple(members),
        fast_start_failover=fsfo,
        status=status,
        status_line=status_line,
        errors=tuple(unique_errors(error_codes(text))),
    )


def _dgmgrl_lines(text: str) -> list[str]:
    """Output lines with the tool's prompts (``DGMGRL> ...``) taken out."""
    return [line for line in text.splitlines() if not line.lstrip().startswith("DGMGRL>")]


def _after(lines: list[str], pattern: str) -> str | None:
    regex = re.compile(pattern)
    for line in lines:
        match = regex.match(line)
        if match:
            return match.group(1)
    return None


def _members(lines: list[str]) -> list[Member]:
    start = None
    for index, line in enumerate(lines):
        if re.match(r"^\s*(Members|Databases):\s*$", line):
            start = index + 1
            break
    if start is None:
        return []
    members: list[dict[str, Any]] = []
    for line in lines[start:]:
        stripped = line.strip()
        if re.match(r"^(Fast-Start Failover|Configuration Status|Properties)\b", stripped):
            break
        if re.match(r"^(Data Guard for PDB)\b", stripped):
            break
        if not stripped:
            continue
        match = _MEMBER.match(line)
        if match and not CODE.match(stripped) and broker_role(match.group(3)) != "other":
            description = match.group(3)
            members.append(
                {
                    "name": match.group(1),
                    "role": broker_role(description),
                    "description": description,
                    "fast_start_target": bool(match.group(2)),
                    "disabled": "(disabled)" in description.lower(),
                    "warnings": [],
                    "errors": [],
                    "notes": [],
                }
            )
            continue
        if not members:
            continue
        kind = "notes"
        if stripped.startswith("Warning:"):
            kind = "warnings"
        elif stripped.startswith("Error:"):
            kind = "errors"
        members[-1][kind].extend(error_codes(stripped))
    return [
        Member(
            name=m["name"],
            role=m["role"],
            description=m["description"],
            fast_start_target=m["fast_start_target"],
            disabled=m["disabled"],
            warnings=tuple(m["warnings"]),
            errors=tuple(m["errors"]),
            notes=tuple(m["notes"]),
        )
        for m in members
    ]


# -- DGMGRL: VALIDATE DATABASE -------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """The broker's checks before a role change (DGMGRL ``VALIDATE DATABASE [VERBOSE] x``)."""

    database_role: str | None  # "Physical standby database", "Primary database"
    primary: str | None
    ready_for_switchover: bool | None
    switchover_line: str | None
    ready_for_failover: bool | None
    failover_line: str | None  # "Yes (Primary Running)", "Yes (Primary Not Running)", "No"
    apply_state: str | None
    apply_lag_seconds: float | None
    apply_lag: str | None  # as printed
    transport_lag_seconds: float | None
    transport_lag: str | None
    gap_status: str | None
    flashback: dict[str, str]  # database -> On/Off/Unknown
    warnings: tuple[str, ...]  # the "Warning: ..." lines, as printed
    errors: tuple[OracleError, ...]

    @property
    def primary_running(self) -> bool | None:
        if self.failover_line is None:
            return None
        lowered = self.failover_line.lower()
        if "not running" in lowered:
            return False
        if "running" in lowered:
            return True
        return None

    def as_dict(self) -> dict[str, Any]:
        data = plain(self)
        data["primary_running"] = self.primary_running
        return data


def _yes_no(value: str | None) -> bool | None:
    if value is None:
        return None
    word = value.strip().split()[0].lower() if value.strip() else ""
    return True if word == "yes" else False if word == "no" else None


def parse_validate_database(text: str) -> Validation:
    """DGMGRL ``VALIDATE DATABASE [VERBOSE] x``: whether the database is ready for switchover and
    for failover (and whether the primary was running), apply and transport lag, gap status,
    flashback per database, and the warnings and errors the broker printed."""
    lines = _dgmgrl_lines(text)
    switchover = _after(lines, r"^\s*Ready for Switchover:\s*(.+?)\s*$")
    failover = _after(lines, r"^\s*Ready for Failover:\s*(.+?)\s*$")
    apply_lag = _after(lines, r"^\s*Apply Lag:\s*(.+?)\s*$")
    transport_lag = _after(lines, r"^\s*Transport Lag:\s*(.+?)\s*$")
    warnings = tuple(
        line.strip().removeprefix("Warning:").strip()
        for line in lines
        if line.strip().startswith("Warning:")
    )
    return Validation(
        database_role=_after(lines, r"^\s*Database Role:\s*(.+?)\s*$"),
        primary=_after(lines, r"^\s*Primary Database:\s*(.+?)\s*$"),
        ready_for_switchover=_yes_no(switchover),
        switchover_line=switchover,
        ready_for_failover=_yes_no(failover),
        failover_line=failover,
        apply_state=_after(lines, r"^\s*Apply State:\s*(.+?)\s*$"),
        apply_lag_seconds=broker_seconds(apply_lag) if apply_lag else None,
        apply_lag=apply_lag,
        transport_lag_seconds=broker_seconds(transport_lag) if transport_lag else None,
        transport_lag=transport_lag,
        gap_status=_after(lines, r"^\s*Gap Status:\s*(.+?)\s*$"),
        flashback=_flashback(lines),
        warnings=warnings,
        errors=tuple(unique_errors(error_codes(text))),
    )


def _flashback(lines: list[str]) -> dict[str, str]:
    """The block under ``Flashback Database Status:``: ``name:  On`` lines (19c) or a table
    ``Database  Status  Retention Target`` (23ai and later)."""
    found: dict[str, str] = {}
    inside = False
    for line in lines:
        if re.match(r"^\s*Flashback Database Status:\s*$", line):
            inside = True
            continue
        if not inside:
            continue
        stripped = line.strip()
        if not stripped:
            if found:
                break
            continue
        if re.match(r"^Database\s+Status\b", stripped):
            continue
        colon = re.match(r"^(\S+)\s*:\s*(\S+)", stripped)
        table = re.match(r"^(\S+)\s+(On|Off|Unknown)\b", stripped, re.IGNORECASE)
        if colon:
            found[colon.group(1)] = colon.group(2)
        elif table:
            found[table.group(1)] = table.group(2)
        else:
            break
    return found


# -- DGMGRL: SWITCHOVER, FAILOVER, REINSTATE -----------------------------------------------------

Operation = Literal["switchover", "failover", "reinstate"]


@dataclass(frozen=True)
class RoleChange:
    """What DGMGRL said about ``SWITCHOVER TO``, ``FAILOVER TO`` or ``REINSTATE DATABASE``."""

    operation: Operation
    succeeded: bool
    new_primary: str | None  # switchover and failover
    database: str | None  # reinstate: the database reinstated
    still_primary: str | None  # a failed switchover: "primary database is still x"
    final_line: str | None
    errors: tuple[OracleError, ...]

    def as_dict(self) -> dict[str, Any]:
        return plain(self)


def parse_role_change(text: str, operation: Operation) -> RoleChange:
    """The outcome of a broker role change, from its closing line:

    - ``Switchover succeeded, new primary is "x"`` / ``Unable to switchover, primary database is
      still "x"``;
    - ``Failover succeeded, new primary is "x"`` / ``Failed.``;
    - ``Reinstatement of database "x" succeeded`` / ``... failed``.

    A run that printed neither has not succeeded (a lost connection, a refused login)."""
    lines = _dgmgrl_lines(text)
    name = r'"?([^"\s.]+)"?\.?'
    succeeded, new_primary, database, still, final = False, None, None, None, None
    for line in lines:
        stripped = line.strip()
        if operation in ("switchover", "failover"):
            ok = re.match(rf"^{operation.capitalize()} succeeded, new primary is {name}", stripped)
            if ok:
                succeeded, new_primary, final = True, ok.group(1), stripped
            still_match = re.match(
                rf"^Unable to {operation}, primary database is still {name}", stripped
            )
            if still_match:
                succeeded, still, final = False, still_match.group(1), stripped
        else:
            done = re.match(rf"^Reinstatement of database {name}\s+(succeeded|failed)", stripped)
            if done:
                database, final = done.group(1), stripped
                succeeded = done.group(2) == "succeeded"
        if stripped == "Failed." and final is None:
            final = stripped
    errors = tuple(unique_errors(error_codes(text)))
    return RoleChange(operation, succeeded, new_primary, database, still, final, errors)
