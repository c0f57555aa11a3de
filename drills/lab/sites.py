"""The sites ("hosts") of the two-site lab: setting them up as root, their PostgreSQL over SSH.

Setting a machine up is done locally as root: a site's OS user and directory, its sshd with a
generated host key, drctl's key authorized for the site's user; and later stopping that sshd
again by the pid recorded at start (a last-resort kill of what is left, too). PostgreSQL on a
site is only ever handled through an :class:`~drills.executors.ssh.SshExecutor` logged in as the
site's user: initdb, configuration files, pg_ctl, pg_basebackup, its processes.

Every address is in 127.0.0.0/8; every failure is a :class:`~drills.model.errors.LabError`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from drills.executors.postgres import SqlExecutor
from drills.executors.ssh import SshExecutor
from drills.lab.pgconf import DB_USER, server_conf
from drills.lab.processes import process_alive, reap
from drills.lab.sshd import SshdProcess, SshSite, ensure_os_user
from drills.model.errors import DrillError, ExecutorError, LabError

APP_ADDRESS = "127.0.0.4"  # the HIS stand-in
USER_HOMES = Path("/var/lib")  # the site users' homes (the users outlive the lab, like drctl-pg)
SSHD_STOP_TIMEOUT = 5.0  # seconds after SIGTERM before SIGKILL
PORT_ATTEMPTS = 50
START_TIMEOUT = 60  # pg_ctl -t for start
STREAMING_TIMEOUT = 30.0
EXIT_TIMEOUT = 15.0  # seconds for a stopped server's processes to be gone

# Lab only: trust from the whole loopback network (both sites and drctl live on 127.0.0.0/8).
# A real site would use scram-sha-256 and name its peers.
HBA = """\
# Written by `drctl lab up --sites 2`: trust, on loopback only (a lab, never a real site).
host    all          all  127.0.0.0/8  trust
host    replication  all  127.0.0.0/8  trust
"""
SITE_INCLUDE = "include_if_exists = '../site.conf'  # this host's own settings\n"


@dataclass(frozen=True)
class Site:
    """One site ("host"): its address, the OS user that owns its PostgreSQL, its files."""

    name: str  # site-a
    node: str  # pg1: the environment's node on this site
    role: str  # the role it is given at `up`
    address: str
    directory: Path

    @property
    def user(self) -> str:
        return f"drctl-{self.name}"

    @property
    def user_home(self) -> Path:
        return USER_HOMES / self.user

    @property
    def sshd_dir(self) -> Path:
        return self.directory / "sshd"

    @property
    def sshd_config(self) -> Path:
        return self.sshd_dir / "sshd_config"

    @property
    def data_dir(self) -> Path:
        return self.directory / "pg"

    @property
    def log_file(self) -> Path:
        return self.directory / "pg.log"

    @property
    def site_conf(self) -> Path:
        """The host's own settings (listen_addresses), included from postgresql.conf as
        ``../site.conf``: pg_rewind and pg_basebackup copy the data directory's configuration
        from the other site, and this file stays behind on each host."""
        return self.directory / "site.conf"


def lab_sites(lab_dir: Path) -> list[Site]:
    return [
        Site("site-a", "pg1", "primary", "127.0.0.2", lab_dir / "site-a"),
        Site("site-b", "pg2", "standby", "127.0.0.3", lab_dir / "site-b"),
    ]


# -- ports -------------------------------------------------------------------------------------


def port_free(address: str, port: int) -> bool:
    """Whether a server could listen on address:port (PostgreSQL and sshd set SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
            sock.listen(1)
        except OSError:
            return False
    return True


def common_free_port(addresses: list[str], avoid: tuple[int, ...] = ()) -> int:
    """One port number free on every address (two hosts listening on the same port)."""
    for address in addresses:
        if not address.startswith("127."):
            raise LabError(f"the lab uses loopback addresses only, not {address}")
    for _ in range(PORT_ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((addresses[0], 0))
            except OSError as exc:
                raise LabError(f"cannot bind to {addresses[0]}: {exc}") from exc
            port: int = sock.getsockname()[1]
        if port not in avoid and all(port_free(address, port) for address in addresses):
            return port
    raise LabError(f"found no port free on all of {', '.join(addresses)}")


# -- provisioning ------------------------------------------------------------------------------


def check_traversable(directory: Path, users: list[str]) -> None:
    """The site users must reach their directories under ``directory`` (and sshd their keys)."""
    for parent in [directory, *directory.parents]:
        if not parent.exists():
            continue
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise LabError(
                f"{parent} is not traversable by other users (mode {mode & 0o777:o}), so the "
                f"site users ({', '.join(users)}) cannot reach their directories under "
                f"{directory}: chmod o+x {parent}, or set DRCTL_HOME to a directory they can "
                "reach (e.g. DRCTL_HOME=/var/lib/drctl)"
            )


def provision_site(site: Site) -> list[str]:
    """The site's OS user, and its directory owned by that user (the sshd directory root's)."""
    messages = ensure_os_user(site.user, site.user_home)
    entry = pwd.getpwnam(site.user)
    try:
        site.directory.mkdir(mode=0o755, exist_ok=True)
        os.chown(site.directory, entry.pw_uid, entry.pw_gid)
        site.directory.chmod(0o755)
    except OSError as exc:
        raise LabError(f"cannot make the directory {site.directory} of {site.name}: {exc}") from exc
    return messages


def start_site_sshd(site: Site, port: int, authorized_key: str) -> SshdProcess:
    """Start (or start again, keeping its host key) the site's sshd; only its user may log in."""
    ssh_site = SshSite(
        directory=site.sshd_dir,
        address=site.address,
        port=port,
        allow_users=[site.user],
        authorized_keys={site.user: authorized_key},
    )
    return ssh_site.start()


# -- processes, by pid -------------------------------------------------------------------------


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def is_site_sshd(pid: int | None, config: Path) -> bool:
    """Whether ``pid`` is alive and is the sshd started with ``config`` (not a reused pid)."""
    if pid is None or pid <= 0 or not process_alive(pid):
        return False
    line = cmdline(pid)
    return "sshd" in line and str(config) in line


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (an sshd's connections and their commands)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_sshd(pid: int | None, config: Path) -> bool:
    """Stop the sshd ``pid`` if it is the one started with ``config``: SIGTERM, then SIGKILL;
    its connections too. True when there was one to stop."""
    if pid is None or not is_site_sshd(pid, config):
        return False
    sessions = descendants(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + SSHD_STOP_TIMEOUT
    while process_alive(pid) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.02)
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for session in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(session, signal.SIGKILL)
    deadline = time.monotonic() + SSHD_STOP_TIMEOUT
    while process_alive(pid) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.02)
    reap(pid)
    if process_alive(pid):
        raise LabError(f"sshd (pid {pid}, {config}) did not exit, even after SIGKILL")
    return True


def processes_of(site: Site) -> list[int]:
    """Live processes of a site: its PostgreSQL's (working in its data directory) and any
    process whose command line names the site's directory (its sshd)."""
    data_dir = str(site.data_dir)
    marker = str(site.directory) + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        if (cwd == data_dir or marker in cmdline(pid)) and process_alive(pid):
            found.append(pid)
    return found


def kill_site_processes(site: Site, timeout: float = 10.0) -> list[int]:
    """Last resort, as the host's root: SIGKILL what is left of a site; the pids it killed."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        left = processes_of(site)
        if not left:
            return killed
        if time.monotonic() > deadline:
            raise LabError(
                f"processes {', '.join(map(str, left))} of {site.name} ({site.directory}) "
                "did not exit, even after SIGKILL"
            )
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reap(pid)
            if pid not in killed:
                killed.append(pid)
        time.sleep(0.05)


# -- PostgreSQL on a site, over SSH as the site's user ------------------------------------------


def make_primary(executor: SshExecutor, site: Site, pg_bin: Path, port: int) -> None:
    """initdb, the configuration files, pg_ctl start."""
    data_dir = str(site.data_dir)
    executor.run(
        [
            *(f"{pg_bin}/initdb", "-D", data_dir, "-U", DB_USER, "--auth=trust"),
            *("--data-checksums", "-E", "UTF8", "--locale=C"),
        ],
        timeout=120,
    )
    conf = f"{data_dir}/postgresql.conf"
    text = executor.read_file(conf) or ""
    executor.write_file(conf, text + server_conf(port, listen=None) + SITE_INCLUDE)
    executor.write_file(f"{data_dir}/pg_hba.conf", HBA)
    write_site_conf(executor, site)
    pg_ctl_start(executor, site, pg_bin)


def make_standby(executor: SshExecutor, site: Site, primary: Site, pg_bin: Path, port: int) -> None:
    """pg_basebackup from ``primary``, the standby's settings, pg_ctl start."""
    data_dir = str(site.data_dir)
    write_site_conf(executor, site)
    executor.run(
        [
            *(f"{pg_bin}/pg_basebackup", "-h", primary.address),
            *("-p", str(port), "-U", DB_USER, "-D", data_dir),
            *("-R", "-X", "stream", "-c", "fast"),
        ],
        timeout=300,
    )
    primary_conninfo = (
        f"host={primary.address} port={port} user={DB_USER} application_name={site.node}"
    )
    executor.write_file(
        f"{data_dir}/postgresql.auto.conf",
        "# Do not edit this file manually!\n"
        "# It will be overwritten by the ALTER SYSTEM command.\n"
        f"primary_conninfo = '{primary_conninfo}'\n",
    )
    executor.write_file(f"{data_dir}/standby.signal", "")
    pg_ctl_start(executor, site, pg_bin)


def write_site_conf(executor: SshExecutor, site: Site) -> None:
    # Outside the data directory, so pg_rewind and pg_basebackup (which copy the other
    # site's configuration) leave each host listening on its own address.
    executor.write_file(
        str(site.site_conf),
        f"# {site.name}'s own PostgreSQL settings (`drctl lab up --sites 2`)\n"
        f"listen_addresses = '{site.address}'\n",
        mode=0o644,
    )


def pg_ctl_start(executor: SshExecutor, site: Site, pg_bin: Path) -> None:
    executor.run(
        [
            *(f"{pg_bin}/pg_ctl", "-D", str(site.data_dir), "-l", str(site.log_file)),
            *("-w", "-t", str(START_TIMEOUT), "start"),
        ],
        timeout=START_TIMEOUT + 30,
    )
    # pg_ctl exits 0 when a standby's postmaster fails at once: look at it.
    if executor.instance_processes(str(site.data_dir)).state != "running":
        raise LabError(f"{site.node} on {site.name} stopped right after `pg_ctl start`")


def wait_streaming(primary_dsn: str, primary: Site, on_standby: SshExecutor, site: Site) -> None:
    """Until ``primary`` reports ``site``'s node streaming (or the standby exited)."""
    sql = SqlExecutor(primary_dsn, host=primary.node)
    deadline = time.monotonic() + STREAMING_TIMEOUT
    last = "no answer yet"
    while True:
        try:
            state = sql.scalar(
                "select state from pg_stat_replication where application_name = %s",
                [site.node],
                timeout=5,
            )
        except DrillError as exc:
            last = f"cannot query {primary.node}: {exc}"
        else:
            if state == "streaming":
                return
            last = f"state {state!r}" if state else f"{site.node} not in pg_stat_replication"
        if on_standby.instance_processes(str(site.data_dir)).state != "running":
            raise LabError(f"standby {site.node} on {site.name} exited")
        if time.monotonic() > deadline:
            raise LabError(
                f"standby {site.node} did not stream from {primary.node} within "
                f"{STREAMING_TIMEOUT:g}s ({last})"
            )
        time.sleep(0.1)


def stop_postgres(executor: SshExecutor, site: Site, pg_bin: Path | None) -> int | None:
    """Stop a site's server over SSH: pg_ctl fast, then immediate, then its pids killed."""
    data_dir = str(site.data_dir)
    processes = executor.instance_processes(data_dir)
    pid = (
        processes.postmaster.pid if processes.state == "running" and processes.postmaster else None
    )
    if pid is not None and pg_bin is not None:
        for mode, wait in (("fast", 30), ("immediate", 10)):
            argv = [f"{pg_bin}/pg_ctl", "-D", data_dir, "-w", "-t", str(wait), "-m", mode]
            try:
                executor.run([*argv, "stop"], timeout=wait + 15)
                break
            except ExecutorError:
                if executor.instance_processes(data_dir).state != "running":
                    break
    wait_gone(executor, site)
    return pid


def wait_gone(executor: SshExecutor, site: Site, *, reaped: bool = False) -> None:
    """Every process of the site's server gone (children linger after a kill -9). ``reaped``:
    also the dead postmaster's pid released, which a new postmaster needs: while its parent
    has not reaped it, the pid in postmaster.pid still exists and PostgreSQL refuses to start."""
    deadline = time.monotonic() + EXIT_TIMEOUT
    grace = time.monotonic() + 2
    while True:
        processes = executor.instance_processes(str(site.data_dir))
        left = processes.live_pids
        if not left and not (reaped and processes.postmaster is not None):
            return
        if time.monotonic() > deadline:
            what = f"processes {left}" if left else f"the dead postmaster {processes.pid_file_pid}"
            raise LabError(f"{what} of {site.node} on {site.name} did not go away")
        if left and time.monotonic() > grace:
            executor.signal(left, "KILL")
        time.sleep(0.05)
