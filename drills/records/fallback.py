"""Where a run's journal goes when the records directory cannot take it (full, read-only, failing).

A journal that cannot be written where it belongs must still be kept somewhere, or the run
loses its only proof while it is changing a site. The fallback has to be on *another* file
system than the records directory: a directory beside it (under ``$DRCTL_HOME``) fills with it.
So the places tried are, in order:

1. ``$DRCTL_JOURNAL_FALLBACK`` when it is set (the site names a disk it trusts), and only it;
2. ``/var/tmp/drctl-journals-UID``: ``/var/tmp`` survives a reboot (``/tmp`` is often a
   tmpfs emptied at boot) and is on the root file system on most hosts;
3. ``$TMPDIR`` (else ``/tmp``) ``/drctl-journals-UID``, the last resort.

Places on the same device as the records directory are tried after the others. Under each place
the journals of one records directory sit in a directory of their own, named by a hash of the
records directory's path (several drctl homes may share a machine), with ``ORIGIN`` saying
which records directory they belong to. Those directories are made 0700 and must be owned by us
and not be symlinks (``/var/tmp`` is world-writable).

:class:`drills.records.store.RecordStore` finds these journals (``fallback_journals``): a run
whose journal moved is listed, shown and sealed from there; sealing it copies the journal back
into the records directory first and then removes the fallback copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

FALLBACK_ENV = "DRCTL_JOURNAL_FALLBACK"
JOURNAL_SUFFIX = ".journal.jsonl"
ORIGIN = "ORIGIN"


def _key(records_dir: Path) -> str:
    try:
        where = str(records_dir.resolve())
    except OSError:  # a failing disk may not even resolve
        where = os.path.abspath(records_dir)
    return hashlib.sha256(where.encode("utf-8")).hexdigest()[:16]


def _device(path: Path) -> int | None:
    """The device of ``path``, or of its nearest existing parent."""
    for candidate in (path, *path.parents):
        try:
            return os.stat(candidate).st_dev
        except OSError:
            continue
    return None


def fallback_bases() -> list[Path]:
    """The places a journal may fall back to, before ordering by device."""
    configured = os.environ.get(FALLBACK_ENV, "").strip()
    if configured:
        return [Path(configured).expanduser()]
    uid = os.geteuid()
    tmp = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
    bases = [Path("/var/tmp") / f"drctl-journals-{uid}", tmp / f"drctl-journals-{uid}"]
    return list(dict.fromkeys(bases))


def records_dir_of(directory: Path) -> Path:
    """The records directory a journal's directory stands for: itself, or, for a fallback
    directory, the one its ORIGIN names (a run continued from its fallback journal)."""
    try:
        first = (directory / ORIGIN).read_text(encoding="utf-8").split("\n", 1)[0].strip()
    except OSError:
        return directory
    return Path(first) if first.startswith("/") else directory


def fallback_dirs(records_dir: Path) -> list[Path]:
    """Where the journals of ``records_dir`` may go, best first: other devices first."""
    records_dir = records_dir_of(records_dir)
    home = _device(records_dir)
    dirs = [base / _key(records_dir) for base in fallback_bases()]
    return sorted(dirs, key=lambda d: home is not None and _device(d) == home)


def _ours(path: Path) -> bool:
    """A directory we own, not a symlink (someone else's directory in /var/tmp is not ours)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


def prepare(directory: Path, records_dir: Path) -> Path:
    """Make ``directory`` (0700, ours) with its ORIGIN note; OSError when it cannot be used."""
    base = directory.parent
    if os.environ.get(FALLBACK_ENV, "").strip():
        base.mkdir(parents=True, exist_ok=True)
    else:
        with contextlib.suppress(FileExistsError):
            base.mkdir(mode=0o700)
        if not _ours(base):
            raise PermissionError(f"{base} is not a directory of this user's")
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    if not _ours(directory):
        raise PermissionError(f"{directory} is not a directory of this user's")
    origin = directory / ORIGIN
    if not origin.exists():
        origin.write_text(
            f"{records_dir}\n\n"  # the first line, read by records_dir_of
            f"Journals of the drctl records directory {records_dir}, kept here because they "
            "could not be written there (full, read-only or failing). `drctl records seal ID` "
            "(or `--pending`) seals them into the store once it has room, and removes them.\n",
            encoding="utf-8",
        )
    return directory


def fallback_journals(records_dir: Path) -> dict[str, Path]:
    """Run id → its journal in a fallback place, for the journals of ``records_dir``."""
    found: dict[str, Path] = {}
    for directory in reversed(fallback_dirs(records_dir)):  # the best place wins a tie
        if not _ours(directory):
            continue
        try:
            entries = list(directory.iterdir())
        except OSError:
            continue
        for path in entries:
            if path.name.endswith(JOURNAL_SUFFIX):
                found[path.name[: -len(JOURNAL_SUFFIX)]] = path
    return found


def remove(path: Path) -> None:
    """Remove a fallback journal once sealed, and its directory when nothing else is left."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    directory = path.parent
    left = [p for p in directory.iterdir() if p.name != ORIGIN]
    if not left:
        with contextlib.suppress(OSError):
            (directory / ORIGIN).unlink()
            directory.rmdir()


def fallback_journal(records_dir: Path, run_id: str) -> Path | None:
    """The fallback journal of one run, if it has one."""
    for directory in fallback_dirs(records_dir):
        path = directory / f"{run_id}{JOURNAL_SUFFIX}"
        if path.is_file() and _ours(directory):
            return path
    return None
