"""Real sshd servers on loopback for the SSH tests: a site on 127.0.0.2 (the "node"), one on
127.0.0.3 (a bastion, which also lets root log in for the ``su`` tests), a test OS user with a
key, and known_hosts files.

Import the fixtures into a test module (``from tests.sshd_fixtures import *``-style, by name).
Everything started here is stopped here by pid, and each teardown asserts that no process of
that sshd remains. No side effects on import.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drills.executors.ssh import SshExecutor
from drills.lab.sshd import (
    SshSite,
    ensure_os_user,
    generate_key,
    known_hosts_line,
    sshd_available,
)
from drills.model.environment import JumpHost, SshAccess

NODE_ADDRESS = "127.0.0.2"
BASTION_ADDRESS = "127.0.0.3"
TEST_USER = "drctl-ssh-t"
TEST_HOME = Path("/var/lib") / TEST_USER

SSHD_MISSING = sshd_available()
needs_sshd = pytest.mark.skipif(SSHD_MISSING is not None, reason=SSHD_MISSING or "")

# A stand-in for sudo on the node site's PATH (sshd's SetEnv puts FAKEBIN first): it checks the
# arguments drctl passes, answers like a sudo that wants a password for the user
# "needs-password", and otherwise runs the command (as the login user: it is not setuid).
FAKE_SUDO = """#!/bin/sh
if [ "$1" != -n ] || [ "$2" != -u ] || [ "$4" != -- ]; then
  echo "fake sudo: unexpected arguments: $*" >&2; exit 99
fi
if [ "$3" = needs-password ]; then echo "sudo: a password is required" >&2; exit 1; fi
shift 4
exec "$@"
"""


def free_port(address: str) -> int:
    """A port nothing listens on at ``address`` (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def processes_matching(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                state = handle.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def wait_gone(text: str, timeout: float = 3.0) -> list[int]:
    """Wait until no live process's command line holds ``text``; the ones left, if any."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_matching(text)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def stop_and_check(site: SshSite) -> None:
    """Stop a site's sshd by pid and assert nothing of it is left running."""
    process = site.process
    if process is None:
        return
    pids = [process.pid, *process.session_pids()]
    site.stop()
    deadline = time.monotonic() + 3
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in pids if _alive(p)], f"sshd processes left for {site.config_path}"
    assert not processes_matching(str(site.config_path)), f"sshd left for {site.config_path}"


@dataclass
class SshLab:
    """What the tests share: the directory, the user's key, and a way to make more sites."""

    directory: Path
    key: Path
    pubkey: str
    root_key: Path
    root_pubkey: str
    fakebin: Path
    sites: list[SshSite] = field(default_factory=list)

    def site(
        self,
        address: str = NODE_ADDRESS,
        *,
        name: str | None = None,
        users: dict[str, str] | None = None,
        permit_root_login: bool = False,
        fake_sudo: bool = False,
    ) -> SshSite:
        """A started site with a fresh directory, port and host key."""
        port = free_port(address)
        keys = users if users is not None else {TEST_USER: self.pubkey}
        extra = [f"SetEnv PATH={self.fakebin}:/usr/local/bin:/usr/bin:/bin"] if fake_sudo else []
        site = SshSite(
            self.directory / (name or f"site-{address}-{port}"),
            address,
            port,
            list(keys),
            dict(keys),
            permit_root_login=permit_root_login,
            extra_config=extra,
        )
        self.sites.append(site)
        site.start()
        return site

    def known_hosts(self, *sites: SshSite, name: str | None = None) -> Path:
        """A known_hosts file holding these sites' current host keys."""
        path = self.directory / (name or f"known_hosts-{time.monotonic_ns()}")
        lines = []
        for site in sites:
            assert site.process is not None
            lines.append(known_hosts_line(site.address, site.port, site.process.host_pubkey))
        path.write_text("".join(line + "\n" for line in lines))
        return path

    def access(self, site: SshSite, known_hosts: Path | None, **changes: object) -> SshAccess:
        fields: dict[str, object] = {
            "user": TEST_USER,
            "port": site.port,
            "key_file": str(self.key),
            "known_hosts": str(known_hosts) if known_hosts else str(self.directory / "none"),
            "use_agent": False,
            "connect_timeout": 3.0,
        }
        fields.update(changes)
        return SshAccess.model_validate(fields)

    def jump(self, site: SshSite, known_hosts: Path, user: str = TEST_USER) -> JumpHost:
        return JumpHost(
            host=site.address,
            port=site.port,
            user=user,
            key_file=str(self.key),
            known_hosts=str(known_hosts),
        )


@pytest.fixture(scope="session")
def ssh_lab() -> Iterator[SshLab]:
    """The session's test user, keys and directory (under /tmp, traversable by the user)."""
    if SSHD_MISSING is not None:
        pytest.skip(SSHD_MISSING)
    ensure_os_user(TEST_USER, TEST_HOME)
    directory = Path(tempfile.mkdtemp(prefix="drctl-ssh-", dir="/tmp"))
    directory.chmod(0o755)
    fakebin = directory / "fakebin"
    fakebin.mkdir(mode=0o755)
    (fakebin / "sudo").write_text(FAKE_SUDO)
    (fakebin / "sudo").chmod(0o755)
    key = directory / "id_drctl"
    root_key = directory / "id_drctl_root"
    lab = SshLab(
        directory,
        key,
        generate_key(key, "drctl-test"),
        root_key,
        generate_key(root_key, "drctl-test-root"),
        fakebin,
    )
    try:
        yield lab
    finally:
        errors = []
        for site in lab.sites:
            try:
                stop_and_check(site)
            except AssertionError as exc:
                errors.append(str(exc))
        shutil.rmtree(directory, ignore_errors=True)
        assert not errors, errors


@pytest.fixture(scope="module")
def node_site(ssh_lab: SshLab) -> Iterator[SshSite]:
    """The node's sshd on 127.0.0.2 (with the stand-in sudo first on PATH)."""
    site = ssh_lab.site(NODE_ADDRESS, fake_sudo=True)
    yield site
    stop_and_check(site)


@pytest.fixture(scope="module")
def bastion_site(ssh_lab: SshLab) -> Iterator[SshSite]:
    """A second sshd on 127.0.0.3: a bastion, and a host root may log in to (for su)."""
    site = ssh_lab.site(
        BASTION_ADDRESS,
        users={TEST_USER: ssh_lab.pubkey, "root": ssh_lab.root_pubkey},
        permit_root_login=True,
    )
    yield site
    stop_and_check(site)


@pytest.fixture(scope="module")
def node_known_hosts(ssh_lab: SshLab, node_site: SshSite) -> Path:
    return ssh_lab.known_hosts(node_site, name="known_hosts-node")


@pytest.fixture(scope="module")
def node(ssh_lab: SshLab, node_site: SshSite, node_known_hosts: Path) -> Iterator[SshExecutor]:
    """One executor on the node site, its connection kept for the whole module."""
    executor = SshExecutor("pg1", NODE_ADDRESS, ssh_lab.access(node_site, node_known_hosts))
    yield executor
    executor.close()


@pytest.fixture
def make_executor(ssh_lab: SshLab) -> Iterator[Callable[..., SshExecutor]]:
    """``make_executor(site, known_hosts, node_name="pg1", **access)``; closed after the test."""
    made: list[SshExecutor] = []

    def make(
        site: SshSite, known_hosts: Path | None, node_name: str = "pg1", **changes: object
    ) -> SshExecutor:
        executor = SshExecutor(
            node_name, site.address, ssh_lab.access(site, known_hosts, **changes)
        )
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()


__all__ = [
    "BASTION_ADDRESS",
    "NODE_ADDRESS",
    "SSHD_MISSING",
    "TEST_HOME",
    "TEST_USER",
    "SshLab",
    "bastion_site",
    "free_port",
    "make_executor",
    "needs_sshd",
    "node",
    "node_known_hosts",
    "node_site",
    "processes_matching",
    "ssh_lab",
    "stop_and_check",
    "wait_gone",
]
