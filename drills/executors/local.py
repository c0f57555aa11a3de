"""Commands and files on this machine, optionally as another (unprivileged) user.

As root, a command for another user runs under ``runuser``; files and processes are read
in-process where we may (a check polled every few milliseconds needs that), and as the user
through commands where only that user may.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal as signals
import socket
import subprocess
import time
from collections.abc import Sequence

from drills.executors.host import (
    STREAM_LIMIT,
    CommandResult,
    DiskUsage,
    InstanceProcesses,
    PosixHost,
    ProcessInfo,
    command_failed,
    parse_stat,
    shell_join,
)
from drills.model.errors import CommandTimeout, ExecutorError

__all__ = ["CommandResult", "LocalExecutor", "as_user_argv", "describe"]


def as_user_argv(argv: Sequence[str], user: str | None) -> list[str]:
    """Prefix ``runuser`` when we are root and the command must run as ``user``."""
    if user and os.geteuid() == 0 and user != "root":
        return ["runuser", "-u", user, "--", *argv]
    return list(argv)


def describe(argv: Sequence[str], user: str | None = None) -> str:
    return shell_join(as_user_argv(argv, user))


def _is_self(user: str | None) -> bool:
    if user is None:
        return True
    try:
        return pwd.getpwnam(user).pw_uid == os.geteuid()
    except KeyError:
        return False


class LocalExecutor(PosixHost):
    """Runs commands on the local host. ``host`` only names it in errors and records."""

    def __init__(self, host: str = "localhost") -> None:
        self.host = host

    @property
    def address(self) -> str:
        return "local"

    def describe(self, argv: Sequence[str], user: str | None = None) -> str:
        return describe(argv, user)

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        timeout: float = 60.0,
        check: bool = True,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        input: str | None = None,
    ) -> CommandResult:
        full = as_user_argv(argv, user)
        if cwd is None and user and not _is_self(user):
            cwd = "/"  # a directory every user may enter
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
                os.killpg(proc.pid, signals.SIGKILL)
            # A grandchild that left the group may hold the pipes open: do not wait on it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=2)
            raise CommandTimeout(
                f"{describe(argv, user)} did not finish within {timeout:g}s", host=self.host
            ) from exc
        result = CommandResult(
            tuple(full),
            proc.returncode,
            stdout[-STREAM_LIMIT:],
            stderr[-STREAM_LIMIT:],
            time.monotonic() - started,
        )
        if check and proc.returncode != 0:
            raise command_failed(self.host, describe(argv, user), result)
        return result

    # -- in-process where we may ---------------------------------------------------------------

    def read_file(self, path: str, *, user: str | None = None) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except PermissionError:
            if _is_self(user):
                raise ExecutorError(f"not allowed to read {path}", host=self.host) from None
        except OSError as exc:
            raise ExecutorError(f"cannot read {path}: {exc}", host=self.host) from exc
        return super().read_file(path, user=user)

    def exists(self, path: str, *, user: str | None = None) -> bool:
        if _is_self(user) or os.geteuid() == 0:
            return os.path.lexists(path)
        return super().exists(path, user=user)

    def instance_processes(self, data_dir: str, *, user: str | None = None) -> InstanceProcesses:
        if os.geteuid() != 0 and not _is_self(user):
            return super().instance_processes(data_dir, user=user)
        pid_text = self.read_file(f"{data_dir}/postmaster.pid", user=user)
        pid_file_pid: int | None = None
        postmaster: ProcessInfo | None = None
        if pid_text is not None:
            first = pid_text.split("\n", 1)[0].strip()
            if first.isdigit():
                pid_file_pid = int(first)
                postmaster = _proc_stat(pid_file_pid)
            elif first:
                pid_file_pid, postmaster = -1, ProcessInfo(-1, "R", "postgres")
        members: list[ProcessInfo] = []
        try:
            real = os.path.realpath(data_dir)
            entries = os.listdir("/proc")
        except OSError:
            entries = []
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/cwd") != real:
                    continue
            except OSError:
                continue
            info = _proc_stat(int(entry))
            if info is not None and info.alive:
                members.append(info)
        return InstanceProcesses(data_dir, pid_file_pid, postmaster, tuple(members))

    def signal(self, pids: Sequence[int], signal_name: str, *, user: str | None = None) -> None:
        number = getattr(signals, f"SIG{signal_name.removeprefix('SIG')}", None)
        if number is None:
            raise ExecutorError(f"unknown signal {signal_name}", host=self.host)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                try:
                    os.kill(pid, number)
                except PermissionError:
                    super().signal([pid], signal_name, user=user)

    def free_port(self, address: str) -> int:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((address, 0))
                port: int = sock.getsockname()[1]
                return port
        except OSError as exc:
            raise ExecutorError(f"no free port on {address}: {exc}", host=self.host) from exc

    def disk_usage(self, path: str, *, user: str | None = None) -> DiskUsage:
        try:
            usage = shutil.disk_usage(path)
            vfs = os.statvfs(path)
        except OSError:
            return super().disk_usage(path, user=user)
        return DiskUsage(path, usage.total, usage.used, usage.free, vfs.f_files, vfs.f_ffree)


def _proc_stat(pid: int) -> ProcessInfo | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return parse_stat(handle.read())
    except OSError:
        return None
