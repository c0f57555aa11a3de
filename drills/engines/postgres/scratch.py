"""What the backup, restore and migration actions share: where their work lives on a node, a
run's state, and throwaway ("scratch") servers.

**Everything happens on the node.** The orchestrator usually runs on a third host. A backup, a
dump, a scratch restore and a migration step do their work on the host of the node the step
names (its target role), through that node's host executor (``Targets.host``, local or SSH), as
the node's database OS user: directories, ports, processes, files, sizes, free space and every
command. Nothing here runs a local process, reads a local path or opens a local socket on a
node's behalf; the step data say which host did the work (``host``: the node, ``address``: how
it was reached).

**Where, on the node.** drctl keeps its work beside the node's data directory::

    <work dir>/drctl-backups/<environment>/<node>/base    pg.basebackup's backups
    <work dir>/drctl-backups/<environment>/<node>/dump    pg.dump's dumps
    <work dir>/drctl-scratch-<environment>-<node>/        the scratch server (data/, server.log)

where ``<work dir>`` is the parent of ``postgres.data_dir`` (``/var/lib/postgresql/15`` for
``/var/lib/postgresql/15/main``), which the database's OS user can usually write. Steps take
``backup_dir`` / ``scratch_dir`` to put them elsewhere.

**State.** What earlier steps of the run made (the backup, the dump, the scratch server) is in
the run's state, ``$DRCTL_HOME/scratch/<environment>/<node>/state.json``: the ORCHESTRATOR's
own file, read and written in-process where drctl runs (``drills.engines.postgres.runstate``).

**Scratch servers.** A scratch server is a PostgreSQL server drctl makes on the node's host to
prove that a backup or a dump comes back: its own directory, a free port on the node's own
address (``node.host``: 127.0.0.3 at the two-site lab's second site; a real site's scratch server
listens on the node's network address), run as the node's OS user, no Unix socket. drctl connects
to it there from wherever it runs. Its ``pg_hba.conf`` trusts connections from the node's address
and from 127.0.0.1 (a throwaway copy, reachable only from the node itself, or from loopback in
the lab); any other address needs the node's password (scram), as the source does. It is removed
at the end of the run, whatever became of it.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from drills.engine.catalogue import ActionResult
from drills.engines.postgres.runstate import load_state, update_state
from drills.executors.host import CommandResult, HostExecutor
from drills.executors.postgres import node_dsn, redact
from drills.model.environment import Node, PostgresAccess, read_password
from drills.model.errors import CommandFailed, DrillError, InputError

if TYPE_CHECKING:
    from drills.engine.targets import Targets

MIB = 1024 * 1024
SCRATCH_PREFIX = "drctl-scratch-"
BACKUPS_DIR = "drctl-backups"
LOG_TAIL_LINES = 8
STOP_WAIT = 20  # pg_ctl -t for stopping a scratch server
GONE_WAIT = 15.0  # seconds for a stopped server's processes to go before they are killed


class ActionFailed(CommandFailed):
    """An action that ran and found a fault; ``data`` keeps what it measured for the record."""

    def __init__(self, message: str, *, host: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, returncode=1, host=host)
        self.data: dict[str, Any] = dict(data or {})


def action_result(output: str, data: dict[str, Any]) -> ActionResult:
    return ActionResult(output, data)


# -- the node a step acts on ---------------------------------------------------------------------


def node_of(targets: Targets, role: str) -> tuple[str, Node, PostgresAccess, str]:
    """(node name, node, its postgres section, environment name) of a role."""
    name, node, pg = targets.postgres(role)
    return name, node, pg, targets.env.name


def where(targets: Targets, role: str) -> dict[str, str]:
    """Which host did a step's work, for its data: the node and how it was reached."""
    name, _ = targets.node(role)
    return {"host": name, "address": targets.host(role).address}


def run_on(
    targets: Targets,
    role: str,
    argv: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
) -> CommandResult:
    """A command on the role's host, as the owner of its database files."""
    return targets.host(role).run(
        argv, user=targets.os_user(role), timeout=timeout, env=env, check=check, input=input
    )


def password_env(node: Node) -> dict[str, str]:
    """PGPASSWORD for a client program, when the node's password is configured."""
    if node.postgres is None:
        return {}
    password = read_password(node.postgres)
    return {"PGPASSWORD": password} if password is not None else {}


def client_conninfo(node: Node, **overrides: Any) -> str:
    """A DSN for a client program's command line: never with the password (that goes in
    PGPASSWORD)."""
    return redact(node_dsn(node, application_name="drctl", **overrides))


# -- where drctl's work lives on a node ----------------------------------------------------------


def work_dir(node: Node) -> str:
    """The directory on the node's host beside its data directory (the parent of
    ``postgres.data_dir``), under which drctl keeps backups and scratch servers by default."""
    assert node.postgres is not None
    data_dir = node.postgres.data_dir.rstrip("/") or "/"
    return posixpath.dirname(data_dir) or "/"


def default_backup_dir(environment: str, name: str, node: Node, kind: str = "base") -> str:
    """``<work dir>/drctl-backups/<environment>/<node>/<kind>`` on the node's host."""
    return posixpath.join(work_dir(node), BACKUPS_DIR, environment, name, kind)


def scratch_directory(environment: str, name: str, node: Node, scratch_dir: str | None) -> str:
    """The scratch server's own directory: under ``scratch_dir``, or beside the data directory."""
    root = (scratch_dir.rstrip("/") or "/") if scratch_dir else work_dir(node)
    return posixpath.join(root, f"{SCRATCH_PREFIX}{environment}-{name}")


def make_owned_dir(host: HostExecutor, path: str, os_user: str | None) -> None:
    """Make ``path`` (and its parents) on the host, owned by the node's OS user: as the login
    user giving it away (root, locally), or else as the OS user itself (an SSH login with
    ``become``, where the OS user may write the parent)."""
    if host.exists(path, user=os_user):
        return
    try:
        host.make_dirs(path, owner=os_user, mode=0o700)
    except DrillError:
        if os_user is None:
            raise
        host.make_dirs(path, mode=0o700, user=os_user)


# -- host facts ----------------------------------------------------------------------------------

_NEAREST = 'p="$1"; while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done; echo "$p"'


def size_bytes(host: HostExecutor, path: str, os_user: str | None) -> int:
    out = host.run(["du", "-sb", "--", path], user=os_user, timeout=120).stdout
    return int(out.split()[0])


def mtime(host: HostExecutor, path: str, os_user: str | None) -> float:
    argv = ["find", path, "-maxdepth", "0", "-printf", "%T@"]
    return float(host.run(argv, user=os_user, timeout=10).stdout.strip())


def free_bytes(host: HostExecutor, path: str, os_user: str | None) -> tuple[int, str]:
    """Bytes available where ``path`` is (or would be made) on the host, and that place."""
    place = host.run(["sh", "-c", _NEAREST, "sh", path], user=os_user, timeout=10).stdout.strip()
    return host.disk_usage(place or "/", user=os_user).free_bytes, place or "/"


def mib(n: int | float) -> str:
    return f"{n / MIB:.1f} MiB"


def lsn_int(lsn: str) -> int:
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def stamp(now: float | None = None) -> str:
    """A UTC stamp for file names that sorts by time: 20260101T120000.123Z."""
    moment = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


STAMP_RE = re.compile(r"^\d{8}T\d{6}(\.\d{3})?Z")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def last_line(text: str, default: str = "no output") -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else default


def one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


# -- scratch servers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """A throwaway PostgreSQL server on a node's host, as the run's state remembers it."""

    directory: str  # everything of it: data/ and server.log; removed whole
    port: int
    address: str  # where it listens and drctl connects: the node's own address
    bin_dir: str
    os_user: str | None
    node: str  # the node on whose host it runs
    database: str = "postgres"
    kind: str = "backup"

    @property
    def data_dir(self) -> str:
        return f"{self.directory}/data"

    @property
    def log_file(self) -> str:
        return f"{self.directory}/server.log"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    def as_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Instance:
        return cls(
            directory=str(data["directory"]),
            port=int(data["port"]),
            address=str(data.get("address", "127.0.0.1")),  # state from before 'address'
            bin_dir=str(data["bin_dir"]),
            os_user=data.get("os_user"),
            node=str(data.get("node", data.get("host", ""))),
            database=str(data.get("database", "postgres")),
            kind=str(data.get("kind", "backup")),
        )


def scratch_hba(address: str, *, password: bool) -> str:
    """pg_hba.conf lines of a scratch server: trust from the node's own address and from
    127.0.0.1; from anywhere else the node's password (scram), when it has one."""
    try:
        ip = ipaddress.ip_address(address)
        own = f"{ip}/{ip.max_prefixlen}"
    except ValueError:
        own = address  # a host name: pg_hba takes it without a mask
    lines = ["# ---- drctl scratch server: a throwaway copy ----"]
    lines += [f"host all all {a} trust" for a in dict.fromkeys([own, "127.0.0.1/32"])]
    if password:
        lines.append("host all all all scram-sha-256")
    return "\n".join(lines) + "\n"


def trusted_phrase(address: str) -> str:
    """What ``plan`` says of a scratch server's pg_hba.conf."""
    return "127.0.0.1" if address == "127.0.0.1" else f"{address} and 127.0.0.1"


def scratch_dsn(node: Node, instance: Instance, *, password: bool = True) -> str:
    return node_dsn(
        node,
        with_password=password,
        host=instance.address,
        port=instance.port,
        dbname=instance.database,
        application_name="drctl",
    )


class ScratchServer:
    """A scratch ``Instance`` and the host executor of the node it runs on: every command and
    file of it goes through that executor, as the instance's OS user."""

    def __init__(self, instance: Instance, host: HostExecutor) -> None:
        self.instance = instance
        self.host = host

    def run(
        self,
        argv: list[str],
        *,
        timeout: float,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        return self.host.run(
            argv, user=self.instance.os_user, timeout=timeout, env=env, check=check
        )

    def read_file(self, path: str) -> str | None:
        return self.host.read_file(path, user=self.instance.os_user)

    def write_file(self, path: str, text: str) -> None:
        self.host.write_file(path, text, user=self.instance.os_user, mode=0o600)

    def make_directory(self) -> None:
        make_owned_dir(self.host, self.instance.directory, self.instance.os_user)

    def log_tail(self) -> str:
        result = self.run(
            ["tail", "-n", str(LOG_TAIL_LINES), self.instance.log_file], timeout=10, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    def start(self, timeout: float) -> float:
        """Start and wait until it accepts connections; returns the seconds it took."""
        i = self.instance
        started = time.monotonic()
        argv = [f"{i.bin_dir}/pg_ctl", "start", "-D", i.data_dir, "-l", i.log_file]
        try:
            self.run([*argv, "-w", "-t", str(max(1, int(timeout)))], timeout=timeout + 10)
        except DrillError as exc:
            tail = self.log_tail()
            raise CommandFailed(
                f"scratch server in {i.data_dir} ({i.endpoint}) on {i.node} did not start: "
                f"{last_line(str(exc))}" + (f"; its log ends: {one_line(tail)}" if tail else ""),
                returncode=1,
                host=i.node,
            ) from exc
        return time.monotonic() - started

    def live_pids(self) -> list[int]:
        return self.host.instance_processes(
            self.instance.data_dir, user=self.instance.os_user
        ).live_pids

    def stop_and_remove(self) -> list[str]:
        """Stop the server (fast, then immediate, then SIGKILL), wait for every process of it to
        be gone, and remove its directory. Returns what it did, one phrase each."""
        i = self.instance
        if not posixpath.basename(i.directory.rstrip("/")).startswith(SCRATCH_PREFIX):
            raise InputError(
                f"refusing to remove {i.directory} on {i.node}: not a scratch directory drctl made",
                host=i.node,
            )
        done: list[str] = []
        procs = self.host.instance_processes(i.data_dir, user=i.os_user)
        if procs.state != "not running" or procs.live_pids:
            for mode in ("fast", "immediate"):
                argv = [f"{i.bin_dir}/pg_ctl", "stop", "-D", i.data_dir, "-m", mode]
                result = self.run(
                    [*argv, "-w", "-t", str(STOP_WAIT)], timeout=STOP_WAIT + 10, check=False
                )
                if result.returncode == 0 or not self.live_pids():
                    done.append(f"stopped the scratch server on {i.endpoint} ({mode})")
                    break
            else:
                self.host.signal(self.live_pids(), "KILL", user=i.os_user)
                done.append(f"killed the scratch server on {i.endpoint}")
        self.wait_gone()
        if self.host.exists(i.directory, user=i.os_user):
            removed = self.run(["rm", "-rf", "--", i.directory], timeout=300, check=False)
            if removed.returncode != 0 and self.host.exists(i.directory, user=i.os_user):
                # Its contents are the OS user's; the directory itself may sit where only the
                # login user (who made it for the OS user) may remove an entry.
                self.host.run(["rm", "-rf", "--", i.directory], timeout=300)
            done.append(f"removed {i.directory} on {i.node}")
        return done

    def wait_gone(self, timeout: float = GONE_WAIT) -> list[int]:
        """Wait for the processes of the data directory to go; kill what is left at the end.
        Returns the pids still there after that (none, normally)."""
        deadline = time.monotonic() + timeout
        while left := self.live_pids():
            if time.monotonic() > deadline:
                self.host.signal(left, "KILL", user=self.instance.os_user)
                time.sleep(0.2)
                return self.live_pids()
            time.sleep(0.05)
        return []


def init_instance(
    server: ScratchServer, *, user: str, password: str | None, timeout: float
) -> None:
    """initdb a fresh server in the instance's directory for scratch use: listening on its
    address and port only, no Unix socket, fsync off (it is thrown away)."""
    i = server.instance
    server.make_directory()
    argv = [f"{i.bin_dir}/initdb", "-D", i.data_dir, "-U", user, "-E", "UTF8", "--locale=C", "-N"]
    argv.append("--auth=trust")  # pg_hba.conf is written below
    pwfile = f"{i.directory}/.pwfile"
    if password is not None:
        server.write_file(pwfile, password + "\n")
        argv.append(f"--pwfile={pwfile}")
    try:
        server.run(argv, timeout=timeout)
    finally:
        if password is not None:
            server.run(["rm", "-f", "--", pwfile], timeout=10, check=False)
    server.write_file(f"{i.data_dir}/pg_hba.conf", scratch_hba(i.address, password=bool(password)))
    auto_conf = f"{i.data_dir}/postgresql.auto.conf"
    settings = [
        "# ---- drctl scratch server ----",
        f"port = {i.port}",
        f"listen_addresses = '{i.address}'",
        "unix_socket_directories = ''",
        "fsync = off",
        "synchronous_commit = off",
        "full_page_writes = off",
        "logging_collector = off",
        "max_connections = 30",
        "",
    ]
    server.write_file(auto_conf, (server.read_file(auto_conf) or "") + "\n".join(settings))


def new_instance(
    targets: Targets, role: str, scratch_dir: str | None, *, kind: str, database: str
) -> ScratchServer:
    """A scratch server to be made on the role's host: its directory, and a free port on the
    node's own address (both on that host)."""
    name, node, pg, env = node_of(targets, role)
    host = targets.host(role)
    instance = Instance(
        directory=scratch_directory(env, name, node, scratch_dir),
        port=host.free_port(node.host),
        address=node.host,
        bin_dir=pg.bin_dir,
        os_user=pg.os_user,
        node=name,
        database=database,
        kind=kind,
    )
    return ScratchServer(instance, host)


def scratch_of(targets: Targets, role: str, data: dict[str, Any]) -> ScratchServer:
    """The scratch server the role's node's run state names, on that node's host (where it was
    made: each node's state names only its own)."""
    return ScratchServer(Instance.from_state(data), targets.host(role))


def drop_leftover(targets: Targets, role: str) -> list[str]:
    """A scratch server an earlier (crashed) run left: stop and remove it first."""
    name, _, _, env = node_of(targets, role)
    left = load_state(env, name).get("scratch")
    if not isinstance(left, dict):
        return []
    done = scratch_of(targets, role, left).stop_and_remove()
    update_state(env, name, scratch=None)
    return [f"an earlier run left a scratch server: {'; '.join(done) or 'nothing was running'}"]


def space_check(
    targets: Targets, role: str, server: ScratchServer, data_bytes: int, headroom: int, what: str
) -> dict[str, Any]:
    """Enough free space on the node's host where the scratch server goes, before writing."""
    name = server.instance.node
    needed = data_bytes + headroom
    available, place = free_bytes(server.host, server.instance.directory, server.instance.os_user)
    facts: dict[str, Any] = where(targets, role) | {
        "scratch_dir": server.instance.directory,
        "free_bytes": available,
        "needed_bytes": needed,
    }
    if available < needed:
        raise ActionFailed(
            f"not enough space for the scratch server: {place} on {name} has {mib(available)} "
            f"free, and restoring {what} needs {mib(needed)} ({mib(data_bytes)} of data and "
            f"{mib(headroom)} headroom); nothing was written",
            host=name,
            data=facts,
        )
    return facts
