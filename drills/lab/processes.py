"""The local lab's server processes: pids, liveness, and waiting for a stopped server's
processes to be gone (read from ``/proc`` and a data directory's ``postmaster.pid``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from drills.model.errors import LabError

PROCESS_EXIT_TIMEOUT = 15.0  # seconds for a stopped server's processes to be gone


def process_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rpartition(")")[2].split()[:1]
    return state not in (["Z"], ["X"])


def terminate(pid: int, gone: Callable[[], bool], grace: float = 5.0) -> None:
    """Stop a lab process by its pid: SIGTERM, up to ``grace`` seconds for ``gone()`` to hold,
    then SIGKILL; reaped when it is our own child, so no zombie is left. A pid already gone is
    no error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not gone():
            reap(pid)
            time.sleep(0.02)
        if not gone():
            os.kill(pid, signal.SIGKILL)
    reap(pid)


def reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (the tests run `up` here)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def read_pid(data_dir: Path) -> int | None:
    """The pid in ``data_dir``'s postmaster.pid, if it names one (alive or not)."""
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, ValueError, IndexError):
        return None


def running_pid(data_dir: Path) -> int | None:
    """The pid of the postmaster running in ``data_dir``, if one does."""
    pid = read_pid(data_dir)
    if pid is None or not process_alive(pid):
        return None
    cwd = _cwd(pid)
    if cwd is not None and cwd != str(data_dir.resolve()):
        return None  # a stale postmaster.pid whose pid now belongs to another process
    return pid


def processes_in(data_dir: Path) -> list[int]:
    """Live processes whose working directory is ``data_dir``: a postmaster and its children."""
    target = str(data_dir.resolve())
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit() and _cwd(int(entry)) == target and process_alive(int(entry)):
            found.append(int(entry))
    return found


def wait_processes_gone(data_dir: Path, name: str) -> None:
    """Wait for every process of a stopped server to exit (children linger after a kill -9)."""
    if not data_dir.exists():
        return
    deadline = time.monotonic() + PROCESS_EXIT_TIMEOUT
    killed = False
    while True:
        left = processes_in(data_dir)
        if not left:
            return
        if time.monotonic() > deadline:
            if killed:
                raise LabError(
                    f"processes {', '.join(map(str, left))} of {name} ({data_dir}) "
                    "did not exit, even after SIGKILL"
                )
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            killed = True
            deadline = time.monotonic() + 5
        time.sleep(0.05)
