"""The one exception tree of drctl.

    DrillError                      every error drctl raises on purpose
    ├── InputError                  bad input: a playbook, environment, option (exit 2)
    │   └── ValidationFailed        a file failed validation; carries every problem at once
    ├── RefusedError                drctl will not do this (protected env, locked env,
    │                               fencing unconfirmed, precondition failed) (exit 3)
    ├── LabError                    the lab could not be set up or torn down
    └── ExecutorError               an executor failed to reach or run something
        ├── CommandFailed           a command ran and exited non-zero
        ├── CommandTimeout          a command or query ran past its deadline
        ├── ConnectionFailed        a host or database could not be reached
        │   ├── HostKeyRejected     an SSH host key is unknown or changed (never auto-accepted)
        │   └── AuthenticationFailed  the host refused our user or key
        └── BecomeFailed            sudo/su would not run the command as the other user

Library errors (subprocess, psycopg, paramiko, httpx) are translated into this tree in exactly
one place per executor module; nothing above the executors sees a library exception.
"""

from __future__ import annotations

from dataclasses import dataclass


class DrillError(Exception):
    """Root of every error drctl raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, host: str | None = None, step: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.host = host
        self.step = step

    def __str__(self) -> str:
        where = []
        if self.step:
            where.append(f"step {self.step}")
        if self.host:
            where.append(f"host {self.host}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class InputError(DrillError):
    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One validation problem, located as precisely as we can."""

    file: str
    line: int | None
    step: str | None
    message: str

    def __str__(self) -> str:
        place = self.file + (f":{self.line}" if self.line else "")
        step = f" [step {self.step}]" if self.step else ""
        return f"{place}{step}: {self.message}"


class ValidationFailed(InputError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RefusedError(DrillError):
    exit_code = 3


class LabError(DrillError):
    exit_code = 2


class ExecutorError(DrillError):
    pass


class CommandFailed(ExecutorError):
    def __init__(
        self,
        message: str,
        *,
        returncode: int,
        output: str = "",
        host: str | None = None,
        step: str | None = None,
    ) -> None:
        super().__init__(message, host=host, step=step)
        self.returncode = returncode
        self.output = output


class CommandTimeout(ExecutorError):
    pass


class ConnectionFailed(ExecutorError):
    pass


class HostKeyRejected(ConnectionFailed):
    """The host offered a key that known_hosts does not hold, or one that differs from it."""


class AuthenticationFailed(ConnectionFailed):
    """The host refused our login (user not allowed, key not authorized, encrypted key)."""


class BecomeFailed(ExecutorError):
    """``become`` (sudo -n / su) refused to run the command as the other user."""
