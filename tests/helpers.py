"""Helpers for tests (no side effects on import, unlike conftest)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

REPO = Path(__file__).resolve().parent.parent


def drctl(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real console script, as a user would."""
    exe = Path(sys.executable).parent / "drctl"
    full_env = env if env is not None and "DRCTL_HOME" in env else {**os.environ, **(env or {})}
    if home is not None:
        full_env["DRCTL_HOME"] = str(home)
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def run_in_thread(request: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run the drill flow in a thread; ``out`` gets the record id, or the error it raised."""
    from flows.drill import run_drill

    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["id"] = run_drill(request)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def paused_flow_run(name_part: str, deadline: float = 90) -> UUID:
    """The id of the paused flow run whose name contains ``name_part``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    end = time.monotonic() + deadline
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            for run in runs:
                if name_part in run.name:
                    return run.id
            time.sleep(0.2)
    raise AssertionError(f"no paused flow run named like {name_part!r} within {deadline:g}s")


# -- processes, as the lab's hosts' root sees them (the lab's hosts are this machine) -----------


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1].isdigit():
            parents[int(entry)] = int(fields[1])
    return parents


def process_tree(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def pids_with_argument(argument: str) -> list[int]:
    """Live processes one of whose command-line arguments is exactly ``argument``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            words = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in words and alive(int(entry)):
            found.append(int(entry))
    return found


def kill_tree(root: int) -> list[int]:
    """SIGKILL ``root`` and everything below it, as a crash of that process would leave its
    host; reap ``root`` when it is our own child. Returns the pids killed."""
    pids = process_tree(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(root, os.WNOHANG)
        time.sleep(0.02)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(root, os.WNOHANG)
    left = [pid for pid in pids if alive(pid)]
    assert not left, f"processes {left} survived SIGKILL"
    return pids


def wait_until(predicate: Any, deadline: float = 10, what: str = "the condition") -> None:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not hold within {deadline:g}s")
        time.sleep(0.02)
