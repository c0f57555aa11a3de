"""The two-site lab (`drctl lab up --sites 2`): site A on 127.0.0.2 and site B on 127.0.0.3, each
with its own sshd and OS user, PostgreSQL reached only over SSH, the HIS stand-in on 127.0.0.4.

Real sshd, real PostgreSQL; skipped (with the reason) where sshd cannot run (not root, or no
openssh-server). Every lab started here is taken down here, and the tests check by pid and by
command line that nothing of it is left running.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from drills.executors.postgres import SqlExecutor
from drills.executors.ssh import SshExecutor
from drills.lab import twosite
from drills.lab.sshd import sshd_available
from drills.lab.twosite import ENVIRONMENT_NAME, TwoSiteLab
from drills.model.environment import Environment, SshAccess
from drills.model.errors import ConnectionFailed, HostKeyRejected, LabError
from tests.helpers import drctl

pytestmark = pytest.mark.lab

SSHD_MISSING = sshd_available()
needs_sshd = pytest.mark.skipif(SSHD_MISSING is not None, reason=SSHD_MISSING or "")
SITES = {
    "pg1": ("site-a", "127.0.0.2", "drctl-site-a"),
    "pg2": ("site-b", "127.0.0.3", "drctl-site-b"),
}


def _new_home() -> Path:
    # The site users must traverse it (pytest's tmp dirs are 0700).
    home = Path(tempfile.mkdtemp(prefix="drctl-2site-test-", dir="/tmp"))
    home.chmod(0o755)
    return home


def _teardown(home: Path) -> None:
    try:
        TwoSiteLab(home).down()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie waits only for its parent to reap it


def _processes_naming(path: Path) -> list[str]:
    """Live processes whose command line names ``path`` or that work under it."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if (str(path) in cmdline or cwd.startswith(str(path))) and _alive(int(entry)):
            found.append(f"{entry}: {cmdline[:150]}")
    return found


def _recorded_pids(lab: TwoSiteLab) -> list[int]:
    """Every pid the lab knows of: the sshds (lab.json), the postmasters, the HIS stand-in."""
    state = json.loads(lab.state_file.read_text())
    pids = [int(site["sshd_pid"]) for site in state["sites"]]
    pids += [node.pid for node in lab.status() if node.pid is not None]
    app = lab.app_status()
    if app is not None:
        pids.append(int(str(app["pid"])))
    return pids


def _sql(host: str, port: int, name: str) -> SqlExecutor:
    dsn = f"host={host} port={port} user=postgres dbname=postgres connect_timeout=2"
    return SqlExecutor(dsn, host=name)


def _assert_nothing_left(lab: TwoSiteLab, pids: list[int]) -> None:
    deadline = time.monotonic() + 5  # a killed process may take a moment to become a zombie
    while time.monotonic() < deadline and (
        any(_alive(p) for p in pids) or _processes_naming(lab.lab_dir)
    ):
        time.sleep(0.05)
    assert [p for p in pids if _alive(p)] == []
    assert _processes_naming(lab.lab_dir) == []
    assert not lab.state_file.exists() and not lab.environment_file.exists()
    assert not any((lab.lab_dir / name).exists() for name in ("site-a", "site-b", "known_hosts"))


@pytest.fixture(scope="module")
def site_home() -> Iterator[Path]:
    if SSHD_MISSING is not None:
        pytest.skip(SSHD_MISSING)
    home = _new_home()
    try:
        result = TwoSiteLab(home).up()
        assert result.created
        yield home
    finally:
        _teardown(home)


@pytest.fixture
def fresh_home() -> Iterator[Path]:
    if SSHD_MISSING is not None:
        pytest.skip(SSHD_MISSING)
    home = _new_home()
    try:
        yield home
    finally:
        _teardown(home)


# -- a lab that is up --------------------------------------------------------------------------


@needs_sshd
def test_both_servers_listen_on_one_port_each_on_its_own_address(site_home: Path) -> None:
    nodes = {node.name: node for node in TwoSiteLab(site_home).status()}
    assert {name: node.role for name, node in nodes.items()} == {
        "pg1": "primary",
        "pg2": "standby",
    }
    port = nodes["pg1"].port
    assert nodes["pg2"].port == port
    for name, (_site, address, _user) in SITES.items():
        assert nodes[name].host == address and nodes[name].pid is not None
        answer = _sql(address, port, name).query(
            "select host(inet_server_addr()), inet_server_port()"
        )
        assert answer == [(address, port)]
    with pytest.raises(ConnectionFailed):  # nothing of the lab listens on 127.0.0.1
        _sql("127.0.0.1", port, "none").scalar("select 1")


@needs_sshd
def test_pg2_streams_from_pg1(site_home: Path) -> None:
    nodes = {node.name: node for node in TwoSiteLab(site_home).status()}
    port = nodes["pg1"].port
    primary, standby = _sql("127.0.0.2", port, "pg1"), _sql("127.0.0.3", port, "pg2")
    rows = primary.query(
        "select state, host(client_addr) from pg_stat_replication where application_name = 'pg2'"
    )
    assert len(rows) == 1 and rows[0][0] == "streaming"
    # Linux gives every loopback connection the source address 127.0.0.1 (the route for
    # 127.0.0.0/8 says `src 127.0.0.1`) and libpq cannot bind a source address: the walsender
    # sees 127.0.0.1, not 127.0.0.3. That it is pg2 shows in application_name and conninfo.
    assert ipaddress.ip_address(rows[0][1]) in ipaddress.ip_network("127.0.0.0/8")
    conninfo = str(standby.scalar("show primary_conninfo"))
    assert f"host=127.0.0.2 port={port}" in conninfo and "application_name=pg2" in conninfo
    primary.query("create table if not exists site_check (id int primary key, note text)")
    primary.query("insert into site_check values (1, 'from site A') on conflict do nothing")
    deadline = time.monotonic() + 10
    while standby.scalar("select count(*) from pg_tables where tablename = 'site_check'") == 0:
        assert time.monotonic() < deadline, "the table did not reach site B within 10 s"
        time.sleep(0.05)
    while standby.scalar("select note from site_check where id = 1") != "from site A":
        assert time.monotonic() < deadline, "the row did not reach site B within 10 s"
        time.sleep(0.05)


@needs_sshd
def test_site_files_belong_to_the_site_users(site_home: Path) -> None:
    lab = TwoSiteLab(site_home)
    state = json.loads(lab.state_file.read_text())
    assert state["ready"] is True and state["pg_port"] != state["ssh_port"]
    for site, (name, (site_name, address, user)) in zip(state["sites"], SITES.items(), strict=True):
        assert (site["node"], site["name"], site["address"]) == (name, site_name, address)
        assert site["os_user"] == user and _alive(site["sshd_pid"])
        uid = pwd.getpwnam(user).pw_uid
        data_dir = Path(site["data_dir"])
        assert data_dir == lab.lab_dir / site_name / "pg"
        assert data_dir.stat().st_uid == uid and data_dir.stat().st_mode & 0o777 == 0o700
        assert Path(site["log_file"]).stat().st_uid == uid
        assert (data_dir / "PG_VERSION").stat().st_uid == uid
        assert Path(site["sshd_config"]).stat().st_uid == 0  # the host's, not the user's
    assert (lab.lab_dir / "site-b" / "pg" / "standby.signal").exists()
    assert lab.key_file.stat().st_mode & 0o777 == 0o600


@needs_sshd
def test_environment_reaches_the_sites_over_ssh_with_strict_host_keys(site_home: Path) -> None:
    lab = TwoSiteLab(site_home)
    text = lab.environment_file.read_text()
    assert text.startswith("# Written by `drctl lab up --sites 2`")
    environment = Environment.model_validate(yaml.safe_load(text))
    assert environment.name == ENVIRONMENT_NAME and not environment.protected
    assert set(environment.nodes) == {"pg1", "pg2", "app"}
    known_hosts = lab.known_hosts.read_text().splitlines()
    assert len(known_hosts) == 2
    for name, (site_name, address, user) in SITES.items():
        node = environment.nodes[name]
        assert node.executor == "ssh" and node.ssh is not None and node.postgres is not None
        assert node.host == address and node.ssh.user == user
        assert node.ssh.key_file == str(lab.key_file)
        assert node.ssh.known_hosts == str(lab.known_hosts)
        assert node.postgres.os_user == user and node.postgres.application_name == name
        assert node.postgres.connect_timeout == 2
        host_key = (lab.lab_dir / site_name / "sshd" / "ssh_host_ed25519_key.pub").read_text()
        expected = f"[{address}]:{node.ssh.port} " + " ".join(host_key.split()[:2])
        assert expected in known_hosts
        with SshExecutor(name, node.host, node.ssh) as executor:
            assert executor.run(["id", "-un"]).stdout.strip() == user
            processes = executor.instance_processes(node.postgres.data_dir)
            assert processes.state == "running"
        stranger = SshAccess(**{**node.ssh.model_dump(), "known_hosts": os.devnull})
        with SshExecutor(name, node.host, stranger) as executor, pytest.raises(HostKeyRejected):
            executor.run(["true"])
    app = environment.nodes["app"]
    assert app.host == "127.0.0.4" and app.http is not None
    assert app.http.base_url == f"http://127.0.0.4:{app.port}"


@needs_sshd
def test_his_standin_on_127_0_0_4_is_served_by_site_a(site_home: Path) -> None:
    lab = TwoSiteLab(site_home)
    app = lab.app_status()
    assert app is not None and app["health"] == 200
    url = str(app["url"])
    assert url.startswith("http://127.0.0.4:")
    created = httpx.post(
        f"{url}/registrations", json={"patient_name": "李四", "department": "内科"}, trust_env=False
    )
    assert created.status_code == 201
    body = created.json()
    port = next(node.port for node in lab.status() if node.name == "pg1")
    assert (body["served_by_host"], body["served_by_port"]) == ("127.0.0.2", port)
    back = httpx.get(f"{url}/registrations/{body['id']}", trust_env=False).json()
    assert back["patient_name"] == "李四" and back["served_by_host"] == "127.0.0.2"


@needs_sshd
def test_cli_status_lists_both_sites(site_home: Path) -> None:
    result = drctl("lab", "status", home=site_home, env={"COLUMNS": "250"})
    assert result.returncode == 0, result.stdout + result.stderr
    for expected in ("site-a", "site-b", "drctl-site-a", "drctl-site-b", "127.0.0.4"):
        assert expected in result.stdout
    status = json.loads(drctl("lab", "status", "--json", home=site_home).stdout)
    assert status["environment"] == "lab-ssh" and list(status["labs"]) == ["lab-ssh"]
    nodes = {node["name"]: node for node in status["nodes"]}
    for name, (site_name, address, user) in SITES.items():
        node = nodes[name]
        assert (node["site"], node["host"], node["os_user"]) == (site_name, address, user)
        assert node["sshd_alive"] is True and node["pid"] is not None
    assert status["app"]["url"].startswith("http://127.0.0.4:")


@needs_sshd
def test_up_again_restarts_what_crashed(site_home: Path) -> None:
    lab = TwoSiteLab(site_home)
    again = lab.up()
    assert not again.created and again.messages == ["lab is already up"]
    pg2 = next(node for node in again.nodes if node.name == "pg2")
    assert pg2.sshd_pid is not None and pg2.pid is not None
    os.kill(pg2.sshd_pid, signal.SIGKILL)  # site B's sshd and its PostgreSQL crash
    os.kill(pg2.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(pg2.sshd_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    crashed = next(node for node in lab.status() if node.name == "pg2")
    assert not crashed.sshd_alive and crashed.role == "down"
    result = lab.up()
    assert "started the sshd of site-b again" in result.messages[0]
    assert "started pg2 on site-b over SSH" in result.messages
    back = next(node for node in result.nodes if node.name == "pg2")
    assert back.sshd_alive and back.pid is not None and back.role == "standby"
    port = back.port
    deadline = time.monotonic() + 30
    primary = _sql("127.0.0.2", port, "pg1")
    query = "select state from pg_stat_replication where application_name = 'pg2'"
    while primary.scalar(query) != "streaming":
        assert time.monotonic() < deadline, "pg2 did not stream again within 30 s"
        time.sleep(0.1)


@needs_sshd
def test_down_leaves_nothing_and_a_second_up_works(site_home: Path) -> None:
    # Last of the module's tests on site_home: it takes that lab down.
    lab = TwoSiteLab(site_home)
    pids = _recorded_pids(lab)
    assert len(pids) == 5  # two sshd, two postmasters, the stand-in
    started = time.monotonic()
    result = drctl("lab", "down", home=site_home)
    down_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sshd of site-a (pid" in result.stdout and "pg2 (pid" in result.stdout
    _assert_nothing_left(lab, pids)

    # Up again, through the CLI: what it starts outlives the `drctl lab up` process.
    started = time.monotonic()
    result = drctl("lab", "up", "--sites", "2", home=site_home)
    up_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "use --env lab-ssh" in result.stdout
    nodes = lab.status()
    assert [(n.name, n.role, n.sshd_alive) for n in nodes] == [
        ("pg1", "primary", True),
        ("pg2", "standby", True),
    ]
    pids = _recorded_pids(lab)
    assert all(_alive(p) for p in pids)
    print(f"two-site lab: down {down_seconds:.1f}s, up {up_seconds:.1f}s (CLI, as processes)")
    lab.down()
    _assert_nothing_left(lab, pids)


# -- failures ----------------------------------------------------------------------------------


@needs_sshd
def test_down_after_a_crash_of_sshd_and_postgres(fresh_home: Path) -> None:
    lab = TwoSiteLab(fresh_home)
    lab.up()
    pids = _recorded_pids(lab)
    nodes = lab.status()
    for node in nodes:  # both sites' sshd die, and the primary with them
        assert node.sshd_pid is not None
        os.kill(node.sshd_pid, signal.SIGKILL)
    pg1 = next(node for node in nodes if node.name == "pg1")
    assert pg1.pid is not None
    os.kill(pg1.pid, signal.SIGKILL)
    result = lab.down()
    assert result.had_lab
    assert any("sshd was not running" in message for message in result.messages)
    _assert_nothing_left(lab, pids)
    assert not lab.down().had_lab


@needs_sshd
def test_failed_up_removes_what_it_made(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never_streams(*args: object) -> None:
        raise LabError("injected: the standby never streams")

    monkeypatch.setattr(twosite, "wait_streaming", never_streams)
    lab = TwoSiteLab(fresh_home)
    with pytest.raises(LabError, match="while waiting for pg2 to stream") as raised:
        lab.up()
    assert "injected" in str(raised.value) and "removed again" in str(raised.value)
    _assert_nothing_left(lab, [])
    assert not lab.exists()


# -- the two labs together, and where the two-site lab cannot run ------------------------------


@needs_sshd
def test_both_labs_coexist_in_the_session_home(lab: Path, lab_ssh: Path) -> None:
    assert lab == lab_ssh
    status = json.loads(drctl("lab", "status", "--json").stdout)
    assert set(status["labs"]) == {"lab", "lab-ssh"}
    assert status["environment"] == "lab"  # the top level stays the one-host lab's
    assert {n["host"] for n in status["labs"]["lab"]["nodes"]} == {"127.0.0.1"}
    two = status["labs"]["lab-ssh"]["nodes"]
    assert {n["host"] for n in two} == {"127.0.0.2", "127.0.0.3"}
    text = drctl("lab", "status", env={"COLUMNS": "250"}).stdout
    assert "lab (one host)" in text and "lab-ssh (two sites, reached over SSH)" in text


def test_normal_user_gets_a_clear_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError) as raised:
        TwoSiteLab(tmp_path).up()
    message = str(raised.value)
    assert "`drctl lab up --sites 2` cannot run here" in message
    assert "not running as root" in message and "`drctl lab up` (the" in message
    assert list(tmp_path.iterdir()) == []  # nothing was made

    monkeypatch.setattr(twosite, "sshd_available", lambda: "no sshd on this machine")
    with pytest.raises(LabError, match="no sshd on this machine"):
        TwoSiteLab(tmp_path).up()

    from drills.cli.app import main

    monkeypatch.setenv("DRCTL_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["drctl", "lab", "up", "--sites", "2"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert "no sshd on this machine" in capsys.readouterr().err


def test_cli_rejects_other_site_counts_and_one_host_options(home: Path) -> None:
    three = drctl("lab", "up", "--sites", "3")
    assert three.returncode == 2 and "--sites must be 1" in three.stderr
    ports = drctl("lab", "up", "--sites", "2", "--primary-port", "5999")
    assert ports.returncode == 2 and "one-host lab" in ports.stderr
