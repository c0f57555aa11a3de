"""A hard stop (a second Ctrl-C) leaves nothing running: the command in progress, and what escaped
its process group, are killed before drctl gives the step up, locally and over SSH.

Real processes and drctl's own signal handlers (``drills.engine.stopping``): the test is the
terminal, sending SIGINT twice to its own process while a command runs, inside the region a run
is in (``protected``). The first asks for a stop at the end of the step; the second raises
``StopRequested`` in the command's wait, and the executor must kill the command (its group, and
a ``setsid`` grandchild) before it lets the exception go on. Each process is found by a sleep
duration no other process has, and checked gone by its pid; any left is killed by pid.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from drills.engine.stopping import STOP, StopRequested, install_handlers
from drills.executors.local import LocalExecutor
from drills.executors.ssh import SshExecutor
from tests.sshd_fixtures import (
    needs_sshd,
    node,
    node_known_hosts,
    node_site,
    processes_matching,
    ssh_lab,
)

__all__ = ["node", "node_known_hosts", "node_site", "ssh_lab"]  # fixtures, for pytest

# The command: a shell, its sleep, and a grandchild that left the group and the session.
SCRIPT = "setsid sleep {s} & sleep {s}"
GONE_WITHIN = 1.0  # the kill happens before the exception goes on; reaping is the kernel's


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@pytest.fixture
def seconds() -> Iterator[str]:
    value = f"700.{uuid.uuid4().int % 10**9:09d}"
    try:
        yield value
    finally:
        for pid in processes_matching(value):  # what a failing test left: ours, by pid
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def drctl_handlers() -> Iterator[None]:
    """drctl's SIGINT/SIGTERM handlers in this process, as the CLI installs them; put back."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    STOP.reset()
    install_handlers()
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        STOP.reset()
        STOP.installed = False


def stop_twice_once_running(seconds: str, seen: list[int]) -> threading.Thread:
    """A thread that waits for the command's three processes, notes their pids, then sends
    this process SIGINT twice (as a terminal's Ctrl-C, Ctrl-C)."""

    def terminal() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = processes_matching(seconds)
            if len(found) >= 3:
                seen.extend(found)
                break
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=terminal, daemon=True)
    thread.start()
    return thread


def stopped_hard(run: Callable[[], object], seconds: str) -> list[int]:
    """Run ``run`` in the run's region while the terminal stops it twice: the pids the command
    had."""
    seen: list[int] = []
    thread = stop_twice_once_running(seconds, seen)
    with pytest.raises(StopRequested) as caught, STOP.region("protected", "the run"):
        run()
    thread.join(5)
    assert caught.value.hard is True
    assert STOP.count == 2
    return seen


def assert_gone(pids: list[int]) -> None:
    assert len(pids) >= 3, f"the command's processes were not all seen: {pids}"
    deadline = time.monotonic() + GONE_WITHIN
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [p for p in pids if alive(p)] == [], "left running after the hard stop"


def test_a_hard_stop_kills_the_local_command_and_what_escaped_it(
    seconds: str, drctl_handlers: None
) -> None:
    executor = LocalExecutor("pg1")
    began = time.monotonic()
    pids = stopped_hard(
        lambda: executor.run(["sh", "-c", SCRIPT.format(s=seconds)], timeout=60), seconds
    )
    assert time.monotonic() - began < 10  # not the command's 60 s timeout, nor its 700 s sleep
    assert_gone(pids)
    assert executor.run(["echo", "usable"]).stdout == "usable\n"


@needs_sshd
def test_a_hard_stop_kills_the_remote_command_and_what_escaped_it(
    node: SshExecutor, seconds: str, drctl_handlers: None
) -> None:
    """The sshd of the node site runs on this machine, so its processes can be looked at here."""
    node.run(["true"])  # connected first
    began = time.monotonic()
    pids = stopped_hard(
        lambda: node.run(["sh", "-c", SCRIPT.format(s=seconds)], timeout=60), seconds
    )
    assert time.monotonic() - began < 10
    assert_gone(pids)
    assert node.run(["echo", "still", "usable"]).stdout == "still usable\n"
