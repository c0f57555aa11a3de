"""Data Pump's logs (expdp, impdp): the job's outcome, rows per table, dump files, errors.
Pure functions. See ``parsers``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from drills.engines.oracle.parse_common import (
    OracleError,
    error_codes,
    plain,
    unique_errors,
)

# -- Data Pump: expdp / impdp logs ---------------------------------------------------------------


@dataclass(frozen=True)
class TableRows:
    """``. . exported "HIS"."PATIENT"  12.5 KB  100 rows`` (or imported)."""

    direction: Literal["exported", "imported"]
    schema: str
    table: str
    partition: str | None
    size: str  # as printed: "12.5 KB"
    size_bytes: int | None
    rows: int


@dataclass(frozen=True)
class DataPumpLog:
    """A Data Pump job's log (what expdp/impdp print, and write to their LOGFILE)."""

    job_owner: str | None
    job_name: str | None
    outcome: Literal["succeeded", "completed_with_errors", "stopped", "unknown"]
    error_count: int  # as the closing line says ("completed with N error(s)"); 0 on success
    closing_line: str | None
    tables: tuple[TableRows, ...]
    dump_files: tuple[str, ...]
    errors: tuple[OracleError, ...]

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"

    def rows_of(self, schema: str, table: str) -> int | None:
        total = None
        for t in self.tables:
            if t.schema.upper() == schema.upper() and t.table.upper() == table.upper():
                total = (total or 0) + t.rows
        return total

    def as_dict(self) -> dict[str, Any]:
        data = plain(self)
        data["succeeded"] = self.succeeded
        return data


# Data Pump may prefix each line with a timestamp (LOGTIME=ALL): "02-JUL-25 13:43:11.295: ".
_LOGTIME = re.compile(r"^\d{2}-[A-Z]{3}-\d{2}\s+\d{2}:\d{2}:\d{2}(?:\.\d+)?:\s?")
_ROWS = re.compile(
    r"^\.\s+\.\s+(exported|imported)\s+\"([^\"]+)\"\.\"([^\"]+)\"(?::\"([^\"]+)\")?"
    r"\s+([\d.]+\s*[KMGT]?B)\s+(\d+)\s+rows"
)
_JOB_END = re.compile(
    r"^Job \"([^\"]+)\"\.\"([^\"]+)\"\s+(successfully completed|completed with (\d+) error\(s\)|"
    r"stopped due to fatal error|stopped)"
)
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _size_bytes(size: str) -> int | None:
    match = re.match(r"^([\d.]+)\s*([KMGT]?B)$", size.strip())
    if not match:
        return None
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_datapump_log(text: str) -> DataPumpLog:
    """The rows moved per table, the dump files written, the errors, and how the job ended:
    ``Job "SYSTEM"."SYS_EXPORT_SCHEMA_01" successfully completed at ...``, ``... completed with
    N error(s) at ...``, or ``... stopped due to fatal error at ...``."""
    tables: list[TableRows] = []
    dumps: list[str] = []
    owner = job = closing = None
    outcome: Literal["succeeded", "completed_with_errors", "stopped", "unknown"] = "unknown"
    count = 0
    in_dumps = False
    for raw in text.splitlines():
        line = _LOGTIME.sub("", raw.strip())
        rows = _ROWS.match(line)
        if rows:
            d, schema, table, part, size, n = rows.groups()
            direction: Literal["exported", "imported"] = (
                "exported" if d == "exported" else "imported"
            )
            tables.append(
                TableRows(direction, schema, table, part, size, _size_bytes(size), int(n))
            )
            continue
        if re.match(r"^Dump file set for .+ is:$", line):
            in_dumps = True
            continue
        if in_dumps:
            if line and not line.startswith("Job ") and not line.startswith("*"):
                dumps.append(line)
                continue
            in_dumps = False
        end = _JOB_END.match(line)
        if end:
            owner, job, closing = end.group(1), end.group(2), line
            if end.group(3) == "successfully completed":
                outcome, count = "succeeded", 0
            elif end.group(4) is not None:
                outcome, count = "completed_with_errors", int(end.group(4))
            else:
                outcome = "stopped"
        elif owner is None:
            started = re.match(r"^(?:Starting|Master table) \"([^\"]+)\"\.\"([^\"]+)\"", line)
            if started:
                owner, job = started.group(1), started.group(2)
    return DataPumpLog(
        job_owner=owner,
        job_name=job,
        outcome=outcome,
        error_count=count,
        closing_line=closing,
        tables=tuple(tables),
        dump_files=tuple(dumps),
        errors=tuple(unique_errors(error_codes(text))),
    )
