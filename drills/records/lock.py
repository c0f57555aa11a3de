"""One drill at a time per environment, with a lock that outlives a crashed run.

The lock file holds the owner (run id, pid, host, time) and is ``flock``-ed while the run lives.
When a run ends, it empties the file. A file that is not locked by anyone but still names an
owner was left by a run that died, or that was interrupted (which keeps its owner in the file on
purpose, with a note saying how and where it stopped): the environment may be half-way through a
change, so drctl refuses to start another drill there until the run is resumed or aborted
(``drctl resume RUN``, ``drctl abort RUN``, which take the kept lock over for that run only) or
a person has looked and said so (``drctl unlock``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from drills.model.clock import utc_iso
from drills.model.errors import RefusedError


@dataclass(frozen=True)
class Holder:
    run_id: str
    pid: int
    host: str
    since: str
    note: str = ""  # how a run that kept the lock stopped (interrupted by ..., in step ...)

    def describe(self) -> str:
        note = f"; {self.note}" if self.note else ""
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {self.since}{note})"


def _read_holder(handle: IO[str]) -> Holder | None:
    handle.seek(0)
    text = handle.read().strip()
    if not text:
        return None
    try:
        data: dict[str, Any] = json.loads(text)
        return Holder(
            str(data["run_id"]),
            int(data["pid"]),
            str(data["host"]),
            str(data["since"]),
            str(data.get("note") or ""),
        )
    except (ValueError, KeyError, TypeError):
        return Holder("unknown", 0, "unknown", "unknown")


def in_use(environment: str, holder: Holder | None) -> str:
    """The refusal when a live run holds the environment."""
    who = holder.describe() if holder else "another run"
    return f"environment {environment!r} is in use by {who}; one drill at a time"


def left_by(environment: str, holder: Holder) -> str:
    """The refusal when a run that stopped without finishing still names itself in the lock."""
    return (
        f"environment {environment!r} was left by {holder.describe()}, which stopped without "
        f"finishing (its record says interrupted). Continue it with `drctl resume "
        f"{holder.run_id}`, undo it with `drctl abort {holder.run_id}`, or check the "
        f"environment's state by hand, then run `drctl unlock {environment}`"
    )


class EnvironmentLock:
    def __init__(self, locks_dir: Path, environment: str) -> None:
        self.path = locks_dir / f"{environment}.lock"
        self.environment = environment
        self._handle: IO[str] | None = None
        self._owner: dict[str, Any] = {}
        self._kept_text = ""  # the file as an interrupted run kept it (take_over)

    def _hold(self) -> IO[str]:
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            raise RefusedError(in_use(self.environment, holder)) from None
        return handle

    def _write_owner(self, handle: IO[str], owner: dict[str, Any]) -> None:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(owner))
        handle.flush()
        os.fsync(handle.fileno())
        self._owner = owner

    def acquire(self, run_id: str, now_epoch: float) -> None:
        handle = self._hold()
        stale = _read_holder(handle)
        if stale is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
            raise RefusedError(left_by(self.environment, stale))
        owner = {
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": utc_iso(now_epoch),
        }
        self._write_owner(handle, owner)
        self._handle = handle

    def take_over(self, run_id: str, now_epoch: float) -> Holder:
        """Hold again the lock that run ``run_id`` kept when it was interrupted (``drctl
        resume``/``abort``); refuses a lock held by a live run, kept by another run, or
        released meanwhile (``drctl unlock``). Returns the holder as it was kept."""
        handle = self._hold()
        kept = _read_holder(handle)
        if kept is None or kept.run_id != run_id:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
            raise RefusedError(
                left_by(self.environment, kept)
                if kept is not None
                else f"environment {self.environment!r} is not locked by run {run_id} any more "
                "(`drctl unlock` released it): someone took the environment back by hand"
            )
        handle.seek(0)
        self._kept_text = handle.read()
        owner = {
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": utc_iso(now_epoch),
            "taken_over_from": {"pid": kept.pid, "host": kept.host, "since": kept.since},
        }
        self._write_owner(handle, owner)
        self._handle = handle
        return kept

    def give_back(self) -> None:
        """Undo ``take_over``: the lock file as the interrupted run kept it, not held (a resume
        or abort that refused changes nothing)."""
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(self._kept_text)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def keep(self, note: str = "") -> None:
        """Stop holding the lock but leave the owner in the file, with ``note`` (an interrupted
        run: no other drill starts there until it is resumed, aborted or unlocked)."""
        if self._handle is None:
            return
        if note:
            self._write_owner(self._handle, {**self._owner, "note": note})
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def release(self) -> None:
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.flush()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


def refusal(locks_dir: Path, environment: str) -> str | None:
    """Why a new run may not take the environment now, or None; read only (a shared flock is
    tried, nothing is written), so that it can be asked before anything starts."""
    path = locks_dir / f"{environment}.lock"
    try:
        handle = path.open(encoding="utf-8")
    except OSError:
        return None
    with handle:
        holder = _read_holder(handle)
        if holder is None:
            return None
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return in_use(environment, holder)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return left_by(environment, holder)


def holder_if_alive(locks_dir: Path, environment: str) -> Holder | None:
    """The holder of an environment's lock if its run is alive (holds the flock)."""
    path = locks_dir / f"{environment}.lock"
    if not path.exists():
        return None
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def force_unlock(locks_dir: Path, environment: str) -> Holder | None:
    """Clear a lock left by a dead run; refuses while a live run holds it."""
    path = locks_dir / f"{environment}.lock"
    if not path.exists():
        return None
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            who = holder.describe() if holder else "a live run"
            raise RefusedError(f"environment {environment!r} is in use by {who}") from None
        stale = _read_holder(handle)
        handle.seek(0)
        handle.truncate()
        fcntl.flock(handle, fcntl.LOCK_UN)
    return stale


def lock_holders(locks_dir: Path) -> list[tuple[str, Holder, bool]]:
    """Every environment whose lock names a run: (environment, holder, alive). A lock that
    names a run but is not held was left by a run that died (``drctl unlock ENV``)."""
    found = []
    for path in sorted(locks_dir.glob("*.lock")):
        environment = path.name.removesuffix(".lock")
        with path.open("a+", encoding="utf-8") as handle:
            holder = _read_holder(handle)
        if holder is not None:
            alive = holder_if_alive(locks_dir, environment) is not None
            found.append((environment, holder, alive))
    return found
