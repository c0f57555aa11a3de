"""What every parser shares: error codes (ORA-, RMAN-, DGM-, ...), the broker's durations,
SQL*Plus's messages, and plain values for records. Pure functions. See ``parsers``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

# -- error codes ---------------------------------------------------------------------------------

# ORA-01017, RMAN-03002, DGM-17016, TNS-12541, SP2-0640, UDE-00008, UDI-00014, ORA-39166 ...
CODE = re.compile(r"\b((?:ORA|RMAN|DGM|TNS|SP2|UDE|UDI|LRM|KUP|PLS)-\d{4,5})(?::\s*(.*))?")
# Message lines may continue on the next line (sqlplus and RMAN wrap long messages at 80).
_WRAPPED = re.compile(r"^\s{2,}\S")


@dataclass(frozen=True)
class OracleError:
    """One error code a tool printed, with its message (as printed, one line)."""

    code: str
    message: str

    @property
    def prefix(self) -> str:
        return self.code.split("-", 1)[0]

    @property
    def number(self) -> int:
        return int(self.code.split("-", 1)[1])

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


def error_codes(text: str) -> list[OracleError]:
    """Every error code in ``text``, in order, each once per line it appears on."""
    found: list[OracleError] = []
    for line in text.splitlines():
        for match in CODE.finditer(line):
            message = (match.group(2) or "").strip()
            # A second code on the same line ends the first one's message.
            nxt = CODE.search(message)
            if nxt:
                message = message[: nxt.start()].strip()
            found.append(OracleError(match.group(1), message.rstrip()))
    return found


def first_error(text: str, *prefixes: str) -> OracleError | None:
    for error in error_codes(text):
        if not prefixes or error.prefix in prefixes:
            return error
    return None


def unique_errors(errors: list[OracleError]) -> list[OracleError]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for error in errors:
        key = (error.code, error.message)
        if key not in seen:
            seen.add(key)
            kept.append(error)
    return kept


LOGIN_REFUSED = {"ORA-01017", "ORA-28000", "ORA-01045", "ORA-01031", "ORA-28001", "ORA-01005"}


def login_refused(text: str) -> OracleError | None:
    """The error of a refused login (wrong password, locked account, no privilege), if any."""
    for error in error_codes(text):
        if error.code in LOGIN_REFUSED:
            return error
    return None


# -- durations as the broker prints them ---------------------------------------------------------

_UNIT_SECONDS = {"day": 86400, "hour": 3600, "minute": 60, "second": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(day|hour|minute|second)s?\b", re.IGNORECASE)


def broker_seconds(text: str) -> float | None:
    """``"37 minutes 56 seconds (computed 0 seconds ago)"`` -> 2276.0; ``"(unknown)"`` -> None.

    Only the part before the parenthesis counts: ``(computed N seconds ago)`` says how old the
    value is, not how large."""
    value = text.split("(", 1)[0]
    parts = _PART.findall(value)
    if not parts:
        return None
    return float(sum(float(n) * _UNIT_SECONDS[unit.lower()] for n, unit in parts))


def interval_seconds(text: str) -> float | None:
    """A ``V$DATAGUARD_STATS`` interval, ``"+00 00:00:09"`` or ``"+00 00:00:00.000"``."""
    match = re.match(r"^\s*([+-])?(\d+)\s+(\d+):(\d+):(\d+(?:\.\d+)?)\s*$", text)
    if not match:
        return None
    sign, days, hours, minutes, seconds = match.groups()
    total = int(days) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return -total if sign == "-" else total


# -- SQL*Plus ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqlplusRun:
    """What ``sqlplus -S / as sysdba`` printed: errors, and the instance messages it gave."""

    errors: tuple[OracleError, ...]
    instance_shut_down: bool  # "ORACLE instance shut down."
    idle_instance: bool  # "Connected to an idle instance."
    not_available: bool  # ORA-01034: ORACLE not available
    lines: tuple[str, ...]

    @property
    def login_refused(self) -> OracleError | None:
        return next((e for e in self.errors if e.code in LOGIN_REFUSED), None)

    def as_dict(self) -> dict[str, Any]:
        return plain(self)


def parse_sqlplus(text: str) -> SqlplusRun:
    lines = tuple(line.rstrip() for line in text.splitlines() if line.strip())
    errors = tuple(unique_errors(error_codes(text)))
    return SqlplusRun(
        errors=errors,
        instance_shut_down=any(
            line.strip().lower() == "oracle instance shut down." for line in lines
        ),
        idle_instance="connected to an idle instance" in text.lower(),
        not_available=any(e.code == "ORA-01034" for e in errors),
        lines=lines,
    )


# -- plain values for records --------------------------------------------------------------------


def plain(value: Any) -> dict[str, Any]:
    """A dataclass as plain JSON-able values (nested dataclasses, tuples, dicts)."""
    data: dict[str, Any] = _values(value)
    return data


def _values(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: _values(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_values(v) for v in value]
    return value
