"""Real OpenSSH servers on loopback addresses, for the two-site lab and the SSH tests.

Each site gets its own ``sshd -D`` on an address of 127.0.0.0/8 (127.0.0.2, 127.0.0.3, ... bind
here without configuration), with a host key, config, pid file, log and authorized keys all kept
in the site's own directory: nothing under /etc/ssh or any ~/.ssh is read or changed, and the
system's sshd (if any) is left alone. drctl then reaches the sites only over SSH with strict host
keys, as it would reach real hosts.

This needs root (sshd switches to the logged-in user) and Debian's ``openssh-server``; see
:func:`sshd_available`. Every failure is a :class:`~drills.model.errors.LabError` naming the
address, port or file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from drills.model.errors import LabError

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
HOST_KEY_NAME = "ssh_host_ed25519_key"
START_TIMEOUT = 10.0  # seconds for a new sshd to accept connections
STOP_TIMEOUT = 5.0  # seconds after SIGTERM before SIGKILL
LOG_TAIL_LINES = 15
UNUSABLE_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")

HOW_TO_GET_SSHD = (
    "the two-site lab runs its own sshd, which needs root and Debian's openssh-server "
    "(apt-get install openssh-server)"
)


def sshd_available() -> str | None:
    """None when this machine can run the lab's sshd; else what is missing, as a sentence."""
    missing = []
    if not SSHD.exists():
        missing.append(f"{SSHD} is not installed")
    if os.geteuid() != 0:
        missing.append("drctl is not running as root")
    if shutil.which("ssh-keygen") is None:
        missing.append("ssh-keygen is not installed")
    if not missing:
        return None
    return f"{HOW_TO_GET_SSHD}; here {' and '.join(missing)}"


# -- users and keys ----------------------------------------------------------------------------


def ensure_os_user(name: str, home: Path) -> list[str]:
    """A system user with a shell and a home that can log in with a key. Idempotent.

    Returns what it did, one message per change (nothing when the user was already usable).
    """
    done: list[str] = []
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        home.parent.mkdir(parents=True, exist_ok=True)
        _run(
            [
                *("useradd", "--system", "--create-home", "--home-dir", str(home)),
                *("--shell", "/bin/sh", name),
            ],
            f"could not create OS user {name} (home {home})",
        )
        done.append(f"created OS user {name} (home {home}, shell /bin/sh)")
        entry = pwd.getpwnam(name)
    if entry.pw_shell in UNUSABLE_SHELLS:
        raise LabError(
            f"OS user {name} exists with shell {entry.pw_shell}, so sshd cannot run commands "
            f"for it: give it a shell (usermod --shell /bin/sh {name}) or use another user"
        )
    if not Path(entry.pw_dir).is_dir():
        Path(entry.pw_dir).mkdir(parents=True, mode=0o755)
        os.chown(entry.pw_dir, entry.pw_uid, entry.pw_gid)
        done.append(f"created home {entry.pw_dir} of OS user {name}")
    if _password_field(name).startswith("!"):
        # useradd leaves the account locked ("!"); sshd refuses locked accounts even for keys.
        # "*" keeps password logins impossible while allowing key logins.
        _run(["usermod", "-p", "*", name], f"could not unlock OS user {name} for key login")
        done.append(f"unlocked OS user {name} for key login (no password)")
    return done


def _password_field(name: str) -> str:
    try:
        with open("/etc/shadow", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split(":")
                if fields[0] == name and len(fields) > 1:
                    return fields[1]
    except OSError as exc:
        raise LabError(f"cannot read /etc/shadow to check OS user {name}: {exc}") from exc
    return ""


def generate_key(path: Path, comment: str) -> str:
    """A new ed25519 key pair at ``path`` (and ``path.pub``), no passphrase; its public line."""
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(
        ["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-C", comment, "-f", str(path)],
        f"could not generate an SSH key at {path}",
    )
    return public_key_line(path.with_name(path.name + ".pub"))


def public_key_line(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise LabError(f"cannot read public key {path}: {exc}") from exc


def fingerprint(public_key: str) -> str:
    """``SHA256:...`` of a public key line (``type base64 [comment]``), as ssh-keygen -l shows."""
    try:
        blob = base64.b64decode(public_key.split()[1])
    except (IndexError, ValueError) as exc:
        raise LabError(f"not a public key line: {public_key[:60]!r}") from exc
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def known_hosts_line(address: str, port: int, host_pubkey: str) -> str:
    """The known_hosts entry for a host key: ``[addr]:port keytype base64`` (``addr`` alone on
    port 22, as OpenSSH writes it)."""
    fields = host_pubkey.split()
    if len(fields) < 2:
        raise LabError(f"not a public key line: {host_pubkey[:60]!r}")
    name = address if port == 22 else f"[{address}]:{port}"
    return f"{name} {fields[0]} {fields[1]}"


# -- one sshd ----------------------------------------------------------------------------------


@dataclass
class SshdProcess:
    """A running sshd: where it listens, its host key, and how to stop exactly this one."""

    address: str
    port: int
    pid: int
    directory: Path
    config: Path
    log: Path
    host_pubkey: str
    host_fingerprint: str
    _popen: subprocess.Popen[bytes] = field(repr=False)

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def known_hosts_line(self) -> str:
        return known_hosts_line(self.address, self.port, self.host_pubkey)

    def alive(self) -> bool:
        return self._popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes of this server and everything below them."""
        return _descendants(self.pid)

    def kill_sessions(self) -> list[int]:
        """SIGKILL every connection's processes (the server side drops them); the master stays."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def kill_all(self) -> None:
        """SIGKILL the master and every connection, as a crash of the host's sshd would."""
        pids = [self.pid, *self.session_pids()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._popen.wait()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop THIS sshd (by its pid): SIGTERM, then SIGKILL after ``timeout``; then reap it.

        Connections it had are dropped too (their processes are killed the same way)."""
        sessions = self.session_pids()
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self._popen.kill()
                self._popen.wait()
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
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


@dataclass
class SshSite:
    """One site's sshd: its directory, address, port, users and their keys.

    ``start`` makes (or reuses) the host key and writes the config; ``regenerate_host_key``
    gives the site a new host key and restarts its sshd, as a reinstalled host (or an
    impostor) would look to drctl.
    """

    directory: Path
    address: str
    port: int
    allow_users: list[str]
    authorized_keys: dict[str, str]
    permit_root_login: bool = False
    extra_config: list[str] = field(default_factory=list)
    process: SshdProcess | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def host_key_path(self) -> Path:
        return self.directory / HOST_KEY_NAME

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    def start(self, timeout: float = START_TIMEOUT) -> SshdProcess:
        if self.process is not None and self.process.alive():
            return self.process
        problem = sshd_available()
        if problem:
            raise LabError(problem)
        if not self.allow_users:
            raise LabError(f"sshd on {self.address}:{self.port} needs at least one allowed user")
        self._prepare()
        self._validate()
        self.process = self._spawn(timeout)
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self, timeout: float = START_TIMEOUT) -> SshdProcess:
        self.stop()
        self.process = None
        return self.start(timeout)

    def regenerate_host_key(self) -> SshdProcess:
        """A new host key, and the sshd restarted with it (same address and port)."""
        self.stop()
        self.process = None
        generate_key(self.host_key_path, f"drctl-lab host {self.address}:{self.port}")
        return self.start()

    def set_authorized_keys(self, user: str, keys: str) -> None:
        """Replace a user's authorized keys (sshd reads them at every login: no restart)."""
        self.authorized_keys[user] = keys
        self._write_authorized_keys(user, keys)

    # -- internals ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # sshd reads authorized_keys as the logging-in user: the directory must be
            # traversable by it.
            self.directory.chmod(0o755)
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
            (self.directory / "authorized_keys").mkdir(mode=0o755, exist_ok=True)
        except OSError as exc:
            raise LabError(f"cannot prepare sshd directory {self.directory}: {exc}") from exc
        _check_traversable(self.directory)
        if not self.host_key_path.exists():
            generate_key(self.host_key_path, f"drctl-lab host {self.address}:{self.port}")
        for user, keys in self.authorized_keys.items():
            self._write_authorized_keys(user, keys)
        try:
            self.config_path.write_text(self._config_text(), encoding="utf-8")
        except OSError as exc:
            raise LabError(f"cannot write sshd config {self.config_path}: {exc}") from exc

    def _write_authorized_keys(self, user: str, keys: str) -> None:
        path = self.directory / "authorized_keys" / user
        try:
            tmp = path.with_name(f".{user}.tmp")
            tmp.write_text(keys.strip() + "\n", encoding="utf-8")
            tmp.chmod(0o644)
            tmp.replace(path)
        except OSError as exc:
            raise LabError(f"cannot write authorized keys {path}: {exc}") from exc

    def _config_text(self) -> str:
        lines = [
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.directory / 'authorized_keys'}/%u",
            # The site directory may live under /tmp (world-writable): sshd's path check would
            # refuse every key there. The files themselves are root's, mode 644.
            "StrictModes no",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin " + ("prohibit-password" if self.permit_root_login else "no"),
            "AllowUsers " + " ".join(self.allow_users),
            "MaxSessions 50",
            "MaxStartups 50",
            "LogLevel VERBOSE",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding yes",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def _validate(self) -> None:
        result = subprocess.run(
            [str(SSHD), "-t", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise LabError(
                f"sshd rejects its config {self.config_path}: "
                f"{(result.stderr or result.stdout).strip()[-1500:]}"
            )

    def _spawn(self, timeout: float) -> SshdProcess:
        where = f"{self.address}:{self.port}"
        try:
            log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
            offset = log.tell()
        except OSError as exc:
            raise LabError(f"cannot open sshd log {self.log_path}: {exc}") from exc
        with log:
            try:
                popen = subprocess.Popen(
                    [str(SSHD), "-D", "-e", "-f", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            except OSError as exc:
                raise LabError(f"cannot start sshd for {where}: {exc}") from exc
        pubkey = public_key_line(self.host_key_path.with_name(HOST_KEY_NAME + ".pub"))
        process = SshdProcess(
            address=self.address,
            port=self.port,
            pid=popen.pid,
            directory=self.directory,
            config=self.config_path,
            log=self.log_path,
            host_pubkey=pubkey,
            host_fingerprint=fingerprint(pubkey),
            _popen=popen,
        )
        deadline = time.monotonic() + timeout
        while True:
            if popen.poll() is not None:
                raise LabError(
                    f"sshd for {where} exited with {popen.returncode} while starting; "
                    f"{self.log_path} ends with:\n{process.log_tail()}"
                )
            # Its own "listening" line, not only an open port: another server may hold it.
            if _says_listening(self.log_path, offset, self.address, self.port) and _accepts(
                self.address, self.port
            ):
                return process
            if time.monotonic() > deadline:
                process.stop()
                raise LabError(
                    f"sshd for {where} did not accept connections within {timeout:g}s; "
                    f"{self.log_path} ends with:\n{process.log_tail()}"
                )
            time.sleep(0.01)


def start_sshd(
    directory: Path,
    address: str,
    port: int,
    allow_users: list[str],
    authorized_keys: dict[str, str],
    *,
    permit_root_login: bool = False,
    extra_config: list[str] | None = None,
    timeout: float = START_TIMEOUT,
) -> SshdProcess:
    """Start one sshd for a site; see :class:`SshSite` to restart it or change its host key."""
    site = SshSite(
        directory,
        address,
        port,
        list(allow_users),
        dict(authorized_keys),
        permit_root_login=permit_root_login,
        extra_config=list(extra_config or []),
    )
    return site.start(timeout)


def _says_listening(log: Path, offset: int, address: str, port: int) -> bool:
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read()
    except OSError:
        return False
    return f"Server listening on {address} port {port}.".encode() in text


def _accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _check_traversable(directory: Path) -> None:
    for parent in [directory, *directory.parents]:
        try:
            mode = parent.stat().st_mode
        except OSError as exc:
            raise LabError(f"cannot check directory {parent}: {exc}") from exc
        if not mode & 0o001:
            raise LabError(
                f"{parent} is not traversable by other users (mode {mode & 0o777:o}), so sshd "
                f"cannot read the authorized keys under {directory} as the logging-in user: "
                f"chmod o+x {parent}, or put the site somewhere else"
            )


def _run(argv: list[str], failure: str) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{failure}: {exc}") from exc
    if result.returncode != 0:
        raise LabError(f"{failure}: {(result.stderr or result.stdout).strip()[-1500:]}")
