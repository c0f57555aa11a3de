"""Run commands on this machine, optionally as another (unprivileged) user."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass

from drills.errors import CommandFailed, CommandTimeout, ExecutorError

OUTPUT_LIMIT = 4000


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


def as_user_argv(argv: list[str], user: str | None) -> list[str]:
    """Prefix ``runuser`` when we are root and the command must run as ``user``."""
    if user and os.geteuid() == 0 and user != "root":
        return ["runuser", "-u", user, "--", *argv]
    return list(argv)


def describe(argv: list[str], user: str | None = None) -> str:
    return shlex.join(as_user_argv(argv, user))


class LocalExecutor:
    """Runs commands on the local host. ``host`` only names it in errors and records."""

    def __init__(self, host: str = "localhost") -> None:
        self.host = host

    def run(
        self,
        argv: list[str],
        *,
        user: str | None = None,
        timeout: float = 60.0,
        check: bool = True,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        input: str | None = None,
    ) -> CommandResult:
        full = as_user_argv(argv, user)
        started = time.monotonic()
        try:
            # A new session, so a timeout kills the whole process group, not only its leader.
            proc = subprocess.Popen(
                full,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                text=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ExecutorError(f"command not found: {full[0]}", host=self.host) from exc
        except PermissionError as exc:
            raise ExecutorError(f"not allowed to run {full[0]}: {exc}", host=self.host) from exc
        try:
            stdout, stderr = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(
                f"{describe(argv, user)} did not finish within {timeout:g}s", host=self.host
            ) from exc
        result = CommandResult(
            tuple(full), proc.returncode, stdout, stderr, time.monotonic() - started
        )
        if check and proc.returncode != 0:
            raise CommandFailed(
                f"{describe(argv, user)} exited {proc.returncode}: {result.output[-OUTPUT_LIMIT:]}",
                returncode=proc.returncode,
                output=result.output,
                host=self.host,
            )
        return result

    def read_file(self, path: str, *, user: str | None = None) -> str | None:
        """A file's text, or None when it does not exist. Read in-process when we may; as
        ``user`` through ``cat`` when only that user may."""
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except PermissionError:
            if not user:
                raise ExecutorError(f"not allowed to read {path}", host=self.host) from None
        except OSError as exc:
            raise ExecutorError(f"cannot read {path}: {exc}", host=self.host) from exc
        result = self.run(["cat", path], user=user, timeout=10, check=False)
        if result.returncode != 0:
            if "No such file" in result.stderr:
                return None
            raise ExecutorError(f"cannot read {path}: {result.output}", host=self.host)
        return result.stdout
