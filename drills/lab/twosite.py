"""The two-site lab (`drctl lab up --sites 2`): two "hosts" that drctl reaches only over SSH.

Site A (127.0.0.2) runs the primary pg1, site B (127.0.0.3) the streaming standby pg2; each site
has its own sshd with a generated host key and its own OS user (``drctl-site-a``,
``drctl-site-b``) owning its PostgreSQL. Both servers listen on the same port number, each on
its own address; the HIS stand-in listens on 127.0.0.4 and follows the primary. Layout::

    $DRCTL_HOME/lab-ssh/
      lab.json                 state: ports, sshd pids, users, paths, ready flag
      drctl_ed25519(.pub)      drctl's key, authorized for both site users
      known_hosts              both sites' host keys ([127.0.0.2]:PORT ...)
      site-a/  site-b/         a site's files, owned by its user: pg/ (data), pg.log,
                               site.conf (listen_addresses), sshd/ (root's)
      his.json  his.log        the HIS stand-in
      pgsql-<version>/         a copy of the binaries, only when the site users cannot run them
    $DRCTL_HOME/environments/lab-ssh.yaml

Setting the hosts up (users, directories, keys, sshd) is done locally as root. Everything about
PostgreSQL after that (initdb, its configuration files, pg_ctl, pg_basebackup, its processes)
goes through :class:`~drills.executors.ssh.SshExecutor` built from the environment this lab
writes, so the lab exercises the path the drills take. ``down`` stops what ``up`` started by
the pids it recorded, and works after a failed ``up`` or a crash.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from psycopg import conninfo
from pydantic import ValidationError

from drills.executors.postgres import SqlExecutor, node_dsn
from drills.executors.ssh import SshExecutor
from drills.lab import his, link
from drills.lab.binaries import find_pg_bin, reachable_bin
from drills.lab.files import atomic_write, describe_error, lab_errors, log_tail, remove_path
from drills.lab.pgconf import CONNECT_TIMEOUT, DATABASE, DB_USER
from drills.lab.primaryguard import GuardNode, SecondPrimaryRefused, check_start, refusal
from drills.lab.sites import (
    APP_ADDRESS,
    Site,
    check_traversable,
    common_free_port,
    is_site_sshd,
    kill_site_processes,
    lab_sites,
    make_primary,
    make_standby,
    pg_ctl_start,
    provision_site,
    start_site_sshd,
    stop_postgres,
    stop_sshd,
    wait_gone,
    wait_streaming,
)
from drills.lab.sshd import generate_key, public_key_line, sshd_available
from drills.model.environment import Environment
from drills.model.errors import DrillError, LabError

ENVIRONMENT_NAME = "lab-ssh"
LAB_DIR = "lab-ssh"
STATE_FORMAT = 1


@dataclass(frozen=True)
class SiteStatus:
    """One site as it is now: the server's live role and pid, and the site's sshd."""

    name: str  # the node: pg1, pg2
    role: str  # primary, standby or down (asked of PostgreSQL)
    host: str
    port: int
    data_dir: str
    dsn: str
    pid: int | None  # the postmaster, as the site's host reports it over SSH
    site: str
    os_user: str
    sshd_port: int
    sshd_pid: int | None
    sshd_alive: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class UpResult:
    created: bool
    nodes: list[SiteStatus]
    environment_file: Path
    messages: list[str]


@dataclass(frozen=True)
class DownResult:
    had_lab: bool
    stopped: list[str]
    messages: list[str]


@dataclass
class _State:
    ready: bool = False
    pg_bin: Path | None = None
    pg_port: int = 0
    ssh_port: int = 0
    sshd_pids: dict[str, int] = field(default_factory=dict)


def not_available_error() -> LabError | None:
    """Why the two-site lab cannot run here (as a LabError), or None."""
    problem = sshd_available()
    if problem is None:
        return None
    return LabError(
        f"`drctl lab up --sites 2` cannot run here: {problem}. It runs one sshd per site "
        "and its PostgreSQL as the sites' OS users, which needs root; `drctl lab up` (the "
        "one-host lab) needs neither"
    )


class TwoSiteLab:
    """The two-site lab kept under ``home`` (``DRCTL_HOME``)."""

    def __init__(self, home: Path, *, pg_bin: str | None = None) -> None:
        self.home = Path(home).absolute()
        self.pg_bin = pg_bin
        self.lab_dir = self.home / LAB_DIR
        self.state_file = self.lab_dir / "lab.json"
        self.key_file = self.lab_dir / "drctl_ed25519"
        self.known_hosts = self.lab_dir / "known_hosts"
        self.his_state = self.lab_dir / "his.json"
        self.his_log = self.lab_dir / "his.log"
        self.environment_file = self.home / "environments" / f"{ENVIRONMENT_NAME}.yaml"
        self.sites = lab_sites(self.lab_dir)

    # ------------------------------------------------------------------ public

    def exists(self) -> bool:
        return self.state_file.exists()

    def up(self, *, link_proxy: bool = False) -> UpResult:
        """``link_proxy``: site B's standby streams through the lab's link proxy
        (:mod:`drills.lab.link`); a proxy that ran before is started again either way."""
        with lab_errors("lab up --sites 2 failed"):
            unavailable = not_available_error()
            if unavailable is not None:
                raise unavailable
            result = self._create() if not self.exists() else self._up_again()
            if link_proxy or link.state_file(self.lab_dir).exists():
                route = link.route_standby(self._environment(self._load_state()), self.lab_dir)
                result.messages.append(route.message)
            return result

    def _up_again(self) -> UpResult:
        try:
            return self._up_existing()
        except SecondPrimaryRefused:
            raise
        except DrillError as exc:
            raise LabError(
                f"could not start the two-site lab in {self.lab_dir} again: "
                f"{describe_error(exc)}; run `drctl lab down --sites 2` first, then "
                "`drctl lab up --sites 2`"
            ) from exc

    def status(self) -> list[SiteStatus]:
        state = self._load_state()
        with lab_errors("lab status (two sites) failed"):
            environment = self._environment(state)
            return [self._site_status(site, state, environment) for site in self.sites]

    def app_status(self) -> dict[str, object] | None:
        return his.app_status(self.his_state)

    def down(self) -> DownResult:
        with lab_errors("lab down --sites 2 failed"):
            if not self.exists():
                return DownResult(False, [], ["there is no two-site lab"])
            stopped, messages, problems = self._teardown(self._load_state(lenient=True))
            if problems:
                raise LabError("lab down --sites 2 failed: " + "; ".join(problems))
            messages.append(
                f"removed {self.lab_dir}'s sites and state, and {self.environment_file}"
            )
            return DownResult(True, stopped, messages)

    # ------------------------------------------------------------------ up

    def _create(self) -> UpResult:
        pg_bin = find_pg_bin(self.pg_bin)
        for path in [*(s.directory for s in self.sites), self.key_file, self.known_hosts]:
            if path.exists():
                raise LabError(
                    f"{path} exists but there is no lab state ({self.state_file}): remove it "
                    "(stop anything using it first) and run `drctl lab up --sites 2` again"
                )
        check_traversable(self.home, [s.user for s in self.sites])
        addresses = [s.address for s in self.sites]
        ssh_port = common_free_port(addresses)
        pg_port = common_free_port(addresses, (ssh_port,))
        state = _State(pg_bin=pg_bin, pg_port=pg_port, ssh_port=ssh_port)
        self._environment(state)  # validates what it will write before anything is made
        messages: list[str] = []
        primary, standby = self.sites
        step, site_log = f"creating {self.lab_dir}", None
        try:
            self.lab_dir.mkdir(parents=True, exist_ok=True)
            self.lab_dir.chmod(0o755)
            self._write_state(state)
            step = f"generating drctl's SSH key {self.key_file}"
            pubkey = generate_key(self.key_file, f"drctl lab-ssh {self.lab_dir}")
            lines = []
            for site in self.sites:
                step = f"setting up {site.name} ({site.address}): OS user {site.user}, sshd"
                messages += provision_site(site)
                sshd = start_site_sshd(site, ssh_port, pubkey)
                state.sshd_pids[site.name] = sshd.pid
                self._write_state(state)
                lines.append(sshd.known_hosts_line)
                messages.append(f"{site.name}: sshd on {sshd.endpoint} (pid {sshd.pid})")
            atomic_write(self.known_hosts, "\n".join(lines) + "\n")
            pg_bin_now = pg_bin
            for site in self.sites:
                step = f"checking that {site.user} can run the PostgreSQL binaries"
                pg_bin_now, copied = reachable_bin(pg_bin, site.user, self.lab_dir)
                messages += copied
            state.pg_bin = pg_bin_now
            self._write_state(state)
            environment = self._environment(state)
            with (
                self._executor(environment, primary) as on_a,
                self._executor(environment, standby) as on_b,
            ):
                step, site_log = f"creating {primary.node} on {primary.name} over SSH", primary
                make_primary(on_a, primary, pg_bin_now, state.pg_port)
                step, site_log = f"copying {primary.node} to {standby.name} over SSH", standby
                make_standby(on_b, standby, primary, pg_bin_now, state.pg_port)
                step = f"waiting for {standby.node} to stream from {primary.node}"
                wait_streaming(node_dsn(environment.nodes[primary.node]), primary, on_b, standby)
            step, site_log = "starting the HIS stand-in on " + APP_ADDRESS, None
            app = his.start(self.his_state, self.his_log, self._his_dsn(state), host=APP_ADDRESS)
            step = f"writing {self.environment_file}"
            self._write_environment(state, app.port)
            state.ready = True
            self._write_state(state)
        except BaseException as exc:
            tail = log_tail(site_log.log_file) if site_log else ""
            _, _, problems = self._teardown(state)
            if not isinstance(exc, Exception):
                raise
            message = f"lab up --sites 2 failed while {step}: {describe_error(exc)}"
            if tail:
                message += f"\nlast lines of {site_log.log_file if site_log else ''}:\n{tail}"
            message += (
                "\nwhat it had created was removed again"
                if not problems
                else "\ncleaning up also failed: " + "; ".join(problems)
            )
            raise LabError(message) from exc
        messages.append(
            f"{primary.node} (primary) on {primary.address}:{state.pg_port}, {standby.node} "
            f"(standby) on {standby.address}:{state.pg_port}, streaming; reached over SSH only"
        )
        messages.append(f"HIS stand-in on {app.base_url} (pid {app.pid}), following the primary")
        messages.append(f"wrote {self.environment_file}: use --env {ENVIRONMENT_NAME}")
        return UpResult(True, self.status(), self.environment_file, messages)

    def _up_existing(self) -> UpResult:
        state = self._load_state()
        if not state.ready or state.pg_bin is None:
            raise LabError("it was never finished (lab.json says it is not ready)")
        messages: list[str] = []
        pubkey = public_key_line(self.key_file.with_name(self.key_file.name + ".pub"))
        for site in self.sites:
            if not is_site_sshd(state.sshd_pids.get(site.name), site.sshd_config):
                sshd = start_site_sshd(site, state.ssh_port, pubkey)  # same host key
                state.sshd_pids[site.name] = sshd.pid
                self._write_state(state)
                messages.append(f"started the sshd of {site.name} again (pid {sshd.pid})")
        environment = self._environment(state)
        executors = {site.node: self._executor(environment, site) for site in self.sites}
        started: list[str] = []
        try:
            plan = check_start(self._guard_nodes(environment, executors), state.pg_bin)
            for node in plan.start:
                site = next(s for s in self.sites if s.node == node)
                wait_gone(executors[node], site, reaped=True)
                pg_ctl_start(executors[node], site, state.pg_bin)
                messages.append(f"started {site.node} on {site.name} over SSH")
                started.append(site.node)
        finally:
            for executor in executors.values():
                executor.close()
        app = his.running(self.his_state)
        if app is None:
            app = his.start(self.his_state, self.his_log, self._his_dsn(state), host=APP_ADDRESS)
            messages.append(f"started the HIS stand-in on {app.base_url} (pid {app.pid})")
        self._write_environment(state, app.port)
        if plan.refused:
            raise refusal(plan, started)
        return UpResult(
            False, self.status(), self.environment_file, messages or ["lab is already up"]
        )

    def _guard_nodes(
        self, environment: Environment, executors: dict[str, SshExecutor]
    ) -> list[GuardNode]:
        nodes = []
        for site in self.sites:
            node = environment.nodes[site.node]
            where = f"on {site.name} as {site.user} (ssh -p {node.ssh.port if node.ssh else 22} "
            where += f"{site.user}@{site.address})"
            conninfo_text = f"host={node.host} port={node.port} user={DB_USER}"
            nodes.append(
                GuardNode(
                    *(site.node, str(site.data_dir), node_dsn(node), conninfo_text),
                    *(executors[site.node], None, where),
                )
            )
        return nodes

    # ------------------------------------------------------------------ down

    def _teardown(self, state: _State) -> tuple[list[str], list[str], list[str]]:
        """Stop and remove everything of the lab; (stopped, messages, problems)."""
        stopped: list[str] = []
        messages: list[str] = []
        problems: list[str] = []
        try:
            app_pid = his.stop(self.his_state)
            if app_pid is not None:
                stopped.append(f"HIS stand-in (pid {app_pid})")
        except OSError as exc:
            problems.append(f"HIS stand-in: {describe_error(exc)}")
        proxy_pid = link.stop_proxy(self.lab_dir)
        if proxy_pid is not None:
            stopped.append(f"link proxy (pid {proxy_pid})")
        environment = self._environment(state) if state.ssh_port and state.pg_port else None
        for site in self.sites:
            stopped += self._stop_site(site, state, environment, messages)
        for site in self.sites:
            try:
                killed = kill_site_processes(site)
            except LabError as exc:
                problems.append(str(exc))
                continue
            if killed:
                messages.append(f"killed leftover processes {killed} of {site.name} as root")
        paths = [self.environment_file, self.his_log, self.key_file, self.known_hosts]
        paths += [self.key_file.with_name(self.key_file.name + ".pub")]
        for path in [*paths, *(s.directory for s in self.sites), self.state_file]:
            try:
                remove_path(path, f"lab file {path.name}")
            except LabError as exc:
                problems.append(str(exc))
        if not problems:
            with contextlib.suppress(OSError):
                self.lab_dir.rmdir()  # only when empty: a copy of the binaries is kept
        return stopped, messages, problems

    def _stop_site(
        self, site: Site, state: _State, environment: Environment | None, messages: list[str]
    ) -> list[str]:
        stopped: list[str] = []
        pid = state.sshd_pids.get(site.name)
        if environment is not None and self.known_hosts.exists() and site.directory.is_dir():
            try:
                if not is_site_sshd(pid, site.sshd_config) and self.key_file.exists():
                    # The host is there, its sshd is not: start it again to reach PostgreSQL.
                    pubkey = public_key_line(self.key_file.with_name(self.key_file.name + ".pub"))
                    pid = start_site_sshd(site, state.ssh_port, pubkey).pid
                    state.sshd_pids[site.name] = pid
                    messages.append(
                        f"{site.name}'s sshd was not running: started it to stop {site.node}"
                    )
                with self._executor(environment, site) as executor:
                    pg_pid = stop_postgres(executor, site, state.pg_bin)
                if pg_pid is None:
                    messages.append(f"{site.node} was not running")
                else:
                    stopped.append(f"{site.node} (pid {pg_pid})")
            except (DrillError, OSError) as exc:
                messages.append(f"could not stop {site.node} over SSH: {describe_error(exc)}")
        try:
            if stop_sshd(pid, site.sshd_config):
                stopped.append(f"sshd of {site.name} (pid {pid})")
        except LabError as exc:
            messages.append(str(exc))
        return stopped

    # ------------------------------------------------------------------ status

    def _site_status(self, site: Site, state: _State, environment: Environment) -> SiteStatus:
        node = environment.nodes[site.node]
        sshd_pid = state.sshd_pids.get(site.name)
        sshd_alive = is_site_sshd(sshd_pid, site.sshd_config)
        pid = None
        if sshd_alive:
            try:
                with self._executor(environment, site) as executor:
                    processes = executor.instance_processes(str(site.data_dir))
                if processes.state == "running" and processes.postmaster is not None:
                    pid = processes.postmaster.pid
            except DrillError:
                pass
        role = "down"
        try:
            sql = SqlExecutor(node_dsn(node), host=site.node)
            role = "standby" if sql.scalar("select pg_is_in_recovery()", timeout=5) else "primary"
        except DrillError:
            pass
        dsn = conninfo.make_conninfo(
            host=node.host, port=str(node.port), user=DB_USER, dbname=DATABASE
        )
        return SiteStatus(
            *(site.node, role, site.address, state.pg_port, str(site.data_dir), dsn, pid),
            *(site.name, site.user, state.ssh_port, sshd_pid, sshd_alive),
        )

    # ------------------------------------------------------------------ environment and state

    def _executor(self, environment: Environment, site: Site) -> SshExecutor:
        node = environment.nodes[site.node]  # as the drills build it (engine.targets)
        assert node.ssh is not None
        return SshExecutor(site.node, node.host, node.ssh)

    def _environment(self, state: _State, app_port: int | None = None) -> Environment:
        data: dict[str, Any] = {
            "name": ENVIRONMENT_NAME,
            "description": "Two-site lab: primary pg1 on site A (127.0.0.2), streaming standby "
            "pg2 on site B (127.0.0.3), both reached over SSH, and a HIS stand-in (app) on "
            f"{APP_ADDRESS}; made by `drctl lab up --sites 2`.",
            "protected": False,
            "nodes": {},
        }
        for site in self.sites:
            data["nodes"][site.node] = {
                "role": site.role,
                "host": site.address,
                "port": state.pg_port,
                "executor": "ssh",
                "ssh": {
                    "user": site.user,
                    "port": state.ssh_port,
                    "key_file": str(self.key_file),
                    "known_hosts": str(self.known_hosts),
                    "use_agent": False,
                },
                "postgres": {
                    "data_dir": str(site.data_dir),
                    "bin_dir": str(state.pg_bin or ""),
                    "os_user": site.user,
                    "user": DB_USER,
                    "database": DATABASE,
                    "application_name": site.node,
                    "connect_timeout": CONNECT_TIMEOUT,
                },
            }
        if app_port is not None:
            data["nodes"]["app"] = {
                "role": "app",
                "host": APP_ADDRESS,
                "port": app_port,
                "http": {"base_url": f"http://{APP_ADDRESS}:{app_port}"},
            }
        try:
            return Environment.model_validate(data)
        except ValidationError as exc:
            raise LabError(f"the two-site lab's environment would be invalid: {exc}") from exc

    def _write_environment(self, state: _State, app_port: int) -> None:
        environment = self._environment(state, app_port)
        data = environment.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
        data.pop("objectives", None)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        header = (
            f"# Written by `drctl lab up --sites 2` at {stamp}; `drctl lab down` deletes it.\n"
            "# Roles are the roles the nodes were given: drills read the live role.\n"
        )
        text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
        atomic_write(self.environment_file, text)

    def _his_dsn(self, state: _State) -> str:
        return conninfo.make_conninfo(
            "",
            host=",".join(s.address for s in self.sites),
            port=",".join(str(state.pg_port) for _ in self.sites),
            user=DB_USER,
            dbname=DATABASE,
            target_session_attrs="read-write",
            connect_timeout=1,
            application_name="his-standin",
        )

    def _write_state(self, state: _State) -> None:
        data = {
            "format": STATE_FORMAT,
            "ready": state.ready,
            "pg_bin": str(state.pg_bin) if state.pg_bin else None,
            "pg_port": state.pg_port,
            "ssh_port": state.ssh_port,
            "key_file": str(self.key_file),
            "known_hosts": str(self.known_hosts),
            "sites": [
                {
                    "name": site.name,
                    "node": site.node,
                    "role": site.role,
                    "address": site.address,
                    "os_user": site.user,
                    "directory": str(site.directory),
                    "data_dir": str(site.data_dir),
                    "log_file": str(site.log_file),
                    "sshd_config": str(site.sshd_config),
                    "sshd_pid": state.sshd_pids.get(site.name),
                }
                for site in self.sites
            ],
        }
        atomic_write(self.state_file, json.dumps(data, indent=2) + "\n")

    def _load_state(self, *, lenient: bool = False) -> _State:
        """The state; ``lenient``: what can be read of a damaged one (``down`` then kills the
        sites' processes by what they run, as root)."""
        if not self.exists():
            raise LabError("there is no two-site lab; run `drctl lab up --sites 2`")
        try:
            data = json.loads(self.state_file.read_text())
            pids = {
                str(item["name"]): int(item["sshd_pid"])
                for item in data["sites"]
                if item.get("sshd_pid") is not None
            }
            return _State(
                ready=bool(data.get("ready")),
                pg_bin=Path(data["pg_bin"]) if data.get("pg_bin") else None,
                pg_port=int(data["pg_port"]),
                ssh_port=int(data["ssh_port"]),
                sshd_pids=pids,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not lenient:
                raise LabError(
                    f"cannot read the two-site lab state {self.state_file}: "
                    f"{describe_error(exc)}; run `drctl lab down --sites 2`"
                ) from exc
        return _State()
