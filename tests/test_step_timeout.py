"""A step's timeout bounds the step, even when the command's grandchild escapes with ``setsid``
and keeps the pipes (or the SSH channel) open; and that grandchild is killed, not left running.

Real processes: local commands, commands over the loopback sshd of tests/sshd_fixtures.py
(this machine is the "remote" host there, so the test can look for what is left), and a shell
step of a real run on the one-host lab. Each test's
sleeps carry a unique duration, so that what is looked for is only what the test started; any
left over is killed by pid in a finally.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from drills.executors.local import LocalExecutor
from drills.executors.ssh import SshExecutor
from drills.model.errors import CommandTimeout
from tests.labs import AnyLab
from tests.sshd_fixtures import (
    needs_sshd,
    node,
    node_known_hosts,
    node_site,
    processes_matching,
    ssh_lab,
    wait_gone,
)

__all__ = ["node", "node_known_hosts", "node_site", "ssh_lab"]  # fixtures, for pytest

TIMEOUT = 1.0
BOUND = TIMEOUT + 2.5  # the kill and the scan of /proc included, on a busy machine


def unique_seconds() -> str:
    """A sleep duration no other process on this machine has on its command line."""
    return f"600.{uuid.uuid4().int % 10**9:09d}"


@pytest.fixture
def seconds() -> Iterator[str]:
    value = unique_seconds()
    try:
        yield value
    finally:
        for pid in processes_matching(value):  # what a failing test left: ours, by pid
            os.kill(pid, signal.SIGKILL)


# Each one escapes the command's process group and session, and holds its stdout and stderr.
ESCAPES = {
    "the leader goes on": "setsid sleep {s} & sleep 30",
    "the leader exits at once": "setsid sleep {s} &",
    "the leader execs": "setsid sleep {s} & exec sleep 30",
    "a double escape": "setsid sh -c 'setsid sleep {s} & sleep {s}' & sleep 30",
    "from a subshell, pipes closed": "(setsid sleep {s} >/dev/null 2>&1 </dev/null &); sleep 30",
}


@pytest.mark.parametrize("script", list(ESCAPES.values()), ids=list(ESCAPES))
def test_local_escaped_grandchild_cannot_hold_the_step(seconds: str, script: str) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        LocalExecutor("pg1").run(["sh", "-c", script.format(s=seconds)], timeout=TIMEOUT)
    took = time.monotonic() - started
    assert TIMEOUT <= took < BOUND, took
    message = str(caught.value)
    assert f"did not finish within {TIMEOUT:g}s" in message
    assert "process(es) that had left it" in message and "were killed" in message
    assert wait_gone(seconds, timeout=2) == []


def test_local_command_that_ends_in_time_is_untouched() -> None:
    """A grandchild that detached properly (its own session, pipes closed) and a command that
    ends in time: nothing is killed, the output is whole."""
    seconds = unique_seconds()
    script = f"(setsid sh -c 'sleep {seconds}' >/dev/null 2>&1 </dev/null &); echo done"
    try:
        result = LocalExecutor().run(["sh", "-c", script], timeout=10)
        assert result.stdout == "done\n"
        assert processes_matching(seconds), "a properly detached process was killed"
    finally:
        for pid in processes_matching(seconds):
            os.kill(pid, signal.SIGKILL)
    assert wait_gone(seconds) == []


def test_local_timeout_of_a_command_run_as_another_user(seconds: str) -> None:
    """As root the command runs under runuser; its escaped grandchild is found all the same."""
    if os.geteuid() != 0:
        pytest.skip("runuser needs root")
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="had left it"):
        LocalExecutor().run(
            ["sh", "-c", f"setsid sleep {seconds} & sleep 30"], user="nobody", timeout=TIMEOUT
        )
    assert time.monotonic() - started < BOUND
    assert wait_gone(seconds, timeout=2) == []


# -- over SSH ----------------------------------------------------------------------------------


@needs_sshd
@pytest.mark.parametrize(
    "script",
    [
        ESCAPES["the leader goes on"],
        ESCAPES["the leader exits at once"],
        ESCAPES["a double escape"],
    ],
    ids=["the leader goes on", "the leader exits at once", "a double escape"],
)
def test_ssh_escaped_grandchild_cannot_hold_the_step(
    node: SshExecutor, seconds: str, script: str
) -> None:
    node.run(["true"])  # connected: the time below is the command's alone
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        node.run(["sh", "-c", script.format(s=seconds)], timeout=TIMEOUT)
    took = time.monotonic() - started
    assert TIMEOUT <= took < BOUND, took
    message = str(caught.value)
    assert f"did not finish within {TIMEOUT:g}s" in message
    assert "process(es) of it that had left the group" in message, message
    assert wait_gone(seconds, timeout=2) == []
    assert node.run(["echo", "still", "usable"]).stdout == "still usable\n"


@needs_sshd
def test_ssh_plain_timeout_still_kills_the_group(node: SshExecutor, seconds: str) -> None:
    with pytest.raises(CommandTimeout, match=r"its process group \d+ was killed there$"):
        node.run(["sleep", seconds], timeout=0.5)
    assert wait_gone(seconds, timeout=2) == []


# -- a step of a real run --------------------------------------------------------------------------


def test_a_shell_step_with_an_escaped_grandchild_ends_at_its_timeout(
    any_lab: AnyLab, tmp_path: Path, seconds: str
) -> None:
    """The step of the issue (601 s against a 5 s timeout): on each lab (the one-host lab, and
    the two-site lab over its sshd), a shell step whose command leaves a setsid grandchild
    holding its output fails at its timeout, and the grandchild is gone."""
    import yaml

    from drills.engine.runner import Runner, RunRequest

    playbook = tmp_path / "escape.yaml"
    playbook.write_text(
        yaml.safe_dump(
            {
                "name": "escape",
                "version": 1,
                "kind": "inspection",
                "title": {"en": "Escape", "zh": "逃逸"},
                "roles": ["primary", "standby"],
                "steps": [
                    {
                        "id": "escapes",
                        "action": "shell",
                        "target": "primary",
                        "timeout": "2s",
                        "with": {"command": ["sh", "-c", f"setsid sleep {seconds} & sleep 30"]},
                    }
                ],
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    started = time.monotonic()
    with any_lab.active():
        record = Runner(RunRequest(playbook=str(playbook), environment=any_lab.env)).run()
    step = record.steps[0]
    assert step.status == "failed" and record.status == "aborted"
    assert 2.0 <= step.duration_seconds < 2.0 + BOUND - TIMEOUT, step.duration_seconds
    error = step.error or ""
    assert "did not finish within 2s" in error
    if any_lab.over_ssh:
        assert "process(es) of it that had left the group" in error, error
    else:
        assert "process(es) that had left it" in error, error
    assert time.monotonic() - started < 30
    assert wait_gone(seconds, timeout=2) == []
