"""Commands and files on this machine, optionally as another (unprivileged) user.

As root, a command for another user runs under ``runuser``; files and processes are read
in-process where we may (a check polled every few milliseconds needs that), and as the user
through commands where only that user may.

A command's timeout bounds it, whatever it started. Each command runs in a session of its own
(so a timeout kills its whole process group), and a process that escaped it (``setsid``, a
double fork) is found anyway: each command carries a random ``DRCTL_COMMAND_ID`` in its
environment, which its descendants inherit, and its stdout and stderr are pipes that such a
process may still hold open (which is what kept a step waiting long past its timeout). On a
timeout every process of the command's session or group, every process carrying its id, every
holder of its pipes and every descendant of those is SIGKILLed (:func:`kill_command_tree`),
each through a pidfd checked against its start time, so a pid reused meanwhile is never hit.
No cgroup is needed; a process that escaped, cleared its environment and closed the pipes is
not found (it no longer holds the step either). A command given up on otherwise (drctl stopped
hard by a second Ctrl-C while it ran, or an error in drctl) is killed the same way before the
exception goes on: nothing drctl started runs on unwatched.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
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

__all__ = ["COMMAND_ID_ENV", "CommandResult", "LocalExecutor", "as_user_argv", "describe"]

COMMAND_ID_ENV = "DRCTL_COMMAND_ID"  # in every command's environment: finds its escaped processes


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
        command_id = secrets.token_hex(8)
        try:
            # A new session, so a timeout kills the whole process group, not only its leader.
            proc = subprocess.Popen(
                full,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                text=True,
                env={**os.environ, **(env or {}), COMMAND_ID_ENV: command_id},
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
            escaped = _kill_command(proc, command_id)
            what = (
                f"; its process group and {len(escaped)} process(es) that had left it "
                f"(pid {', '.join(str(p) for p in escaped[:5])}) were killed"
                if escaped
                else "; its process group was killed"
            )
            raise CommandTimeout(
                f"{describe(argv, user)} did not finish within {timeout:g}s{what}", host=self.host
            ) from exc
        except BaseException:
            # Stopped while it ran (a second Ctrl-C raises here, drills.engine.stopping; an
            # internal error): the command must not go on after drctl has given it up.
            _kill_command(proc, command_id)
            raise
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


# -- a timed-out command's processes, escaped ones included -------------------------------------


def _kill_command(proc: subprocess.Popen[str], command_id: str) -> list[int]:
    """SIGKILL a command given up on (timed out, or stopped hard): its process group and every
    process that escaped it (:func:`kill_command_tree`), then reap it. The pids killed outside
    its process group."""
    pipes = _pipes_of(proc)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signals.SIGKILL)
    escaped = kill_command_tree(proc.pid, command_id, pipes)
    # Every holder of the pipes is gone now; should one remain, do not wait on it.
    with contextlib.suppress(subprocess.TimeoutExpired, OSError, ValueError):
        proc.communicate(timeout=2)
    return escaped


def _pipes_of(proc: subprocess.Popen[str]) -> set[str]:
    """The pipes of a command's stdout and stderr, as /proc names them (``pipe:[INODE]``)."""
    found = set()
    for stream in (proc.stdout, proc.stderr):
        if stream is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            found.add(os.readlink(f"/proc/self/fd/{stream.fileno()}"))
    return found


def _stat_fields(pid: int) -> tuple[int, int, int, str] | None:
    """ppid, pgrp, session and start time of a live process (fields 4-6 and 22 of stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            tail = handle.read().rpartition(") ")[2].split()
        if tail[0] in ("Z", "X"):
            return None
        return int(tail[1]), int(tail[2]), int(tail[3]), tail[19]
    except (OSError, IndexError, ValueError):
        return None


def _carries(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except OSError:
        return False


def _holds(pid: int, pipes: set[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in pipes:
                return True
    return False


def command_tree(leader: int, command_id: str, pipes: set[str]) -> dict[int, tuple[int, str]]:
    """The processes of a command (pid → process group, start time): its session and process
    group (both
    ``leader``), those carrying its ``DRCTL_COMMAND_ID``, those holding its pipes, and every
    descendant of any of them."""
    me = os.getpid()
    marker = f"{COMMAND_ID_ENV}={command_id}".encode()
    table: dict[int, tuple[int, int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            fields = _stat_fields(int(entry))
            if fields is not None:
                table[int(entry)] = fields
    found = {
        pid
        for pid, (_, pgrp, session, _) in table.items()
        if leader in (pgrp, session) or _carries(pid, marker) or (pipes and _holds(pid, pipes))
    }
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child != me:
                found.add(child)
                todo.append(child)
    return {pid: (table[pid][1], table[pid][3]) for pid in found}


def _kill_checked(pid: int, started: str) -> bool:
    """SIGKILL ``pid`` only if it is still the process that started at ``started``."""
    try:
        handle = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        now = _stat_fields(pid)
        if now is None or now[3] != started:
            return False  # gone, or the pid now names another process
        signals.pidfd_send_signal(handle, signals.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(handle)


def kill_command_tree(leader: int, command_id: str, pipes: set[str]) -> list[int]:
    """SIGKILL every process of a timed-out command (see :func:`command_tree`), again until
    none is left (one may fork while we look); the pids killed outside its process group."""
    escaped: list[int] = []
    for _ in range(5):
        tree = command_tree(leader, command_id, pipes)
        if not tree:
            break
        for pid, (group, started) in tree.items():
            if _kill_checked(pid, started) and group != leader and pid not in escaped:
                escaped.append(pid)
        time.sleep(0.02)
    return escaped
