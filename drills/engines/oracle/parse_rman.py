"""RMAN's output: the validation tables (datafiles, archived logs), error stacks, the finished
commands and pieces read, RESTORE ... PREVIEW SUMMARY. Pure functions. See ``parsers``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from drills.engines.oracle.parse_common import (
    OracleError,
    error_codes,
    plain,
    unique_errors,
)

# -- RMAN: BACKUP VALIDATE / VALIDATE ------------------------------------------------------------


@dataclass(frozen=True)
class DatafileCheck:
    """One row of RMAN's ``List of Datafiles`` after a validation."""

    file: int
    status: str  # OK, FAILED
    marked_corrupt: int
    empty_blocks: int
    blocks_examined: int
    high_scn: int
    name: str | None
    blocks_failing: dict[str, int] = field(default_factory=dict)  # Data, Index, Other

    @property
    def failing(self) -> int:
        return sum(self.blocks_failing.values())

    @property
    def corrupt(self) -> bool:
        return self.status != "OK" or self.marked_corrupt > 0 or self.failing > 0


@dataclass(frozen=True)
class ArchivedLogCheck:
    """One row of RMAN's ``List of Archived Logs`` after a validation."""

    thread: int
    sequence: int
    status: str
    blocks_failing: int
    blocks_examined: int
    name: str

    @property
    def corrupt(self) -> bool:
        return self.status != "OK" or self.blocks_failing > 0


@dataclass(frozen=True)
class BlockCheck:
    """RMAN ``BACKUP VALIDATE [CHECK LOGICAL] DATABASE [ARCHIVELOG ALL]`` (or ``VALIDATE``)."""

    datafiles: tuple[DatafileCheck, ...]
    archived_logs: tuple[ArchivedLogCheck, ...]
    trace_files: tuple[str, ...]  # "See trace file ... for details"
    errors: tuple[OracleError, ...]
    finished: bool  # "Finished validate at" / "Finished backup at"

    @property
    def corrupt_datafiles(self) -> tuple[DatafileCheck, ...]:
        return tuple(d for d in self.datafiles if d.corrupt)

    @property
    def corrupt_logs(self) -> tuple[ArchivedLogCheck, ...]:
        return tuple(a for a in self.archived_logs if a.corrupt)

    @property
    def clean(self) -> bool:
        return (
            self.finished
            and bool(self.datafiles)
            and not self.corrupt_datafiles
            and not self.corrupt_logs
            and not rman_failed(self.errors)
        )

    def findings(self) -> list[str]:
        """One sentence per corrupt file: which file, and how many blocks."""
        found = []
        for d in self.corrupt_datafiles:
            failing = ", ".join(f"{k} {v}" for k, v in d.blocks_failing.items() if v)
            found.append(
                f"datafile {d.file} ({d.name or '?'}): status {d.status}, "
                f"{d.marked_corrupt} block(s) marked corrupt"
                + (f", blocks failing: {failing}" if failing else "")
            )
        for a in self.corrupt_logs:
            found.append(
                f"archived log thread {a.thread} sequence {a.sequence} ({a.name}): status "
                f"{a.status}, {a.blocks_failing} block(s) failing"
            )
        return found

    def as_dict(self) -> dict[str, Any]:
        data = plain(self)
        data["clean"] = self.clean
        data["corrupt"] = self.findings()
        return data


_DATAFILE_ROW = re.compile(r"^\s*(\d+)\s+([A-Z]+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*(?:\S.*)?$")
_BLOCK_ROW = re.compile(r"^\s*(Data|Index|Other)\s+(\d+)\s+(\d+)\s*(?:\S.*)?$")
_LOG_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+([A-Z]+)\s+(\d+)\s+(\d+)\s+(\S.*?)\s*$")


def parse_backup_validate(text: str) -> BlockCheck:
    """RMAN's validation tables: each datafile's status, blocks marked corrupt and blocks failing
    per type (``List of Datafiles``), each archived log's status (``List of Archived Logs``)."""
    datafiles: list[dict[str, Any]] = []
    logs: list[ArchivedLogCheck] = []
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if re.match(r"^File\s+Status\s+Marked Corrupt\s+Empty Blocks", stripped):
            section = "datafile"
            continue
        if re.match(r"^Thrd\s+Seq\s+Status\s+Blocks Failing", stripped):
            section = "log"
            continue
        if re.match(r"^(List of|File Type|Finished|Starting|channel|input)\b", stripped):
            section = None if not stripped.startswith("List of Datafiles") else section
        if section == "datafile":
            row = _DATAFILE_ROW.match(line)
            if row and not stripped.startswith("-"):
                datafiles.append(
                    {
                        "file": int(row.group(1)),
                        "status": row.group(2),
                        "marked_corrupt": int(row.group(3)),
                        "empty_blocks": int(row.group(4)),
                        "blocks_examined": int(row.group(5)),
                        "high_scn": int(row.group(6)),
                        "name": None,
                        "blocks_failing": {},
                    }
                )
                continue
            name = re.match(r"^(?:File Name|ファイル名):\s*(\S.*?)\s*$", stripped)
            if name and datafiles:
                datafiles[-1]["name"] = name.group(1)
                continue
            block = _BLOCK_ROW.match(line)
            if block and datafiles:
                datafiles[-1]["blocks_failing"][block.group(1)] = int(block.group(2))
        elif section == "log":
            log = _LOG_ROW.match(line)
            if log and not stripped.startswith("-"):
                logs.append(
                    ArchivedLogCheck(
                        int(log.group(1)),
                        int(log.group(2)),
                        log.group(3),
                        int(log.group(4)),
                        int(log.group(5)),
                        log.group(6),
                    )
                )
    traces = tuple(re.findall(r"See trace file (\S+) for details", text))
    finished = bool(re.search(r"^\s*Finished (validate|backup) at", text, re.MULTILINE))
    return BlockCheck(
        datafiles=tuple(DatafileCheck(**d) for d in datafiles),
        archived_logs=tuple(logs),
        trace_files=traces,
        errors=tuple(unique_errors(error_codes(text))),
        finished=finished,
    )


# -- RMAN: errors, RESTORE ... VALIDATE / PREVIEW, RECOVER ---------------------------------------


def rman_failed(errors: tuple[OracleError, ...] | list[OracleError]) -> bool:
    """RMAN reports a failed command with an RMAN-00571/RMAN-00569 stack (``ERROR MESSAGE STACK
    FOLLOWS``); any RMAN-03002/03009 ("failure of ... command") or RMAN-06xxx counts too."""
    codes = {e.code for e in errors}
    return bool(
        codes & {"RMAN-00569", "RMAN-00571", "RMAN-03002", "RMAN-03009"}
        or any(c.startswith("RMAN-06") for c in codes)
    )


@dataclass(frozen=True)
class RmanRun:
    """Any RMAN command's outcome: its error stack (codes in order), and what finished."""

    errors: tuple[OracleError, ...]
    finished: tuple[str, ...]  # "restore", "recover", "validate", "backup"
    pieces: tuple[str, ...]  # backup pieces read ("piece handle=...")
    elapsed: tuple[str, ...]  # "validation complete, elapsed time: 00:00:15" values

    @property
    def failed(self) -> bool:
        return rman_failed(self.errors)

    @property
    def stack(self) -> tuple[OracleError, ...]:
        """The errors below RMAN-00571/00569 (the stack RMAN prints for a failed command)."""
        return tuple(e for e in self.errors if e.code not in ("RMAN-00571", "RMAN-00569"))

    def as_dict(self) -> dict[str, Any]:
        data = plain(self)
        data["failed"] = self.failed
        return data


def parse_rman(text: str) -> RmanRun:
    """An RMAN session's output: its error codes, the commands it finished (``Finished restore
    at ...``), the backup pieces it read and the elapsed times it printed."""
    finished = tuple(
        dict.fromkeys(m.lower() for m in re.findall(r"^\s*Finished (\w+) at", text, re.M))
    )
    pieces = tuple(dict.fromkeys(re.findall(r"piece handle=(\S+)", text)))
    elapsed = tuple(re.findall(r"elapsed time:\s*(\d+:\d{2}:\d{2})", text))
    return RmanRun(tuple(unique_errors(error_codes(text))), finished, pieces, elapsed)


@dataclass(frozen=True)
class BackupSetSummary:
    """One row of RMAN's ``List of Backups`` summary (``LIST BACKUP SUMMARY``, ``PREVIEW
    SUMMARY``): key, type (B backup set, P proxy), level (F full, A archived log, 0, 1),
    status, device, completion time, tag."""

    key: int
    type: str
    level: str
    status: str
    device: str
    completed: str
    pieces: int
    copies: int
    compressed: str
    tag: str


@dataclass(frozen=True)
class RestorePreview:
    """RMAN ``RESTORE DATABASE PREVIEW [SUMMARY]``: the backups a restore would read, and the SCNs
    recovery must start at and go beyond."""

    backups: tuple[BackupSetSummary, ...]
    media_recovery_start_scn: int | None
    recovery_beyond_scn: int | None  # "Recovery must be done beyond SCN n to clear fuzziness"
    errors: tuple[OracleError, ...]

    def as_dict(self) -> dict[str, Any]:
        return plain(self)


_SUMMARY_ROW = re.compile(
    r"^\s*(\d+)\s+([BP])\s+(\S+)\s+([AXUE])\s+(\S+)\s+(.+?)\s+(\d+)\s+(\d+)\s+(YES|NO)\s+(\S+)\s*$"
)


def parse_restore_preview(text: str) -> RestorePreview:
    backups = []
    for line in text.splitlines():
        row = _SUMMARY_ROW.match(line)
        if row:
            g = row.groups()
            backups.append(
                BackupSetSummary(
                    int(g[0]), g[1], g[2], g[3], g[4], g[5], int(g[6]), int(g[7]), g[8], g[9]
                )
            )
    start = re.search(r"Media recovery start SCN is (\d+)", text)
    beyond = re.search(r"Recovery must be done beyond SCN (\d+)", text)
    return RestorePreview(
        tuple(backups),
        int(start.group(1)) if start else None,
        int(beyond.group(1)) if beyond else None,
        tuple(unique_errors(error_codes(text))),
    )
