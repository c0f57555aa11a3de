"""The host-executor seam: everything drctl does on a node's host goes through one protocol.

A node is reached by a ``LocalExecutor`` (drctl runs on that host) or an ``SshExecutor``
(paramiko, strict host keys, jump hosts, ``become``). Actions, checks, backups, scratch
restores, inspections and the lab all use a node's executor; none of them reads the
orchestrator's own files or processes on a node's behalf, so the same playbook runs local or
remote.

Every operation beyond ``run`` has a POSIX implementation here, made of commands that any Linux
host has (``cat``, ``test``, ``install``, ``df``, ``kill``, ``/proc``); an executor overrides the
ones it can do faster (the local one reads files in-process).
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from drills.model.errors import CommandFailed, ExecutorError

OUTPUT_LIMIT = 4000  # characters of a failed command's output kept in its error
STREAM_LIMIT = 1024 * 1024  # characters of stdout (and of stderr) kept from one command
PORT_RANGE = (20000, 60999)


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


@dataclass(frozen=True)
class ProcessInfo:
    """One process on a host: its pid, its state letter (R, S, Z, ...) and its command name."""

    pid: int
    state: str
    command: str

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


@dataclass(frozen=True)
class InstanceProcesses:
    """A PostgreSQL instance's processes as its host sees them.

    ``pid_file_pid`` is the first line of ``postmaster.pid`` (None: no file); ``postmaster`` is
    that process if it still exists; ``members`` are every live process whose working directory
    is the data directory (a postmaster and its children, orphans after a ``kill -9`` included).
    """

    data_dir: str
    pid_file_pid: int | None
    postmaster: ProcessInfo | None
    members: tuple[ProcessInfo, ...]

    @property
    def state(self) -> str:
        """'running', 'not running', or 'dead, not yet reaped' (what ``pg_ctl status`` means,
        with a zombie counted as dead and a reused pid not counted as the postmaster)."""
        if self.pid_file_pid is None or self.postmaster is None:
            return "not running"
        if not self.postmaster.alive:
            return "dead, not yet reaped"
        command = self.postmaster.command
        if "postgres" not in command and "postmaster" not in command:
            return "not running"
        return "running"

    @property
    def live_pids(self) -> list[int]:
        return [p.pid for p in self.members if p.alive]


@dataclass(frozen=True)
class DiskUsage:
    path: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    inodes_total: int | None = None
    inodes_free: int | None = None

    @property
    def used_fraction(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True)
class HostIdentity:
    """Who drctl is on a host, and how it knows the host is the one it means."""

    address: str
    user: str
    hostname: str
    host_key_fingerprint: str | None = None  # SSH: the key that matched known_hosts
    known_hosts: str | None = None


@runtime_checkable
class HostExecutor(Protocol):
    """What drctl may do on one host. ``host`` names the node in errors and records;
    ``address`` says where it is (``local`` or ``user@address:port``)."""

    host: str

    @property
    def address(self) -> str: ...

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
    ) -> CommandResult: ...

    def describe(self, argv: Sequence[str], user: str | None = None) -> str:
        """The command line as it would run on the host, wrappers included (for ``plan``)."""
        ...

    def read_file(self, path: str, *, user: str | None = None) -> str | None: ...

    def write_file(
        self, path: str, text: str, *, user: str | None = None, mode: int = 0o600
    ) -> None: ...

    def exists(self, path: str, *, user: str | None = None) -> bool: ...

    def make_dirs(
        self, path: str, *, owner: str | None = None, mode: int = 0o700, user: str | None = None
    ) -> None: ...

    def instance_processes(
        self, data_dir: str, *, user: str | None = None
    ) -> InstanceProcesses: ...

    def signal(self, pids: Sequence[int], signal_name: str, *, user: str | None = None) -> None: ...

    def free_port(self, address: str) -> int: ...

    def disk_usage(self, path: str, *, user: str | None = None) -> DiskUsage: ...

    def identity(self) -> HostIdentity: ...

    def connect(self) -> None:
        """Reach the host now (an SSH login), so the first step does not pay for it."""
        ...

    def close(self) -> None: ...


# -- the POSIX implementations, over ``run`` ---------------------------------------------------

# One round trip: the pid file's first line, the postmaster's /proc stat, then every process
# whose cwd is the data directory. Fields are separated by tabs; sh only, no bash.
INSTANCE_SCRIPT = r"""
d="$1"
pid=$(head -n 1 "$d/postmaster.pid" 2>/dev/null)
printf 'pidfile\t%s\n' "$pid"
case "$pid" in
  ''|*[!0-9]*) ;;
  *) [ -r "/proc/$pid/stat" ] && printf 'postmaster\t%s\n' "$(cat /proc/$pid/stat 2>/dev/null)";;
esac
real=$(cd "$d" 2>/dev/null && pwd -P)
[ -n "$real" ] || exit 0
for p in /proc/[0-9]*; do
  # -ef compares the inodes in the shell itself: no process per entry of /proc.
  [ "$p/cwd" -ef "$real" ] || continue
  read -r line < "$p/stat" 2>/dev/null && printf 'member\t%s\n' "$line"
done
exit 0
"""


def parse_stat(stat: str) -> ProcessInfo | None:
    """A ``/proc/PID/stat`` line: ``pid (command) state ...``."""
    head, _, rest = stat.partition(" (")
    command, _, tail = rest.rpartition(") ")
    if not head.strip().isdigit():
        return None
    state = tail.split()[:1]
    return ProcessInfo(int(head), state[0] if state else "?", command)


def parse_instance(data_dir: str, output: str) -> InstanceProcesses:
    pid_file_pid: int | None = None
    postmaster: ProcessInfo | None = None
    members: list[ProcessInfo] = []
    for line in output.splitlines():
        kind, _, value = line.partition("\t")
        if kind == "pidfile":
            value = value.strip()
            pid_file_pid = int(value) if value.isdigit() else (-1 if value else None)
        elif kind == "postmaster":
            postmaster = parse_stat(value)
        elif kind == "member":
            info = parse_stat(value)
            if info is not None and info.alive:
                members.append(info)
    if pid_file_pid == -1:  # a pid file being written: do not claim the server is down
        postmaster = ProcessInfo(-1, "R", "postgres")
    return InstanceProcesses(data_dir, pid_file_pid, postmaster, tuple(members))


def listening_ports(proc_net: str) -> set[int]:
    """Local ports in LISTEN state (and any bound port) from /proc/net/tcp{,6} text."""
    ports: set[int] = set()
    for line in proc_net.splitlines():
        fields = line.split()
        if len(fields) < 4 or ":" not in fields[1]:
            continue
        try:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except ValueError:
            continue
    return ports


def parse_df(path: str, blocks: str, inodes: str | None) -> DiskUsage:
    """``df -P -B1 PATH`` (and ``df -P -i PATH``) output."""
    try:
        fields = blocks.strip().splitlines()[-1].split()
        total, used, free = int(fields[1]), int(fields[2]), int(fields[3])
    except (IndexError, ValueError) as exc:
        raise ExecutorError(f"cannot read df's answer for {path}: {blocks!r}") from exc
    inodes_total = inodes_free = None
    if inodes:
        try:
            ifields = inodes.strip().splitlines()[-1].split()
            inodes_total, inodes_free = int(ifields[1]), int(ifields[3])
        except (IndexError, ValueError):
            pass
    return DiskUsage(path, total, used, free, inodes_total, inodes_free)


class PosixHost:
    """The operations of ``HostExecutor`` built from commands; subclasses provide ``run`` and
    ``describe`` and override what they can do better."""

    host: str

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
        raise NotImplementedError

    def read_file(self, path: str, *, user: str | None = None) -> str | None:
        result = self.run(
            ["sh", "-c", 'if [ -e "$1" ]; then cat -- "$1"; else exit 3; fi', "sh", path],
            user=user,
            timeout=10,
            check=False,
        )
        if result.returncode == 3:
            return None
        if result.returncode != 0:
            raise ExecutorError(f"cannot read {path}: {result.output[:300]}", host=self.host)
        return result.stdout

    def write_file(
        self, path: str, text: str, *, user: str | None = None, mode: int = 0o600
    ) -> None:
        """Atomically: a temporary file beside it, then a rename."""
        script = (
            'set -e; t="$1.drctl-tmp.$$"; umask 077; cat > "$t"; chmod "$2" "$t"; mv -f "$t" "$1"'
        )
        self.run(
            ["sh", "-c", script, "sh", path, f"{mode:o}"],
            user=user,
            timeout=30,
            input=text,
        )

    def exists(self, path: str, *, user: str | None = None) -> bool:
        return self.run(["test", "-e", path], user=user, timeout=10, check=False).returncode == 0

    def make_dirs(
        self, path: str, *, owner: str | None = None, mode: int = 0o700, user: str | None = None
    ) -> None:
        argv = ["install", "-d", "-m", f"{mode:o}"]
        if owner is not None:
            argv += ["-o", owner]
        self.run([*argv, path], user=user, timeout=30)

    def instance_processes(self, data_dir: str, *, user: str | None = None) -> InstanceProcesses:
        result = self.run(
            ["sh", "-c", INSTANCE_SCRIPT, "sh", data_dir], user=user, timeout=15, check=False
        )
        return parse_instance(data_dir, result.stdout)

    def signal(self, pids: Sequence[int], signal_name: str, *, user: str | None = None) -> None:
        if not pids:
            return
        # Processes that exited meanwhile are fine: the signal was for making them go.
        self.run(
            ["kill", f"-{signal_name}", *[str(p) for p in pids]],
            user=user,
            timeout=10,
            check=False,
        )

    def free_port(self, address: str) -> int:
        text = self.run(
            ["sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true"], timeout=10
        ).stdout
        taken = listening_ports(text)
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randint(*PORT_RANGE)
            if port not in taken:
                return port
        raise ExecutorError(f"no free port found on {address}", host=self.host)

    def disk_usage(self, path: str, *, user: str | None = None) -> DiskUsage:
        blocks = self.run(["df", "-P", "-B1", path], user=user, timeout=15).stdout
        inodes = self.run(["df", "-P", "-i", path], user=user, timeout=15, check=False)
        return parse_df(path, blocks, inodes.stdout if inodes.returncode == 0 else None)

    def identity(self) -> HostIdentity:
        out = self.run(["sh", "-c", "id -un; uname -n"], timeout=15).stdout.split()
        return HostIdentity(
            getattr(self, "address", self.host),
            out[0] if out else "?",
            out[1] if len(out) > 1 else "?",
        )

    def connect(self) -> None:
        return None

    def close(self) -> None:
        return None


def command_failed(
    host: str, described: str, result: CommandResult
) -> CommandFailed:  # one wording for every executor
    return CommandFailed(
        f"{described} exited {result.returncode}: {result.output[-OUTPUT_LIMIT:]}",
        returncode=result.returncode,
        output=result.output,
        host=host,
    )


def shell_join(argv: Sequence[str]) -> str:
    return shlex.join(list(argv))
