"""Commands and files on a node's host over SSH (paramiko), with strict host keys.

One connection per executor, opened on first use and kept: a command is one session channel on
it (``open_session`` + ``exec_command``), so a round trip costs a few milliseconds. Host keys are
checked against known_hosts and never accepted or written; jump hosts are chained with
``direct-tcpip`` channels; ``become`` runs a command as another user through ``sudo -n`` (never
prompts) or ``su``.

Every command runs inside a small ``sh`` wrapper that announces its process group (so a command
past its deadline, or given up on when drctl is stopped hard, is killed on the host), reads
secrets as ``NAME=value`` lines from stdin, and ``exec``s the command: it, what is kept of the
output and the reading of a refused ``become`` are in :mod:`drills.executors.ssh_command`. Every
paramiko and socket error becomes one of ours in :func:`~drills.executors.ssh_errors.translate`,
from the table :data:`~drills.executors.ssh_errors.ERROR_TABLE`
(:mod:`drills.executors.ssh_errors` is the one place that happens); nothing above this module
sees a library exception.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import paramiko
import paramiko.pkey

from drills.executors.host import (
    CommandResult,
    HostIdentity,
    PosixHost,
    command_failed,
    shell_join,
)
from drills.executors.ssh_command import (
    StderrTail,
    StreamTail,
    become_argv,
    become_failed,
    env_lines,
    kill_argv,
    parse_killed,
    wrap_command,
)
from drills.executors.ssh_errors import (
    ERROR_TABLE,
    PARAMIKO_EXCEPTIONS,
    RejectUnknownHostKey,
    host_key_fingerprint,
    translate,
    underlying_error,
)
from drills.model.environment import SshAccess, read_secret_env
from drills.model.errors import CommandTimeout, ConnectionFailed, ExecutorError, InputError

# ERROR_TABLE, PARAMIKO_EXCEPTIONS, host_key_fingerprint and translate live in ssh_errors and
# wrap_command in ssh_command; tests import them from here, so they are re-exported.
__all__ = [
    "ERROR_TABLE",
    "PARAMIKO_EXCEPTIONS",
    "SshExecutor",
    "host_key_fingerprint",
    "translate",
    "wrap_command",
]

KILL_TIMEOUT = 5.0  # seconds for the kill of a timed-out command's process group
READ_SIZE = 65536
SYNC_STDIN_LIMIT = 1024 * 1024  # larger stdin is written from a thread (the window may fill)
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class _Hop:
    """One SSH server on the way: a bastion, or the node itself (the last hop)."""

    host: str
    port: int
    user: str
    key_file: str | None
    passphrase_env: str | None
    known_hosts: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


# -- the executor --------------------------------------------------------------------------


class SshExecutor(PosixHost):
    """Runs commands on a node's host over one kept SSH connection.

    ``node_name`` names the node in errors and records; ``host`` is its address, which
    ``access.address`` overrides for sshd.
    """

    def __init__(self, node_name: str, host: str, access: SshAccess) -> None:
        self.host = node_name
        self.access = access
        self.ssh_host = access.address or host
        self.port = access.port
        self.login_user = access.user
        known_hosts = os.path.expanduser(access.known_hosts or DEFAULT_KNOWN_HOSTS)
        self.hops: tuple[_Hop, ...] = (
            *(
                _Hop(
                    j.host,
                    j.port,
                    j.user,
                    j.key_file,
                    j.passphrase_env,
                    os.path.expanduser(j.known_hosts) if j.known_hosts else known_hosts,
                )
                for j in access.jump
            ),
            _Hop(
                self.ssh_host,
                self.port,
                access.user,
                access.key_file,
                access.passphrase_env,
                known_hosts,
            ),
        )
        self._clients: list[paramiko.SSHClient] = []
        self._transport: paramiko.Transport | None = None
        self._lock = threading.Lock()
        self.connections = 0  # how many times a connection was made (for tests and records)

    # -- identity ----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """host:port of the node's sshd."""
        return f"{self.ssh_host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.login_user}@{self.ssh_host}:{self.port}"

    @property
    def transport(self) -> paramiko.Transport | None:
        return self._transport

    def identity(self) -> HostIdentity:
        """Who we are there, and the host key that matched known_hosts on this connection."""
        base = super().identity()  # one round trip: id -un, uname -n
        transport = self._transport
        key = transport.get_remote_server_key() if transport is not None else None
        return HostIdentity(
            self.address,
            base.user,
            base.hostname,
            host_key_fingerprint=host_key_fingerprint(key) if key is not None else None,
            known_hosts=self.hops[-1].known_hosts,
        )

    def describe(self, argv: Sequence[str], user: str | None = None) -> str:
        """An OpenSSH command line that would do the same (``plan`` shows it)."""
        words = ["ssh"]
        if len(self.hops) > 1:
            words += ["-J", ",".join(f"{h.user}@{h.host}:{h.port}" for h in self.hops[:-1])]
        words += ["-p", str(self.port), f"{self.login_user}@{self.ssh_host}", "--"]
        return f"{shell_join(words)} {self._remote_line(argv, user)}"

    def _remote_line(self, argv: Sequence[str], user: str | None) -> str:
        become = self._become_for(user)
        return shell_join(list(argv) if become is None else become_argv(*become, argv))

    def _become_for(self, user: str | None) -> tuple[str, str] | None:
        if user is None or user == self.login_user:
            return None
        if self.access.become is None:
            raise InputError(
                f"node {self.host} must run this command as {user}, but drctl logs in to "
                f"{self.address} as {self.login_user} and `ssh.become` is not set: add "
                f"`become: {{method: sudo, user: {user}}}` to the node's ssh section",
                host=self.host,
            )
        return (self.access.become.method, user)

    # -- the connection ----------------------------------------------------------------------

    def _connected(self, *, fresh: bool = False) -> tuple[paramiko.Transport, bool]:
        """The kept transport, or a new one (True: made just now)."""
        with self._lock:
            transport = self._transport
            if transport is not None and transport.is_active() and not fresh:
                return transport, False
            self._close_clients()
            return self._connect(), True

    def _connect(self) -> paramiko.Transport:
        timeout = self.access.connect_timeout
        clients: list[paramiko.SSHClient] = []
        transport: paramiko.Transport | None = None
        try:
            for index, hop in enumerate(self.hops):
                via = f" through {self.hops[index - 1].address}" if index else ""
                doing = f"logging in as {hop.user}{via} to"
                pkey = self._load_key(hop)
                client = paramiko.SSHClient()
                self._load_known_hosts(client, hop)
                client.set_missing_host_key_policy(
                    RejectUnknownHostKey(self.host, hop.address, hop.known_hosts)
                )
                sock = self._hop_socket(hop, clients, timeout)
                try:
                    client.connect(
                        hop.host,
                        port=hop.port,
                        username=hop.user,
                        pkey=pkey,
                        allow_agent=self.access.use_agent,
                        look_for_keys=hop.key_file is None,
                        timeout=timeout,
                        banner_timeout=timeout,
                        auth_timeout=timeout,
                        channel_timeout=timeout,
                        sock=sock,
                    )
                except BaseException as exc:
                    cause = underlying_error(client, exc, timeout)
                    client.close()
                    sock.close()
                    if not isinstance(exc, Exception):
                        raise
                    raise translate(
                        cause,
                        node=self.host,
                        address=hop.address,
                        doing=doing,
                        known_hosts=hop.known_hosts,
                    ) from exc
                clients.append(client)
                transport = client.get_transport()
                if transport is None:  # connect() returned, so it has one
                    raise ConnectionFailed(f"{doing} {hop.address} failed", host=self.host)
                if self.access.keepalive > 0:
                    transport.set_keepalive(max(1, round(self.access.keepalive)))
        except BaseException:
            for client in reversed(clients):
                client.close()
            raise
        if transport is None:
            raise ConnectionFailed(f"no SSH hop to reach {self.endpoint}", host=self.host)
        self._clients = clients
        self._transport = transport
        self.connections += 1
        return transport

    def _hop_socket(
        self, hop: _Hop, clients: list[paramiko.SSHClient], timeout: float
    ) -> socket.socket | paramiko.Channel:
        if not clients:
            try:
                sock = socket.create_connection((hop.host, hop.port), timeout=timeout)
            except OSError as exc:
                raise translate(
                    exc, node=self.host, address=hop.address, doing="connecting to"
                ) from exc
            # Small packets both ways: without this, Nagle and delayed ACKs cost ~40 ms a command.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        previous = self.hops[len(clients) - 1]
        outer = clients[-1].get_transport()
        try:
            if outer is None:
                raise EOFError("the bastion's connection is gone")
            return outer.open_channel(
                "direct-tcpip", (hop.host, hop.port), ("127.0.0.1", 0), timeout=timeout
            )
        except Exception as exc:
            raise translate(
                exc,
                node=self.host,
                address=hop.address,
                doing=f"opening a tunnel through {previous.address} to",
            ) from exc

    def _load_known_hosts(self, client: paramiko.SSHClient, hop: _Hop) -> None:
        # HostKeys.load, not SSHClient.load_host_keys: nothing may ever save to the file.
        if not os.path.exists(hop.known_hosts):
            return  # every key is unknown, and will be refused
        try:
            client.get_host_keys().load(hop.known_hosts)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise translate(
                exc,
                node=self.host,
                address=hop.address,
                doing="reading known_hosts",
                local_file=hop.known_hosts,
            ) from exc

    def _load_key(self, hop: _Hop) -> paramiko.PKey | None:
        if hop.key_file is None:
            return None
        path = os.path.expanduser(hop.key_file)
        passphrase = (
            read_secret_env(hop.passphrase_env, f"the passphrase of SSH key {path}")
            if hop.passphrase_env
            else None
        )
        try:
            # cryptography wants the passphrase as bytes (the stubs say str)
            secret = passphrase.encode() if passphrase is not None else None
            return paramiko.PKey.from_path(path, secret)  # type: ignore[arg-type]
        except (
            OSError,
            paramiko.SSHException,
            paramiko.pkey.UnknownKeyType,
            ValueError,
            TypeError,  # cryptography's word for "encrypted, and no passphrase given"
        ) as exc:
            raise translate(
                exc, node=self.host, address=hop.address, doing="reading key file", local_file=path
            ) from exc

    def _drop(self) -> None:
        with self._lock:
            self._close_clients()

    def _close_clients(self) -> None:
        for client in reversed(self._clients):
            client.close()
        self._clients = []
        self._transport = None

    def close(self) -> None:
        self._drop()

    def connect(self) -> None:
        """Log in now (once per run): the first step then finds the connection made."""
        self._connected()

    def __enter__(self) -> SshExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------------------

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
        become = self._become_for(user)
        remote = self._remote_line(argv, user)
        stdin = env_lines(env, remote, self.host) + (input or "").encode("utf-8")
        command_id = secrets.token_hex(8)
        command = wrap_command(argv, become=become, env=bool(env), cwd=cwd, command_id=command_id)
        started = time.monotonic()
        channel = self._open_channel(remote)
        try:
            try:
                channel.exec_command(command)
            except Exception as exc:
                if not channel.get_transport().is_active():
                    self._drop()
                raise translate(
                    exc, node=self.host, address=self.endpoint, doing=f"starting {remote} on"
                ) from exc
            returncode, stdout, stderr = self._collect(
                channel, stdin, started + timeout, argv, user, remote, timeout, command_id
            )
        finally:
            channel.close()
        result = CommandResult(
            tuple(argv if become is None else become_argv(*become, argv)),
            returncode,
            stdout.text(),
            stderr.text(),
            time.monotonic() - started,
        )
        self._judge(argv, become, result, stderr)
        if check and returncode != 0:
            raise command_failed(self.host, self.describe(argv, user), result)
        return result

    def _open_channel(self, remote: str) -> paramiko.Channel:
        """A session channel; a kept connection found dead first is made again, once."""
        doing = f"opening a session for {remote} on"
        transport, new = self._connected()
        try:
            return transport.open_session(timeout=self.access.connect_timeout)
        except Exception as exc:
            if transport.is_active():  # refused (MaxSessions, ...): other commands may go on
                raise translate(exc, node=self.host, address=self.endpoint, doing=doing) from exc
            if new:
                self._drop()
                raise translate(exc, node=self.host, address=self.endpoint, doing=doing) from exc
        # It died between commands without us noticing yet: connect again, once.
        transport, _ = self._connected(fresh=True)
        try:
            return transport.open_session(timeout=self.access.connect_timeout)
        except Exception as exc:
            self._drop()
            raise translate(exc, node=self.host, address=self.endpoint, doing=doing) from exc

    def _collect(
        self,
        channel: paramiko.Channel,
        stdin: bytes,
        deadline: float,
        argv: Sequence[str],
        user: str | None,
        remote: str,
        timeout: float,
        command_id: str,
    ) -> tuple[int, StreamTail, StderrTail]:
        stdout, stderr = StreamTail(), StderrTail()
        try:
            return self._wait(
                channel, stdin, deadline, argv, user, remote, timeout, command_id, stdout, stderr
            )
        except Exception:
            raise  # ours (a timeout has killed it already), or the connection's end
        except BaseException:
            # Stopped while it ran (a second Ctrl-C raises here, drills.engine.stopping): the
            # command must not go on on the host after drctl has given it up. Killed as on a
            # timeout; a group not announced yet is found by the command's id.
            self._kill_command(channel, stderr.pgid, user, command_id)
            raise

    def _wait(
        self,
        channel: paramiko.Channel,
        stdin: bytes,
        deadline: float,
        argv: Sequence[str],
        user: str | None,
        remote: str,
        timeout: float,
        command_id: str,
        stdout: StreamTail,
        stderr: StderrTail,
    ) -> tuple[int, StreamTail, StderrTail]:
        """Feed the command its input and read its output until it exits or its deadline."""
        writer: threading.Thread | None = None
        try:
            if len(stdin) > SYNC_STDIN_LIMIT:
                writer = threading.Thread(target=_feed, args=(channel, stdin), daemon=True)
                writer.start()
            else:
                if stdin:
                    channel.sendall(stdin)
                channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # a command that exits without reading its input; the reads tell the rest
        wakeup = channel.fileno()  # readable whenever data, EOF or a close arrived
        while True:
            progressed = False
            if channel.recv_ready():
                stdout.add(channel.recv(READ_SIZE))
                progressed = True
            if channel.recv_stderr_ready():
                stderr.add(channel.recv_stderr(READ_SIZE))
                progressed = True
            if progressed:
                continue
            if channel.eof_received or channel.closed:
                # everything before the EOF is in the buffers now
                while channel.recv_ready():
                    stdout.add(channel.recv(READ_SIZE))
                while channel.recv_stderr_ready():
                    stderr.add(channel.recv_stderr(READ_SIZE))
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out(channel, stderr, argv, user, timeout, command_id)
            select.select([wakeup], [], [], min(remaining, 1.0))
        # The exit status follows the EOF (a command may also close its output and go on).
        while not channel.status_event.wait(min(max(deadline - time.monotonic(), 0), 1.0)):
            if time.monotonic() >= deadline:
                self._timed_out(channel, stderr, argv, user, timeout, command_id)
        if writer is not None:
            writer.join(timeout=1)
        if channel.exit_status_ready() and channel.exit_status != -1:
            return channel.exit_status, stdout, stderr
        if self._lost(channel):
            self._drop()
            raise ConnectionFailed(
                f"connection to {self.endpoint} lost while running {remote}", host=self.host
            )
        return -1, stdout, stderr  # killed by a signal: sshd sends exit-signal, not a status

    def _lost(self, channel: paramiko.Channel) -> bool:
        transport = channel.get_transport()
        if not channel.eof_received:
            return True
        transport.join(0.1)  # a dying transport unlinks its channels just before it stops
        return not transport.is_active()

    def _timed_out(
        self,
        channel: paramiko.Channel,
        stderr: StderrTail,
        argv: Sequence[str],
        user: str | None,
        timeout: float,
        command_id: str,
    ) -> None:
        described = self.describe(argv, user)
        pgid = stderr.pgid
        killed = self._kill_command(channel, pgid, user, command_id)
        if killed is None:
            what = (
                "its process group was never announced, so it may still run there"
                if pgid is None
                else f"killing its process group {pgid} there failed: it may still run"
            )
        else:
            group, escaped = killed
            if pgid is None:
                what = "its process group was never announced"
            elif group:
                what = f"its process group {pgid} was killed there"
            else:
                what = f"its process group {pgid} was gone"
            if escaped:
                what += f", and {escaped} process(es) of it that had left the group"
            elif pgid is None:
                what += ", and no process of it was found there"
        channel.close()
        raise CommandTimeout(
            f"{described} did not finish within {timeout:g}s; {what}", host=self.host
        )

    def _kill_command(
        self, channel: paramiko.Channel, pgid: int | None, user: str | None, command_id: str
    ) -> tuple[bool, int] | None:
        """Kill the process group and every process carrying the command's id (those that
        escaped the group and may hold the channel open), on a second channel, as the
        command's user (:func:`~drills.executors.ssh_command.kill_argv`). What the killer
        said, or None when it could not run."""
        kill = kill_argv(pgid, command_id)
        become = self._become_for(user)
        line = shell_join(kill if become is None else become_argv(*become, kill))
        transport = channel.get_transport()  # the command's own connection
        if not transport.is_active():
            return None
        try:
            killer = transport.open_session(timeout=KILL_TIMEOUT)
            try:
                killer.exec_command(line)
                killer.shutdown_write()
                output = StreamTail()
                deadline = time.monotonic() + KILL_TIMEOUT
                while not killer.status_event.wait(0.05):
                    while killer.recv_ready():
                        output.add(killer.recv(READ_SIZE))
                    if time.monotonic() > deadline:
                        return None
                while killer.recv_ready():
                    output.add(killer.recv(READ_SIZE))
                return parse_killed(output.text())
            finally:
                killer.close()
        except (OSError, EOFError, paramiko.SSHException):
            return None

    def _judge(
        self,
        argv: Sequence[str],
        become: tuple[str, str] | None,
        result: CommandResult,
        stderr: StderrTail,
    ) -> None:
        """Failures that are not the command's own: become refused, command not found."""
        if result.returncode == 0:
            return
        if not stderr.announced:
            if become is not None:
                raise become_failed(self.login_user, self.address, self.host, become, argv, result)
            raise ExecutorError(
                f"the login shell of {self.login_user} on {self.address} did not run drctl's "
                f"wrapper (exit {result.returncode}): {result.output[-500:]}",
                host=self.host,
            )
        name = argv[0]
        if result.returncode == 127 and f"exec: {name}: not found" in result.stderr:
            raise ExecutorError(f"command not found on {self.address}: {name}", host=self.host)
        if result.returncode == 126 and f"exec: {name}:" in result.stderr:
            raise ExecutorError(
                f"not allowed to run {name} on {self.address}: {result.stderr.strip()[-300:]}",
                host=self.host,
            )


def _feed(channel: paramiko.Channel, data: bytes) -> None:
    try:
        channel.sendall(data)
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command stopped reading; its exit status says how it ended
