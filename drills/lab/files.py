"""The labs' files: atomic writes, files owned by the user that runs PostgreSQL, removal, log
tails, and describing an error (a failed command, an OSError's file) for a LabError message.

Used by both labs (:mod:`drills.lab.onehost`, :mod:`drills.lab.twosite`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

from drills.model.errors import CommandFailed, DrillError, LabError

LOG_TAIL_LINES = 15


# ---------------------------------------------------------------------- errors


@contextlib.contextmanager
def lab_errors(action: str) -> Iterator[None]:
    """Turn what escaped the detailed handling (an OSError, an executor error) into LabError."""
    try:
        yield
    except LabError:
        raise
    except (DrillError, OSError) as exc:
        raise LabError(f"{action}: {describe_error(exc)}") from exc


def describe_error(exc: BaseException) -> str:
    """A short account of an error: a failed command's last lines, an OSError's file."""
    if isinstance(exc, CommandFailed):
        output = "\n".join(exc.output.strip().splitlines()[-5:])
        return f"command exited {exc.returncode}" + (f": {output}" if output else "")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if isinstance(exc, DrillError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------- files


def owner_ids(user: str | None) -> tuple[int, int] | None:
    """``user``'s uid and gid; None for no user (the files stay drctl's)."""
    if user is None:
        return None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def make_dir(path: Path, user: str | None) -> None:
    path.mkdir(mode=0o700, exist_ok=True)  # an empty leftover is fine
    owner = owner_ids(user)
    if owner:
        os.chown(path, *owner)
    path.chmod(0o700)


def make_log(path: Path, user: str | None) -> None:
    path.touch()
    owner = owner_ids(user)
    if owner:
        os.chown(path, *owner)
    path.chmod(0o640)


def write_owned(path: Path, text: str, user: str | None) -> None:
    path.write_text(text)
    owner = owner_ids(user)
    if owner:
        os.chown(path, *owner)
    path.chmod(0o600)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def make_readable(root: Path) -> None:
    """Let every user read (and traverse, and run what is executable) a copied tree."""
    for dirpath, dirnames, filenames in os.walk(root):
        Path(dirpath).chmod(0o755)
        for name in filenames + dirnames:
            path = Path(dirpath) / name
            if path.is_symlink() or path.is_dir():
                continue
            mode = path.stat().st_mode & 0o777
            path.chmod(mode | 0o444 | (0o111 if mode & 0o111 else 0))


def remove_path(path: Path, what: str) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise LabError(f"cannot remove the {what} {path}: {describe_error(exc)}") from exc


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
