"""Is there room for a run's journal and record? Asked before a run begins, so that a full or
read-only records disk refuses the run up front, before any step has changed anything.

A run needs room for its journal (tens to hundreds of kilobytes), its record sealed into the
SQLite store (about as much again) and the journal kept as the record's evidence (once more),
with SQLite's own rollback journal on top. ``DRCTL_RECORDS_MIN_FREE`` says how much free space
the records directory must have (bytes, or with a unit: ``512k``, ``16M``, ``1G``; default
16M, a wide margin over what a run writes), and at least one free inode is needed. A records
directory that cannot take a file at all (read-only, or failing) is found by making and
removing a small probe file in it, since free space alone does not show that.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path

from drills.model.errors import InputError, RefusedError

MIN_FREE_ENV = "DRCTL_RECORDS_MIN_FREE"
DEFAULT_MIN_FREE = 16 * 1024 * 1024
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str, where: str = MIN_FREE_ENV) -> int:
    match = _SIZE.match(text)
    if match is None:
        raise InputError(f"{where}={text!r}: write a size as bytes or with k, M or G (e.g. 16M)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def required_free() -> int:
    """The free space a run needs in the records directory, in bytes."""
    text = os.environ.get(MIN_FREE_ENV, "").strip()
    return parse_size(text) if text else DEFAULT_MIN_FREE


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def room_problem(records_dir: Path, need: int | None = None) -> str | None:
    """Why a run could not keep its journal and record in ``records_dir``; None: it can."""
    need = required_free() if need is None else need
    try:
        records_dir.mkdir(parents=True, exist_ok=True)
        vfs = os.statvfs(records_dir)
    except OSError as exc:
        return f"the records directory {records_dir} cannot be used: {exc.strerror or exc}"
    free = vfs.f_bavail * vfs.f_frsize
    short = (
        f"the records directory {records_dir} has {_size(free)} free, and a run needs "
        f"{_size(need)} for its journal and record ({MIN_FREE_ENV}): free some space there"
    )
    # The probe first: a read-only or failing directory is named as that, not as short of
    # room; a full one is named with its figures (what is free, what a run needs).
    unusable = _probe(records_dir)
    if unusable is not None:
        code, said = unusable
        return short if code in (errno.ENOSPC, errno.EDQUOT) and free < need else said
    if free < need:
        return short
    if vfs.f_files and not vfs.f_favail:
        return (
            f"the records directory {records_dir} has no free inode left: a run could not "
            "create its journal"
        )
    return None


def _probe(records_dir: Path) -> tuple[int | None, str] | None:
    """Make, write, sync and remove a probe file: what a journal's first append does. None,
    or the error number and why the directory cannot take a journal."""
    probe = records_dir / f".drctl-room-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"drctl\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        if exc.errno == errno.EROFS:
            state = "is read-only"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            state = "is not writable by this user"
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
            state = "is full"
        else:
            state = "cannot be written"
        return exc.errno, (
            f"the records directory {records_dir} {state} ({exc.strerror or exc}): a run "
            "could not keep its journal there"
        )
    return None


def ensure_room(records_dir: Path) -> None:
    """Refuse a run (RefusedError, exit 3) whose journal and record would have nowhere to go."""
    problem = room_problem(records_dir)
    if problem is not None:
        raise RefusedError(f"{problem}; the run was refused and nothing was changed")
