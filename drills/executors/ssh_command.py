"""The command line an :class:`~drills.executors.ssh.SshExecutor` sends, and what it keeps of
a command's output.

Every command runs inside a small ``sh`` wrapper (:func:`wrap_command`) that

- announces its process group on stderr (``drctl-pgid N``, stripped from the output by
  :class:`StderrTail`), so a command past its deadline is killed on the host, not merely
  abandoned;
- exports the command's random id (``DRCTL_COMMAND_ID``), which every process it starts
  inherits, so that one that escaped the process group (``setsid``, a double fork) and keeps
  the channel open is found and killed too (:func:`kill_line`);
- reads ``NAME=value`` lines from stdin up to an empty line and exports them
  (:func:`env_lines` writes them), so secrets (``PGPASSWORD``) never appear on a command line;
  the rest of stdin goes to the command;
- changes to ``cwd`` and ``exec``s the command.

No paramiko here: this module only builds strings and keeps bytes.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence

from drills.executors.host import STREAM_LIMIT, CommandResult, shell_join
from drills.model.errors import BecomeFailed, InputError

PGID_MARK = b"drctl-pgid "
KILLED_MARK = "drctl-killed "
COMMAND_ID_ENV = "DRCTL_COMMAND_ID"
COMMAND_ID = re.compile(r"^[0-9a-f]{8,64}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The wrapper, run by ``sh`` on the host. ``g`` prints the process-group field of
# /proc/$$/stat (the fields after "(comm) " are: state ppid pgrp ...).
_ANNOUNCE = 'g() { echo "drctl-pgid $3" >&2; }; read -r s </proc/$$/stat; g ${s##*") "}; '
_READ_ENV = 'while IFS= read -r l && [ -n "$l" ]; do export "$l"; done; '


def wrap_command(
    argv: Sequence[str],
    *,
    become: tuple[str, str] | None = None,
    env: bool = False,
    cwd: str | None = None,
    command_id: str | None = None,
) -> str:
    """The command string sent to sshd for ``argv``: the wrapper (see the module docstring),
    behind ``sudo -n -u USER --`` or ``su -s /bin/sh USER -c`` when ``become`` is
    ``(method, user)``. No value of ``env`` is ever part of it, only whether to read some.
    ``command_id`` (hex) is exported as ``DRCTL_COMMAND_ID`` after ``become``, so that it
    reaches every process of the command (sudo would drop it)."""
    if not argv:
        raise InputError("an empty command cannot run")
    script = _ANNOUNCE + (_READ_ENV if env else "")
    if command_id is not None:
        if not COMMAND_ID.match(command_id):
            raise InputError(f"a command id is hex digits, not {command_id!r}")
        script += f"export {COMMAND_ID_ENV}={command_id}; "
    if cwd is None and become is not None:
        cwd = "/"  # a directory every user may enter
    if cwd is not None:
        script += f"cd -- {shlex.quote(cwd)} && "
    script += 'exec "$@"'
    inner = f"sh -c {shlex.quote(script)} sh {shell_join(argv)}"
    if become is None:
        return f"exec {inner}"
    method, user = become
    if method == "sudo":
        return f"exec sudo -n -u {shlex.quote(user)} -- {inner}"
    return f"exec su -s /bin/sh {shlex.quote(user)} -c {shlex.quote('exec ' + inner)}"


# The killer of a timed-out command, run by ``sh`` on the host as the command's user, with the
# process group ($1, empty when never announced) and the command id ($2): it kills the group,
# then every process whose environment holds the id (grep -l over /proc/*/environ: one process
# for the whole scan; a zombie's environ is empty), five rounds at most in case one forked
# meanwhile, and says what it did: ``drctl-killed GROUP_STATUS ESCAPED_COUNT``.
_KILLER = (
    'r=1; n=0; i=0; if [ -n "$1" ]; then kill -s KILL -- "-$1" 2>/dev/null && r=0; '
    "sleep 0.05 2>/dev/null || :; fi; "
    "while [ $i -lt 5 ]; do i=$((i+1)); "
    f'l=$(grep -lsF "{COMMAND_ID_ENV}=$2" /proc/[0-9]*/environ); [ -n "$l" ] || break; '
    'for f in $l; do p=${f#/proc/}; p=${p%/environ}; [ "$p" = "$$" ] && continue; '
    'kill -s KILL "$p" 2>/dev/null && n=$((n+1)); done; sleep 0.05 2>/dev/null || :; done; '
    f'echo "{KILLED_MARK}$r $n"'
)


def kill_argv(pgid: int | None, command_id: str) -> list[str]:
    """The command that kills a timed-out command's process group and its escaped processes."""
    if not COMMAND_ID.match(command_id):
        raise InputError(f"a command id is hex digits, not {command_id!r}")
    return ["sh", "-c", _KILLER, "sh", "" if pgid is None else str(pgid), command_id]


def parse_killed(output: str) -> tuple[bool, int] | None:
    """What the killer said: (the group was killed, how many escaped processes were)."""
    for line in output.splitlines():
        if line.startswith(KILLED_MARK):
            words = line[len(KILLED_MARK) :].split()
            if len(words) == 2 and words[1].isdigit():
                return words[0] == "0", int(words[1])
    return None


def become_argv(method: str, user: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run as ``user`` through ``sudo -n`` or ``su``, as a command line shows it."""
    if method == "sudo":
        return ["sudo", "-n", "-u", user, "--", *argv]
    return ["su", "-s", "/bin/sh", user, "-c", shell_join(argv)]


class StreamTail:
    """Bytes of one stream, keeping the last ``limit`` characters' worth."""

    def __init__(self, limit: int = STREAM_LIMIT) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 8 * self.limit:  # UTF-8 is at most 4 bytes a character
            del self.data[: len(self.data) - 4 * self.limit]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")[-self.limit :]


class StderrTail(StreamTail):
    """stderr, with the wrapper's ``drctl-pgid N`` line taken out (it is among the first)."""

    HEAD_LINES = 8

    def __init__(self, limit: int = STREAM_LIMIT) -> None:
        super().__init__(limit)
        self.head = bytearray()
        self.scanning = True
        self.lines_seen = 0
        self.announced = False  # the wrapper ran (as the become user, when there is one)
        self.pgid: int | None = None

    def add(self, chunk: bytes) -> None:
        if not self.scanning:
            super().add(chunk)
            return
        self.head += chunk
        while self.scanning:
            newline = self.head.find(b"\n")
            if newline < 0:
                if len(self.head) > 4096:
                    self._stop_scanning()
                return
            line = bytes(self.head[: newline + 1])
            del self.head[: newline + 1]
            self.lines_seen += 1
            if line.startswith(PGID_MARK):
                self.announced = True
                value = line[len(PGID_MARK) :].strip()
                self.pgid = int(value) if value.isdigit() else None
                self._stop_scanning()
            else:
                super().add(line)
                if self.lines_seen >= self.HEAD_LINES:
                    self._stop_scanning()

    def _stop_scanning(self) -> None:
        self.scanning = False
        rest, self.head = bytes(self.head), bytearray()
        if rest:
            super().add(rest)

    def text(self) -> str:
        if self.head:
            self._stop_scanning()
        return super().text()


def env_lines(env: dict[str, str] | None, remote: str, node: str) -> bytes:
    """``env`` as the ``NAME=value`` lines (and the empty line) the wrapper reads from stdin."""
    if not env:
        return b""
    lines = []
    for name, value in env.items():
        if not ENV_NAME.match(name):
            raise InputError(f"{name!r} is not a valid environment variable name", host=node)
        if "\n" in value or "\0" in value:
            raise InputError(
                f"environment variable {name} for {remote} holds a newline or NUL; drctl passes "
                "variables on stdin, one per line",
                host=node,
            )
        lines.append(f"{name}={value}\n")
    return ("".join(lines) + "\n").encode("utf-8")


def become_failed(
    login: str,
    where: str,
    node: str,
    become: tuple[str, str],
    argv: Sequence[str],
    result: CommandResult,
) -> BecomeFailed:
    """Why ``become`` (method, user) did not run ``argv`` for ``login`` at ``where``, read from
    what sudo or su said (the wrapper never ran)."""
    method, user = become
    said = result.stderr.strip()[-500:]
    lowered = said.lower()
    if method == "sudo" and (
        "password is required" in lowered or "terminal is required" in lowered
    ):
        hint = (
            f"sudo on {where} wants a password to run {argv[0]} as {user} (drctl runs `sudo -n`, "
            f"which never prompts): allow it without one in sudoers, e.g. "
            f"`{login} ALL=({user}) NOPASSWD: /path/to/{os.path.basename(argv[0])}`"
        )
    elif "not found" in lowered and method in lowered:
        hint = f"{method} is not installed on {where}"
    elif method == "sudo":
        hint = f"sudo on {where} would not run {argv[0]} as {user} for {login}"
    else:
        hint = (
            f"su on {where} would not run {argv[0]} as {user} (su works only when drctl logs "
            f"in as root; use `become: {{method: sudo}}` otherwise)"
        )
    return BecomeFailed(f"{hint}: {said}", host=node)
