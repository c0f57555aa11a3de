"""What the backup, restore and migration actions share: a run's state, throwaway servers, and
the host facts they measure (sizes, free space, file ages).

**State.** Steps of one run find what earlier steps made (the backup taken, the scratch server
started, the database frozen) in one small JSON file per node::

    $DRCTL_HOME/scratch/<environment>/<node>/state.json

One drill runs at a time per environment (its lock), so the file belongs to the run in progress.
The rollback finds it there too, and a run that crashed leaves it for the next run, which stops
and removes the scratch server it names before it makes a new one.

**Scratch servers.** A scratch server is a PostgreSQL server drctl makes on the node's host to
prove that a backup or a dump comes back: its own directory (``data/`` and ``server.log``),
listening only on 127.0.0.1, on a free port, run as the node's OS user. It is removed at the end
of the run, whatever became of it.

Commands on the node's host run through its executor as the node's OS user (never as root); the
state file is the orchestrator's own and is written in-process.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from drills.executors.local import CommandResult, LocalExecutor
from drills.home import drctl_home
from drills.model.errors import CommandFailed, DrillError, InputError

MIB = 1024 * 1024
STATE_FILE = "state.json"
SCRATCH_PREFIX = "drctl-scratch-"
LOG_TAIL_LINES = 8
STOP_WAIT = 20  # pg_ctl -t for stopping a scratch server


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionFailed(CommandFailed):
    """An action that ran and found a fault; ``data`` keeps what it measured for the record."""

    def __init__(self, message: str, *, host: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, returncode=1, host=host)
        self.data: dict[str, Any] = dict(data or {})


# -- the state of a run, per node ----------------------------------------------------------------


def state_dir(environment: str, node: str) -> Path:
    return drctl_home() / "scratch" / environment / node


def load_state(environment: str, node: str) -> dict[str, Any]:
    path = state_dir(environment, node) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the drill state {path}: {exc}", host=node) from exc
    return data if isinstance(data, dict) else {}


def save_state(environment: str, node: str, state: dict[str, Any]) -> None:
    directory = state_dir(environment, node)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    tmp = directory / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def update_state(environment: str, node: str, **entries: Any) -> dict[str, Any]:
    """Set (or, with None, remove) entries of a node's state; the file goes when it is empty."""
    state = load_state(environment, node)
    for key, value in entries.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    if state:
        save_state(environment, node, state)
    else:
        remove_state(environment, node)
    return state


def remove_state(environment: str, node: str) -> None:
    directory = state_dir(environment, node)
    with contextlib.suppress(FileNotFoundError):
        (directory / STATE_FILE).unlink()
    # Only empty directories: a scratch server kept under it is removed by its owner first.
    for path in (directory, directory.parent):
        with contextlib.suppress(OSError):
            path.rmdir()


def owned_dir(path: Path, os_user: str | None) -> Path:
    """A directory drctl makes for the node's OS user to write in (made in-process)."""
    path.mkdir(parents=True, exist_ok=True)
    if os_user and os.geteuid() == 0 and os_user != "root":
        entry = pwd.getpwnam(os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o755)
    return path


# -- host facts ----------------------------------------------------------------------------------


def run_as(
    executor: LocalExecutor,
    argv: list[str],
    os_user: str | None,
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
) -> CommandResult:
    """A command on the host as the node's OS user, from a directory that user can enter."""
    return executor.run(
        argv, user=os_user, timeout=timeout, env=env, check=check, cwd="/", input=input
    )


def size_bytes(executor: LocalExecutor, path: str, os_user: str | None) -> int:
    out = run_as(executor, ["du", "-sb", path], os_user, timeout=120).stdout
    return int(out.split()[0])


def mtime(executor: LocalExecutor, path: str, os_user: str | None) -> float:
    argv = ["find", path, "-maxdepth", "0", "-printf", "%T@"]
    return float(run_as(executor, argv, os_user, timeout=10).stdout.strip())


def free_bytes(executor: LocalExecutor, path: str, os_user: str | None) -> tuple[int, str]:
    """Bytes available to the OS user where ``path`` is (or would be made), and that place."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    out = run_as(executor, ["df", "-B1", "--output=avail", str(probe)], os_user, timeout=10).stdout
    return int(out.strip().splitlines()[-1]), str(probe)


def mib(n: int | float) -> str:
    return f"{n / MIB:.1f} MiB"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def lsn_int(lsn: str) -> int:
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def stamp(now: float | None = None) -> str:
    """A UTC stamp for file names that sorts by time: 20260101T120000.123Z."""
    moment = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


STAMP_RE = re.compile(r"^\d{8}T\d{6}(\.\d{3})?Z")


# -- scratch servers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """A throwaway PostgreSQL server on 127.0.0.1 that drctl made and removes."""

    directory: str  # everything of it: data/ and server.log; removed whole
    port: int
    bin_dir: str
    os_user: str | None
    host: str  # the node whose host it runs on, for errors
    database: str = "postgres"
    kind: str = "backup"

    @property
    def data_dir(self) -> str:
        return f"{self.directory}/data"

    @property
    def log_file(self) -> str:
        return f"{self.directory}/server.log"

    def as_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Instance:
        return cls(
            directory=str(data["directory"]),
            port=int(data["port"]),
            bin_dir=str(data["bin_dir"]),
            os_user=data.get("os_user"),
            host=str(data["host"]),
            database=str(data.get("database", "postgres")),
            kind=str(data.get("kind", "backup")),
        )

    def executor(self) -> LocalExecutor:
        return LocalExecutor(host=self.host)

    def run(
        self,
        argv: list[str],
        *,
        timeout: float,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        return run_as(self.executor(), argv, self.os_user, timeout=timeout, env=env, check=check)

    def log_tail(self) -> str:
        result = self.run(
            ["tail", "-n", str(LOG_TAIL_LINES), self.log_file], timeout=10, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    def make_directory(self) -> None:
        self.run(["mkdir", "-p", self.directory], timeout=10)
        self.run(["chmod", "0755", self.directory], timeout=10)

    def start(self, timeout: float) -> float:
        """Start and wait until it accepts connections; returns the seconds it took."""
        started = time.monotonic()
        argv = [f"{self.bin_dir}/pg_ctl", "start", "-D", self.data_dir, "-l", self.log_file]
        wait = ["-w", "-t", str(max(1, int(timeout)))]
        try:
            self.run([*argv, *wait], timeout=timeout + 10)
        except DrillError as exc:
            tail = self.log_tail()
            raise CommandFailed(
                f"scratch server in {self.data_dir} (port {self.port}) did not start: "
                f"{_last_line(str(exc))}" + (f"; its log ends: {_one_line(tail)}" if tail else ""),
                returncode=1,
                host=self.host,
            ) from exc
        return time.monotonic() - started

    def postmaster_pid(self) -> int | None:
        result = self.run(
            ["head", "-n", "1", f"{self.data_dir}/postmaster.pid"], timeout=10, check=False
        )
        first = result.stdout.strip()
        return int(first) if result.returncode == 0 and first.isdigit() else None

    def stop_and_remove(self) -> list[str]:
        """Stop the server (fast, then immediate, then SIGKILL), wait for every process of it to
        be gone, and remove its directory. Returns what it did, one phrase each."""
        if not Path(self.directory).name.startswith(SCRATCH_PREFIX):
            raise InputError(
                f"refusing to remove {self.directory}: not a scratch directory drctl made",
                host=self.host,
            )
        done: list[str] = []
        pid = self.postmaster_pid()
        if pid is not None and _alive(pid):
            stopped = False
            for mode in ("fast", "immediate"):
                result = self.run(
                    [
                        f"{self.bin_dir}/pg_ctl",
                        "stop",
                        "-D",
                        self.data_dir,
                        "-m",
                        mode,
                        "-w",
                        "-t",
                        str(STOP_WAIT),
                    ],
                    timeout=STOP_WAIT + 10,
                    check=False,
                )
                if result.returncode == 0 or not _alive(pid):
                    stopped = True
                    done.append(f"stopped the scratch server on port {self.port} ({mode})")
                    break
            if not stopped:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, 9)
                done.append(f"killed the scratch server on port {self.port}")
        _wait_gone(self.data_dir)
        if Path(self.directory).exists():
            self.run(["rm", "-rf", "--", self.directory], timeout=300)
            done.append(f"removed {self.directory}")
        return done


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def processes_in(directory: str) -> list[int]:
    """Live processes whose working directory is ``directory`` (a postmaster and its children)."""
    target = os.path.realpath(directory)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == target and _alive(int(entry)):
            found.append(int(entry))
    return found


def _wait_gone(data_dir: str, timeout: float = 15.0) -> None:
    if not Path(data_dir).exists():
        return
    deadline = time.monotonic() + timeout
    while processes_in(data_dir):
        if time.monotonic() > deadline:
            for pid in processes_in(data_dir):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, 9)
            time.sleep(0.2)
            return
        time.sleep(0.05)


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text
