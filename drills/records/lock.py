"""One drill at a time per environment, with a lock that outlives a crashed run.

The lock file holds the owner (run id, pid, host, time) and is ``flock``-ed while the run lives.
When a run ends, it empties the file. A file that is not locked by anyone but still names an
owner was left by a run that died: the environment may be half-way through a change, so drctl
refuses to start another drill there until a person has looked and said so (``drctl unlock``).
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

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {self.since})"


def _read_holder(handle: IO[str]) -> Holder | None:
    handle.seek(0)
    text = handle.read().strip()
    if not text:
        return None
    try:
        data: dict[str, Any] = json.loads(text)
        return Holder(str(data["run_id"]), int(data["pid"]), str(data["host"]), str(data["since"]))
    except (ValueError, KeyError, TypeError):
        return Holder("unknown", 0, "unknown", "unknown")


class EnvironmentLock:
    def __init__(self, locks_dir: Path, environment: str) -> None:
        self.path = locks_dir / f"{environment}.lock"
        self.environment = environment
        self._handle: IO[str] | None = None

    def acquire(self, run_id: str, now_epoch: float) -> None:
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            who = holder.describe() if holder else "another run"
            raise RefusedError(
                f"environment {self.environment!r} is in use by {who}; one drill at a time"
            ) from None
        stale = _read_holder(handle)
        if stale is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
            raise RefusedError(
                f"environment {self.environment!r} was left by {stale.describe()}, which stopped "
                f"without finishing (its record says interrupted). Check the environment's state, "
                f"then run `drctl unlock {self.environment}`"
            )
        handle.seek(0)
        handle.truncate()
        owner = {
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": utc_iso(now_epoch),
        }
        handle.write(json.dumps(owner))
        handle.flush()
        os.fsync(handle.fileno())
        self._handle = handle

    def release(self) -> None:
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.flush()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


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
