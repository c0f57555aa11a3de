"""The SSH executor against real OpenSSH servers on loopback (see tests/sshd_fixtures.py).

Covers commands (exit codes, streams, stdin, env kept off command lines, cwd), the POSIX host
operations over SSH, host keys (unknown, changed), authentication, become (sudo, su), timeouts
that kill the remote process, lost connections, jump hosts, connection reuse, and the table that
turns every paramiko exception into one of ours.
"""

from __future__ import annotations

import inspect
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
import paramiko.ssh_exception
import pytest

from drills.executors.host import STREAM_LIMIT
from drills.executors.ssh import (
    ERROR_TABLE,
    PARAMIKO_EXCEPTIONS,
    SshExecutor,
    host_key_fingerprint,
    translate,
    wrap_command,
)
from drills.lab.sshd import SshSite, fingerprint, known_hosts_line, start_sshd
from drills.model.environment import Become, JumpHost, SshAccess
from drills.model.errors import (
    AuthenticationFailed,
    BecomeFailed,
    CommandFailed,
    CommandTimeout,
    ConnectionFailed,
    DrillError,
    ExecutorError,
    HostKeyRejected,
    InputError,
    LabError,
)
from tests.sshd_fixtures import (
    NODE_ADDRESS,
    TEST_HOME,
    TEST_USER,
    SshLab,
    bastion_site,
    free_port,
    make_executor,
    needs_sshd,
    node,
    node_known_hosts,
    node_site,
    processes_matching,
    ssh_lab,
    wait_gone,
)

__all__ = [  # the fixtures this module uses (imported so pytest finds them)
    "bastion_site",
    "make_executor",
    "node",
    "node_known_hosts",
    "node_site",
    "ssh_lab",
]

MakeExecutor = Callable[..., SshExecutor]


def unique_seconds() -> str:
    """A sleep duration no other process has on its command line."""
    return f"300.{uuid.uuid4().int % 10**9:09d}"


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


# -- without sshd: the command line and the error table ---------------------------------------


def test_describe_and_address_read_like_openssh() -> None:
    access = SshAccess(
        user="drctl",
        port=2201,
        jump=[
            JumpHost(host="10.0.0.1", user="ops", port=22),
            JumpHost(host="10.0.0.2", user="ops2", port=2222),
        ],
        become=Become(method="sudo", user="postgres"),
    )
    executor = SshExecutor("pg1", "db1.example", access)
    assert executor.address == "drctl@db1.example:2201"
    assert executor.describe(["pg_ctl", "-D", "/data dir", "promote"], user="postgres") == (
        "ssh -J ops@10.0.0.1:22,ops2@10.0.0.2:2222 -p 2201 drctl@db1.example -- "
        "sudo -n -u postgres -- pg_ctl -D '/data dir' promote"
    )
    assert executor.describe(["true"], user="drctl") == "ssh -J " + (
        "ops@10.0.0.1:22,ops2@10.0.0.2:2222 -p 2201 drctl@db1.example -- true"
    )
    su = SshExecutor(
        "pg1",
        "db1",
        SshAccess(user="root", address="10.1.1.1", become=Become(method="su", user="postgres")),
    )
    assert su.address == "root@10.1.1.1:22"
    assert su.describe(["psql", "-c", "select 1"], user="postgres") == (
        "ssh -p 22 root@10.1.1.1 -- su -s /bin/sh postgres -c 'psql -c '\"'\"'select 1'\"'\"''"
    )


def test_a_user_without_become_is_a_clear_error() -> None:
    executor = SshExecutor("pg1", "127.0.0.2", SshAccess(user="drctl"))
    with pytest.raises(
        InputError, match=r"node pg1 must run this command as postgres.*ssh\.become"
    ):
        executor.run(["pg_ctl", "status"], user="postgres")
    assert executor.connections == 0  # refused before connecting


def test_env_values_never_reach_the_command_line() -> None:
    command = wrap_command(["psql", "-c", "select 1"], env=True, cwd="/srv")
    assert "s3cret" not in command and "PGPASSWORD" not in command
    sudo = wrap_command(["psql"], become=("sudo", "postgres"), env=True)
    assert sudo.startswith("exec sudo -n -u postgres -- sh -c ")
    assert "cd -- / &&" in sudo  # another user: start from a directory it may enter
    executor = SshExecutor("pg1", "127.0.0.2", SshAccess(user="drctl"))
    with pytest.raises(InputError, match="newline"):
        executor.run(["true"], env={"PGPASSWORD": "two\nlines"})
    with pytest.raises(InputError, match="not a valid environment variable name"):
        executor.run(["true"], env={"BAD NAME": "x"})


def _public_paramiko_exceptions() -> set[type[BaseException]]:
    found = set()
    for module in (paramiko, paramiko.ssh_exception):
        for name in dir(module):
            value = getattr(module, name)
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("paramiko")
                and not name.startswith("_")
            ):
                found.add(value)
    return found


def test_every_paramiko_exception_maps_to_one_of_ours() -> None:
    classes = _public_paramiko_exceptions()
    assert len(classes) >= 15  # SSHException, AuthenticationException, BadHostKeyException, ...
    assert classes == set(PARAMIKO_EXCEPTIONS)
    missing = sorted(c.__name__ for c in classes if c not in ERROR_TABLE)
    assert not missing, f"paramiko exceptions without an entry in ERROR_TABLE: {missing}"
    for klass in classes:
        assert issubclass(ERROR_TABLE[klass], DrillError), klass
    for klass in (
        TimeoutError,
        socket.timeout,
        ConnectionRefusedError,
        ConnectionResetError,
        OSError,
        EOFError,
        socket.gaierror,
    ):
        assert issubclass(ERROR_TABLE[klass], ConnectionFailed), klass
    assert ERROR_TABLE[paramiko.BadHostKeyException] is HostKeyRejected
    assert ERROR_TABLE[paramiko.AuthenticationException] is AuthenticationFailed


def test_translate_names_node_address_and_fingerprints() -> None:
    where = {"node": "pg1", "address": "127.0.0.2:2201", "doing": "logging in as drctl to"}
    refused = translate(ConnectionRefusedError(111, "Connection refused"), **where)
    assert isinstance(refused, ConnectionFailed)
    assert "host pg1" in str(refused) and "127.0.0.2:2201" in str(refused)
    offered, expected = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    changed = translate(paramiko.BadHostKeyException("127.0.0.2", offered, expected), **where)
    assert isinstance(changed, HostKeyRejected)
    assert host_key_fingerprint(offered) in str(changed)
    assert host_key_fingerprint(expected) in str(changed)
    assert isinstance(
        translate(paramiko.AuthenticationException("no"), **where), AuthenticationFailed
    )
    assert isinstance(translate(EOFError(), **where), ConnectionFailed)
    assert isinstance(translate(TimeoutError(), **where), ConnectionFailed)
    assert isinstance(
        translate(paramiko.SSHException("Error reading banner"), **where), ConnectionFailed
    )
    odd = translate(ValueError("odd"), **where)  # nothing paramiko documents: still ours
    assert type(odd) is ExecutorError
    own = HostKeyRejected("x")
    assert translate(own, **where) is own
    key_file = translate(paramiko.PasswordRequiredException("x"), **where, local_file="/k")
    assert isinstance(key_file, InputError) and "passphrase_env" in str(key_file)


def test_known_hosts_lines_and_fingerprints() -> None:
    key = paramiko.ECDSAKey.generate()
    line = f"{key.get_name()} {key.get_base64()} comment"
    assert (
        known_hosts_line("127.0.0.2", 2201, line)
        == f"[127.0.0.2]:2201 {key.get_name()} {key.get_base64()}"
    )
    assert known_hosts_line("db1", 22, line) == f"db1 {key.get_name()} {key.get_base64()}"
    assert fingerprint(line) == host_key_fingerprint(key)


# -- commands over a kept connection ------------------------------------------------------------


@needs_sshd
def test_run_exit_code_streams_input_and_cwd(node: SshExecutor) -> None:
    result = node.run(
        ["sh", "-c", "echo out; echo err >&2; cat; pwd; exit 3"],
        check=False,
        input="from stdin\n",
        cwd="/tmp",
    )
    assert result.returncode == 3
    assert result.stdout == "out\nfrom stdin\n/tmp\n"
    assert result.stderr == "err\n"  # the wrapper's drctl-pgid line is taken out
    with pytest.raises(
        CommandFailed, match=r"ssh -p \d+ drctl-ssh-t@127\.0\.0\.2 -- false exited 1"
    ) as failed:
        node.run(["false"])
    assert failed.value.returncode == 1 and failed.value.host == "pg1"
    assert node.run(["id", "-un"]).stdout.strip() == TEST_USER
    assert node.run(["pwd"], user=TEST_USER).stdout.strip() == str(TEST_HOME)  # login user: direct
    assert node.run(["cat"]).stdout == ""  # stdin is closed when there is no input
    with pytest.raises(ExecutorError, match=r"command not found on .*: no-such-command-drctl"):
        node.run(["no-such-command-drctl"], check=False)


@needs_sshd
def test_identity_names_the_host_key_that_matched(
    node: SshExecutor, node_site: SshSite, node_known_hosts: Path
) -> None:
    assert node_site.process is not None
    who = node.identity()
    assert who.address == f"{TEST_USER}@{NODE_ADDRESS}:{node_site.port}"
    assert who.user == TEST_USER and who.hostname == socket.gethostname()
    assert who.host_key_fingerprint == node_site.process.host_fingerprint
    assert who.known_hosts == str(node_known_hosts)


@needs_sshd
def test_env_reaches_the_command_but_no_command_line(node: SshExecutor) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    result = node.run(
        ["sh", "-c", 'printf "%s|%s|" "$PGPASSWORD" "$OTHER"; cat'],
        env={"PGPASSWORD": secret, "OTHER": "a b=c"},
        input="and stdin",
    )
    assert result.stdout == f"{secret}|a b=c|and stdin"
    assert secret not in " ".join(result.argv)
    # While the command runs, no process on the host has the secret on its command line.
    thread, out = in_thread(
        lambda: node.run(["sh", "-c", 'sleep 1; [ -n "$PGPASSWORD" ]'], env={"PGPASSWORD": secret})
    )
    time.sleep(0.5)
    assert processes_matching(secret) == []
    thread.join(10)
    assert out["result"].returncode == 0


@needs_sshd
def test_both_streams_are_read_at_once_and_capped(node: SshExecutor) -> None:
    big = STREAM_LIMIT + 200_000
    script = (
        f'(head -c {big} /dev/zero | tr "\\0" e; echo ERR-END) >&2 & '
        f'head -c {big} /dev/zero | tr "\\0" o; echo OUT-END; wait'
    )
    result = node.run(["sh", "-c", script], timeout=30)
    assert len(result.stdout) == STREAM_LIMIT and result.stdout.endswith("oooOUT-END\n")
    assert len(result.stderr) == STREAM_LIMIT and result.stderr.endswith("eeeERR-END\n")


@needs_sshd
def test_round_trip_on_a_kept_connection(node: SshExecutor) -> None:
    node.run(["true"])
    times = []
    for _ in range(100):
        started = time.perf_counter()
        node.run(["true"])
        times.append(time.perf_counter() - started)
    median = statistics.median(times) * 1000
    print(f"\nSSH round trip of `true` on a kept connection: median {median:.1f} ms")
    assert node.connections == 1


# -- host operations over SSH -----------------------------------------------------------------


@needs_sshd
def test_files_over_ssh(node: SshExecutor) -> None:
    base = f"{TEST_HOME}/files-{uuid.uuid4().hex[:8]}"
    node.make_dirs(f"{base}/a/b", mode=0o750)
    assert node.run(["stat", "-c", "%a %U", f"{base}/a/b"]).stdout.split() == ["750", TEST_USER]
    assert node.exists(f"{base}/a/b") and not node.exists(f"{base}/nope")
    assert node.read_file(f"{base}/nope") is None
    text = "line one\nzwei — 二\n"
    node.write_file(f"{base}/a/conf", text, mode=0o640)
    assert node.read_file(f"{base}/a/conf") == text
    assert Path(f"{base}/a/conf").read_text() == text  # the "remote" host is this machine
    assert oct(Path(f"{base}/a/conf").stat().st_mode & 0o777) == "0o640"
    node.write_file(f"{base}/a/conf", "replaced\n")
    assert node.read_file(f"{base}/a/conf") == "replaced\n"
    assert sorted(p.name for p in Path(f"{base}/a").iterdir()) == ["b", "conf"]  # no temp left
    with pytest.raises(ExecutorError, match="cannot read /etc/shadow"):
        node.read_file("/etc/shadow")
    usage = node.disk_usage(base)
    assert usage.total_bytes > usage.free_bytes > 0 and usage.inodes_total
    node.run(["rm", "-rf", base])


@needs_sshd
def test_free_port_reads_the_hosts_own_table(node: SshExecutor, node_site: SshSite) -> None:
    ports = {node.free_port(NODE_ADDRESS) for _ in range(20)}
    assert node_site.port not in ports
    for port in list(ports)[:3]:
        with socket.socket() as sock:
            sock.bind((NODE_ADDRESS, port))


@needs_sshd
def test_instance_processes_and_signal_over_ssh(node: SshExecutor) -> None:
    data_dir = f"{TEST_HOME}/data-{uuid.uuid4().hex[:8]}"
    node.make_dirs(data_dir)
    seconds = unique_seconds()
    node.run(["sh", "-c", f"cd {data_dir} && setsid sleep {seconds} </dev/null >/dev/null 2>&1 &"])
    wait_for(lambda: processes_matching(seconds))
    (pid,) = processes_matching(seconds)
    node.write_file(f"{data_dir}/postmaster.pid", f"{pid}\n{data_dir}\n")
    found = node.instance_processes(data_dir)
    assert found.pid_file_pid == pid
    assert found.postmaster is not None and found.postmaster.command == "sleep"
    assert found.state == "not running"  # a sleep is not a postmaster
    assert found.live_pids == [pid]
    node.signal([pid], "TERM")
    assert wait_gone(seconds) == []
    assert node.instance_processes(data_dir).live_pids == []
    node.run(["rm", "-rf", data_dir])


# -- host keys ----------------------------------------------------------------------------------


@needs_sshd
def test_an_unknown_host_key_is_refused_and_nothing_runs(
    ssh_lab: SshLab, node_site: SshSite, make_executor: MakeExecutor
) -> None:
    assert node_site.process is not None
    marker = Path(f"{TEST_HOME}/marker-{uuid.uuid4().hex[:8]}")
    other = ssh_lab.known_hosts(name="known_hosts-empty")  # a file without this host
    for known_hosts in (None, other):  # missing file, and a file without the host
        executor = make_executor(node_site, known_hosts)
        started = time.monotonic()
        with pytest.raises(HostKeyRejected) as refused:
            executor.run(["touch", str(marker)])
        message = str(refused.value)
        assert "host pg1" in message and f"{NODE_ADDRESS}:{node_site.port}" in message
        assert node_site.process.host_fingerprint in message and "unknown host key" in message
        assert time.monotonic() - started < 3
        assert not marker.exists()
    assert not (ssh_lab.directory / "none").exists()  # known_hosts is never written


@needs_sshd
def test_a_changed_host_key_is_refused_with_both_fingerprints(
    ssh_lab: SshLab, make_executor: MakeExecutor
) -> None:
    site = ssh_lab.site(NODE_ADDRESS, name="changing")
    assert site.process is not None
    known_hosts = ssh_lab.known_hosts(site)
    before = known_hosts.read_text()
    old = site.process.host_fingerprint
    executor = make_executor(site, known_hosts)
    assert executor.run(["echo", "ok"]).stdout == "ok\n"
    new = site.regenerate_host_key().host_fingerprint
    assert new != old
    marker = Path(f"{TEST_HOME}/marker-{uuid.uuid4().hex[:8]}")
    with pytest.raises(HostKeyRejected) as refused:  # the same executor: it must reconnect
        executor.run(["touch", str(marker)])
    message = str(refused.value)
    assert "CHANGED" in message and old in message and new in message
    assert f"{NODE_ADDRESS}:{site.port}" in message and "host pg1" in message
    assert not marker.exists()
    assert known_hosts.read_text() == before
    site.stop()


# -- authentication and become ----------------------------------------------------------------


@needs_sshd
def test_wrong_user_and_unknown_key_fail_authentication(
    ssh_lab: SshLab, node_site: SshSite, node_known_hosts: Path, make_executor: MakeExecutor
) -> None:
    wrong_user = make_executor(node_site, node_known_hosts, user="nobody")
    with pytest.raises(AuthenticationFailed, match=rf"nobody to {NODE_ADDRESS}:{node_site.port}"):
        wrong_user.run(["true"])
    from drills.lab.sshd import generate_key

    stranger = ssh_lab.directory / "id_stranger"
    generate_key(stranger, "not authorized")
    wrong_key = make_executor(node_site, node_known_hosts, key_file=str(stranger))
    with pytest.raises(AuthenticationFailed, match="refused the login"):
        wrong_key.run(["true"])
    missing = make_executor(node_site, node_known_hosts, key_file=str(ssh_lab.directory / "nokey"))
    with pytest.raises(InputError, match="nokey"):
        missing.run(["true"])


@needs_sshd
def test_an_encrypted_key_with_its_passphrase_from_the_environment(
    ssh_lab: SshLab,
    node_site: SshSite,
    node_known_hosts: Path,
    make_executor: MakeExecutor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = ssh_lab.directory / "id_encrypted"
    subprocess.run(
        ["ssh-keygen", "-t", "ed25519", "-N", "open sesame", "-q", "-f", str(key)], check=True
    )
    node_site.set_authorized_keys(
        TEST_USER, ssh_lab.pubkey + "\n" + key.with_suffix(".pub").read_text()
    )
    executor = make_executor(
        node_site, node_known_hosts, key_file=str(key), passphrase_env="DRCTL_T_PASSPHRASE"
    )
    with pytest.raises(InputError, match="DRCTL_T_PASSPHRASE"):
        executor.run(["true"])  # not set
    monkeypatch.setenv("DRCTL_T_PASSPHRASE", "wrong")
    with pytest.raises(InputError, match=str(key)):
        executor.run(["true"])
    monkeypatch.setenv("DRCTL_T_PASSPHRASE", "open sesame")
    assert executor.run(["echo", "in"]).stdout == "in\n"
    no_passphrase = make_executor(node_site, node_known_hosts, key_file=str(key))
    with pytest.raises(InputError, match="passphrase_env"):
        no_passphrase.run(["true"])
    node_site.set_authorized_keys(TEST_USER, ssh_lab.pubkey)


@needs_sshd
def test_sudo_become_runs_through_sudo_n_and_reports_a_password_prompt(
    node_site: SshSite, node_known_hosts: Path, make_executor: MakeExecutor
) -> None:
    # The node site's PATH starts with a stand-in sudo (see sshd_fixtures.FAKE_SUDO).
    executor = make_executor(
        node_site, node_known_hosts, become=Become(method="sudo", user="postgres")
    )
    result = executor.run(
        ["sh", "-c", 'printf "%s " "$DRCTL_T"; pwd; cat'],
        user="postgres",
        env={"DRCTL_T": "v"},
        input="in",
    )
    assert result.stdout == "v /\nin"
    assert result.argv[:5] == ("sudo", "-n", "-u", "postgres", "--")
    started = time.monotonic()
    with pytest.raises(BecomeFailed, match=r"wants a password.*NOPASSWD") as failed:
        executor.run(["pg_ctl", "status"], user="needs-password", check=False)
    assert time.monotonic() - started < 3 and "host pg1" in str(failed.value)
    seconds = unique_seconds()
    with pytest.raises(CommandTimeout):
        executor.run(["sleep", seconds], user="postgres", timeout=0.5)
    assert wait_gone(seconds) == []


@needs_sshd
def test_real_sudo_that_wants_a_password_fails_fast(
    ssh_lab: SshLab, bastion_site: SshSite, make_executor: MakeExecutor
) -> None:
    if not Path("/usr/bin/sudo").exists():
        pytest.skip("sudo is not installed here (apt-get install sudo); the stand-in covers it")
    executor = make_executor(
        bastion_site,
        ssh_lab.known_hosts(bastion_site),
        become=Become(method="sudo", user="nobody"),
    )
    started = time.monotonic()
    with pytest.raises(BecomeFailed, match="NOPASSWD"):
        executor.run(["true"], user="nobody")
    assert time.monotonic() - started < 5


@needs_sshd
def test_su_become_as_root(
    ssh_lab: SshLab, bastion_site: SshSite, make_executor: MakeExecutor
) -> None:
    known_hosts = ssh_lab.known_hosts(bastion_site)
    root = make_executor(
        bastion_site,
        known_hosts,
        user="root",
        key_file=str(ssh_lab.root_key),
        become=Become(method="su", user=TEST_USER),
    )
    assert root.run(["id", "-un"]).stdout.strip() == "root"
    result = root.run(
        ["sh", "-c", 'id -un; pwd; echo "$DRCTL_T"; cat'],
        user=TEST_USER,
        env={"DRCTL_T": "x y"},
        input="piped",
    )
    assert result.stdout == f"{TEST_USER}\n/\nx y\npiped"
    assert root.run(["pwd"], user=TEST_USER, cwd="/tmp").stdout == "/tmp\n"
    seconds = unique_seconds()
    with pytest.raises(CommandTimeout, match="killed"):
        root.run(["sleep", seconds], user=TEST_USER, timeout=0.5)
    assert wait_gone(seconds) == []
    # su for a login user that is not root needs a password: a clear error, no hang.
    plain = make_executor(bastion_site, known_hosts, become=Become(method="su", user="root"))
    started = time.monotonic()
    with pytest.raises(BecomeFailed, match="su works only when drctl logs in as root"):
        plain.run(["true"], user="root")
    assert time.monotonic() - started < 10


# -- connections --------------------------------------------------------------------------------


@needs_sshd
def test_nothing_listening_fails_fast_naming_the_address(
    ssh_lab: SshLab, make_executor: MakeExecutor, node_site: SshSite
) -> None:
    port = free_port(NODE_ADDRESS)
    site = SshSite(ssh_lab.directory / "never", NODE_ADDRESS, port, [TEST_USER], {})
    executor = make_executor(site, None)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match=rf"{NODE_ADDRESS}:{port}.*refused") as failed:
        executor.run(["true"])
    assert "host pg1" in str(failed.value)
    assert time.monotonic() - started < 2


@needs_sshd
def test_a_server_that_never_speaks_times_out_at_the_connect_timeout(
    ssh_lab: SshLab, make_executor: MakeExecutor
) -> None:
    with socket.socket() as silent:
        silent.bind((NODE_ADDRESS, 0))
        silent.listen()
        port = silent.getsockname()[1]
        site = SshSite(ssh_lab.directory / "silent", NODE_ADDRESS, port, [TEST_USER], {})
        executor = make_executor(site, None, connect_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match=rf"{NODE_ADDRESS}:{port}") as failed:
            executor.run(["true"])
        assert time.monotonic() - started < 3
        assert "banner" in str(failed.value).lower() or "time" in str(failed.value).lower()


@needs_sshd
def test_a_command_past_its_timeout_is_killed_on_the_host(node: SshExecutor) -> None:
    seconds = unique_seconds()
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=rf"sleep {seconds} did not finish within 0.5s"):
        node.run(["sleep", seconds], timeout=0.5)
    assert time.monotonic() - started < 3
    assert wait_gone(seconds) == []
    # A command that closed its output but goes on is killed as well.
    seconds = unique_seconds()
    with pytest.raises(CommandTimeout):
        node.run(["sh", "-c", f"exec >&- 2>&-; sleep {seconds}"], timeout=0.5)
    assert wait_gone(seconds) == []
    assert node.run(["echo", "still usable"]).stdout == "still usable\n"


@needs_sshd
def test_sshd_killed_during_a_command(ssh_lab: SshLab, make_executor: MakeExecutor) -> None:
    site = ssh_lab.site(NODE_ADDRESS, name="killed")
    assert site.process is not None
    executor = make_executor(site, ssh_lab.known_hosts(site))
    seconds = unique_seconds()
    thread, out = in_thread(lambda: executor.run(["sleep", seconds], timeout=60))
    try:
        wait_for(lambda: processes_matching(seconds))
        started = time.monotonic()
        site.process.kill_all()  # the master and every connection's processes
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 5
        error = out.get("error")
        assert isinstance(error, ConnectionFailed), out
        message = str(error)
        assert "host pg1" in message and f"{NODE_ADDRESS}:{site.port} lost" in message
        assert f"while running sleep {seconds}" in message
    finally:
        # the orphaned sleep belongs to this test: this machine is the "remote" host
        for pid in processes_matching(seconds):
            import os
            import signal

            os.kill(pid, signal.SIGKILL)
    assert wait_gone(seconds) == []


@needs_sshd
def test_connection_is_reused_and_remade_once_when_dropped(
    ssh_lab: SshLab, make_executor: MakeExecutor
) -> None:
    site = ssh_lab.site(NODE_ADDRESS, name="reuse")
    assert site.process is not None
    executor = make_executor(site, ssh_lab.known_hosts(site))
    executor.run(["true"])
    first = executor.transport
    executor.run(["true"])
    assert executor.transport is first and executor.connections == 1
    assert first is not None
    keepalive = first.packetizer._Packetizer__keepalive_interval  # type: ignore[attr-defined]
    assert keepalive == 10  # access.keepalive
    assert len(site.process.session_pids()) >= 1
    site.process.kill_sessions()  # the server side drops the connection between commands
    wait_for(lambda: first is not None and not first.is_active())
    assert executor.run(["echo", "again"]).stdout == "again\n"
    assert executor.connections == 2 and executor.transport is not first
    # dropped and not yet noticed: the next command still gets through, on one new connection
    second = executor.transport
    site.process.kill_sessions()
    assert executor.run(["echo", "third"]).stdout == "third\n"
    assert executor.connections == 3 and executor.transport is not second
    executor.close()
    assert executor.transport is None


@needs_sshd
def test_jump_hosts_any_depth(
    ssh_lab: SshLab,
    node_site: SshSite,
    bastion_site: SshSite,
    node_known_hosts: Path,
    make_executor: MakeExecutor,
) -> None:
    assert bastion_site.process is not None
    bastion_known = ssh_lab.known_hosts(bastion_site)
    hop = ssh_lab.jump(bastion_site, bastion_known)
    executor = make_executor(node_site, node_known_hosts, jump=[hop])
    assert executor.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout.split()[2:] == [
        NODE_ADDRESS,
        str(node_site.port),
    ]
    assert executor.describe(["true"]).startswith(
        f"ssh -J {TEST_USER}@{bastion_site.address}:{bastion_site.port} -p {node_site.port} "
    )
    assert len(bastion_site.process.session_pids()) >= 1  # the tunnel runs through the bastion
    executor.close()  # closes the bastion's connection too
    wait_for(lambda: bastion_site.process is not None and not bastion_site.process.session_pids())
    deep = make_executor(node_site, node_known_hosts, jump=[hop, hop])  # bastion, bastion, node
    assert deep.run(["echo", "deep"]).stdout == "deep\n"
    # Each bastion's key is checked against its own known_hosts.
    unknown_bastion = make_executor(
        node_site, node_known_hosts, jump=[ssh_lab.jump(bastion_site, node_known_hosts)]
    )
    with pytest.raises(HostKeyRejected, match=rf"{bastion_site.address}:{bastion_site.port}"):
        unknown_bastion.run(["true"])
    # ... and the node's against the node's, through the tunnel.
    unknown_node = make_executor(node_site, bastion_known, jump=[hop])
    with pytest.raises(HostKeyRejected, match=rf"{NODE_ADDRESS}:{node_site.port}"):
        unknown_node.run(["true"])
    # A bastion that cannot reach the node names both.
    nowhere = free_port(NODE_ADDRESS)
    lost = SshExecutor(
        "pg1",
        NODE_ADDRESS,
        ssh_lab.access(node_site, node_known_hosts, port=nowhere, jump=[hop]),
    )
    with pytest.raises(ConnectionFailed, match=rf"through {bastion_site.address}.*:{nowhere}"):
        lost.run(["true"])
    lost.close()


# -- the lab's sshd -----------------------------------------------------------------------------


@needs_sshd
def test_sshd_on_a_taken_port_is_a_lab_error(ssh_lab: SshLab, node_site: SshSite) -> None:
    started = time.monotonic()
    with pytest.raises(LabError, match=rf"{NODE_ADDRESS}:{node_site.port}"):
        start_sshd(
            ssh_lab.directory / "clash",
            NODE_ADDRESS,
            node_site.port,
            [TEST_USER],
            {TEST_USER: ssh_lab.pubkey},
        )
    assert time.monotonic() - started < 5
    assert processes_matching(str(ssh_lab.directory / "clash")) == []


@needs_sshd
def test_ensure_os_user_is_idempotent(ssh_lab: SshLab) -> None:
    from drills.lab.sshd import ensure_os_user

    assert ensure_os_user(TEST_USER, TEST_HOME) == []
