"""The quarterly inspection (巡检) on a real lab: every item observed for real, findings provoked
for real (a session idle in an open transaction, a long statement, an impossible disk threshold,
no backup yet), and the report in the hospital's format rendered from the sealed record.

The whole inspection runs on both session labs (`any_lab`): at the two-site lab every item is
observed over SSH on the sites' hosts. The provoked findings run through the runner without
Prefect, on a one-host lab of their own (their own DRCTL_HOME). One test runs
every item against a fake host executor and a fake SQL session, with the machine's own files,
filesystems and processes out of reach: every observation comes through the node's executors.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pypdf
import pytest
import yaml

from drills.engine.targets import Targets
from drills.executors.host import CommandResult, PosixHost
from drills.lab.onehost import Lab
from drills.model.environment import Environment, Node
from drills.model.record import Record
from tests.helpers import REPO, drctl
from tests.labs import AnyLab
from tests.pg_fixtures import (
    dsn_of,
    environment,
    postgres_processes_under,
    private_home,
    run,
    steps_of,
    variant,
)
from verify import inspection

needs_lab = pytest.mark.lab

ITEMS = 14  # checks in playbooks/pg-inspection.yaml


@pytest.fixture(scope="module")
def inspection_home() -> Iterator[Path]:
    with private_home("drctl-inspection-") as inspection_home:
        lab = Lab(inspection_home)
        lab.up()
        try:
            yield inspection_home
        finally:
            lab.down()
            leftovers = postgres_processes_under(inspection_home)
            assert not leftovers, leftovers


@pytest.fixture
def primary_dsn(inspection_home: Path) -> str:
    return dsn_of(environment(inspection_home)["nodes"]["pg1"])


def only(tmp_path: Path, steps: dict[str, dict[str, Any]], name: str) -> Path:
    """pg-inspection with only ``steps``, each check's parameters updated as given."""
    data = yaml.safe_load((REPO / "playbooks" / "pg-inspection.yaml").read_text())
    kept = []
    for step in data["steps"]:
        if step["id"] in steps:
            step["verify"][0]["with"] = {**step["verify"][0].get("with", {}), **steps[step["id"]]}
            kept.append(step)
    data["steps"], data["name"] = kept, name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def observed(record: Record, step: str, index: int = 0) -> Any:
    return steps_of(record)[f"main:{step}"].checks[index].observed


def report(record: Record, fmt: str, lang: str = "zh") -> bytes:
    from drills.home import subdir
    from drills.records.store import RecordStore
    from drills.reports import render_report

    store = RecordStore(subdir("records"), subdir("locks"))
    return render_report(store.sealed(record.id), fmt=fmt, lang=lang)


@needs_lab
def test_a_healthy_lab_is_normal_but_for_the_missing_backup_until_one_is_taken(
    any_lab: AnyLab, tmp_path: Path
) -> None:
    with any_lab.active():
        any_lab.wait_streaming()
        any_lab.remove_backups()  # earlier tests may have taken some
        record = run("pg-inspection", any_lab.env)
        primary, standby = record.roles["primary"], record.roles["standby"]

        # No backup yet: that one finding fails the inspection, and the reason names it.
        assert record.status == "failed"
        assert "backup_age" in record.reason
        steps = steps_of(record)
        assert {k for k, s in steps.items() if s.status != "passed"} == {"main:backup_age"}
        assert sum(len(s.checks) for s in record.steps) == ITEMS
        backup = observed(record, "backup_age")
        # Looked for on the nodes' own hosts, beside their data directories, never in
        # DRCTL_HOME. The playbook looks on the primary's host and the standby's (also_on:
        # [standby]): at the one-host lab that is one host, searched once; at the two-site lab
        # each site's host, over SSH.
        roots = {
            name: f"{any_lab.work_dir(name)}/drctl-backups/{any_lab.env}"
            for name in (primary, standby)
        }
        if any_lab.over_ssh:
            assert roots[primary] != roots[standby]
            looked_in = f"{primary}:{roots[primary]}, {standby}:{roots[standby]}"
        else:
            looked_in = roots[primary]
        assert backup["found"] == 0 and backup["looked_in"] == looked_in
        assert "no backup found" in steps["main:backup_age"].checks[0].detail

        # Every observation is a real value read from the servers and their hosts.
        pg = any_lab.node(primary).postgres
        assert pg is not None
        disk = observed(record, "primary_disk")
        assert 0 < disk["used_percent"] < 100 and disk["free_bytes"] > 0
        assert disk["size_bytes"] == disk["used_bytes"] + disk["free_bytes"]
        assert disk["path"] == pg.data_dir
        assert observed(record, "standby_disk")["path"] == any_lab.node(standby).postgres.data_dir  # type: ignore[union-attr]
        wal = observed(record, "primary_wal")
        assert wal["wal_bytes"] >= 16 * 1024 * 1024 and wal["segments"] >= 1
        assert wal["wal_bytes"] == wal["segments"] * 16 * 1024 * 1024
        conns = observed(record, "connections")
        assert conns["connections"] > 0 and conns["max_connections"] == 50
        assert observed(record, "long_sessions")["count"] == 0
        assert observed(record, "idle_in_transaction")["count"] == 0
        settings = observed(record, "standby_settings")
        assert settings["values"] == {
            "data_checksums": "on",
            "fsync": "on",
            "full_page_writes": "on",
            "hot_standby": "on",
            "wal_level": "replica",
        }
        streaming_from = f"streaming from {any_lab.node(primary).host}:"
        assert observed(record, "standby_replication", 1).startswith(streaming_from)
        executors = {n["executor"] for n in record.environment["nodes"].values()}
        assert executors == ({"ssh", "local"} if any_lab.over_ssh else {"local"})

        # The report: the hospital's form, the finding and its handling; a PDF with pages.
        html = report(record, "html").decode()
        for field in (
            "季度巡检报告",
            "巡检周期",
            "巡检时间",
            "巡检人",
            "巡检项目",
            "检查结果",
            "标准",
        ):
            assert field in html
        assert "异常项与处理建议" in html and "签字" in html
        assert "最近一次备份时间" in html and "未找到备份" in html and "pg-backup-verify" in html
        assert f"本次巡检共 {ITEMS} 项，正常 {ITEMS - 1} 项，异常 1 项" in html
        assert html.count(">异常</td>") == 1 and html.count(">正常</td>") == ITEMS - 1
        assert "使用率 ≤ 85%" in html  # the standard, from the threshold the check recorded
        english = report(record, "md", "en").decode()
        assert "Quarterly inspection report" in english and "no backup found" in english
        pdf = pypdf.PdfReader(io.BytesIO(report(record, "pdf")))
        assert len(pdf.pages) >= 1
        assert "巡检" in "".join(page.extract_text() or "" for page in pdf.pages)

        # A backup taken by drctl's own pg.basebackup (on the standby's host): now every item
        # is normal, and the backup is found there.
        take = run(
            variant(tmp_path, "pg-backup-verify", name="take", only=["take_backup"]), any_lab.env
        )
        assert take.status == "passed", take.reason
        assert take.steps[0].data["address"] == any_lab.address_of(standby)
        again = run("pg-inspection", any_lab.env)
        assert again.status == "passed", again.reason
        backup = observed(again, "backup_age")
        assert backup["found"] == 1 and 0 <= backup["age_seconds"] < 120
        assert backup["path"] == take.steps[0].data["path"]
        assert backup["path"].startswith(roots[standby] + "/")
        assert backup["host"] == (standby if any_lab.over_ssh else primary)
        assert f"正常 {ITEMS} 项，异常 0 项" in report(again, "html").decode()


@needs_lab
def test_a_session_idle_in_transaction_is_a_finding_that_names_its_pid(
    inspection_home: Path, tmp_path: Path, primary_dsn: str
) -> None:
    playbook = only(tmp_path, {"idle_in_transaction": {"max": "1s"}}, "idle")
    with psycopg.connect(primary_dsn, application_name="ward-app") as held:
        held.execute("select count(*) from pg_class")  # opens a transaction, left open
        pid = held.info.backend_pid
        time.sleep(1.5)
        record = run(playbook)
        held.rollback()
    assert record.status == "failed" and "idle_in_transaction" in record.reason
    found = observed(record, "idle_in_transaction")
    assert found["count"] == 1 and found["longest_seconds"] >= 1.0
    session = found["sessions"][0]
    assert session["pid"] == pid and session["application"] == "ward-app"
    assert f"pid {pid}" in steps_of(record)["main:idle_in_transaction"].checks[0].detail
    assert f"pid {pid}" in report(record, "html").decode()

    # Closed: the same inspection finds nothing.
    assert run(playbook).status == "passed"


@needs_lab
def test_a_long_statement_is_found_with_its_literals_left_out(
    inspection_home: Path, tmp_path: Path, primary_dsn: str
) -> None:
    playbook = only(tmp_path, {"long_sessions": {"max": "1s"}}, "long")
    conn = psycopg.connect(primary_dsn, autocommit=True)
    errors: list[BaseException] = []

    def sleeper() -> None:
        try:
            conn.execute("select pg_sleep(30), 'Zhang San, bed 12'")
        except psycopg.errors.QueryCanceled:
            pass
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    thread = threading.Thread(target=sleeper, daemon=True)
    thread.start()
    try:
        time.sleep(1.5)
        record = run(playbook)
    finally:
        conn.cancel()
        thread.join(10)
        conn.close()
    assert not thread.is_alive() and not errors
    assert record.status == "failed" and "long_sessions" in record.reason
    found = observed(record, "long_sessions")
    assert found["count"] == 1 and found["longest_seconds"] >= 1.0
    session = found["sessions"][0]
    assert session["query"] == "select pg_sleep(?), ?"
    assert "Zhang San" not in report(record, "html").decode()


@needs_lab
def test_an_impossible_disk_threshold_is_a_finding(inspection_home: Path, tmp_path: Path) -> None:
    playbook = only(tmp_path, {"primary_disk": {"max_used_percent": 0}}, "disk")
    record = run(playbook)
    assert record.status == "failed" and "primary_disk" in record.reason
    check = steps_of(record)["main:primary_disk"].checks[0]
    assert check.verdict == "deviated" and check.observed["used_percent"] > 0
    assert check.expected.startswith("<= 0% used")


@needs_lab
def test_the_cli_renders_the_inspection_report(inspection_home: Path, tmp_path: Path) -> None:
    record = run(only(tmp_path, {"connections": {}}, "conn"))
    assert record.status == "passed", record.reason
    out = tmp_path / "r.pdf"
    done = drctl("report", record.id, "--format", "pdf", "--out", str(out), home=inspection_home)
    assert done.returncode == 0, done.stderr
    assert len(pypdf.PdfReader(io.BytesIO(out.read_bytes())).pages) >= 1
    md = drctl("report", record.id, "--format", "md", "--out", "-", home=inspection_home)
    assert md.returncode == 0 and "季度巡检报告" in md.stdout and "主库连接数" in md.stdout


# -- every item through the node's executors -----------------------------------------------------

REMOTE_DATA = "/srv/pg/main/data"  # exists on the fake host only
GIB = 1024**3


class RecordingHost(PosixHost):
    """A host that is not this machine: it answers ``df``, ``stat`` and ``find`` from canned
    output and records every command it was asked to run, with the user it was to run as."""

    def __init__(self, host: str, answers: dict[str, str]) -> None:
        self.host = host
        self.answers = answers
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    @property
    def address(self) -> str:
        return f"fake@{self.host}"

    def describe(self, argv: Sequence[str], user: str | None = None) -> str:
        return " ".join(argv)

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
        self.calls.append((tuple(argv), user))
        text = " ".join(argv)
        for needle, out in self.answers.items():
            if needle in text:
                return CommandResult(tuple(argv), 0, out, "", 0.01)
        raise AssertionError(f"unexpected command on {self.host}: {text}")


class FakeSql:
    """The node's SQL session: canned rows by a piece of the query."""

    def __init__(self, host: str, answers: dict[str, list[tuple[Any, ...]]]) -> None:
        self.host = host
        self.answers = answers
        self.queries: list[str] = []

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> list[tuple[Any, ...]]:
        self.queries.append(sql)
        for needle, rows in self.answers.items():
            if needle in sql:
                return rows
        raise AssertionError(f"unexpected query on {self.host}: {sql}")

    def scalar(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        rows = self.query(sql, params, timeout=timeout)
        return rows[0][0] if rows else None

    def close(self) -> None:
        return None


class FakeConnector:
    def __init__(self, host: RecordingHost, sql: FakeSql) -> None:
        self.fake_host, self.fake_sql = host, sql

    def host(self, name: str, node: Node) -> RecordingHost:
        return self.fake_host

    def sql(self, name: str, node: Node) -> FakeSql:
        return self.fake_sql

    def http(self, name: str, node: Node) -> Any:
        raise AssertionError("no HTTP in an inspection")


def _forbid_local_access(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's filesystems, processes and DRCTL_HOME are out of reach."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"local access: {args!r}")

    monkeypatch.setattr(shutil, "disk_usage", refuse)
    monkeypatch.setattr(os, "statvfs", refuse)
    monkeypatch.setattr(os, "listdir", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr("drills.home.drctl_home", refuse)


def test_every_item_goes_through_the_nodes_executors(monkeypatch: pytest.MonkeyPatch) -> None:
    env = Environment.model_validate(
        {
            "name": "his",
            "nodes": {
                "db1": {
                    "role": "primary",
                    "host": "10.1.2.3",
                    "postgres": {
                        "data_dir": REMOTE_DATA,
                        "bin_dir": "/usr/lib/postgresql/17/bin",
                        "os_user": "postgres",
                    },
                }
            },
        }
    )
    root = "/srv/pg/main/drctl-backups/his"
    host = RecordingHost(
        "db1",
        {
            # df -P -B1: 100 GiB, 30 used, 60 available (10 reserved for root)
            "df -P -B1": f"Filesystem 1-blocks Used Available Capacity Mounted on\n"
            f"/dev/vdb {100 * GIB} {30 * GIB} {60 * GIB} 34% /srv\n",
            "df -P -i": "Filesystem Inodes IUsed IFree IUse% Mounted on\n"
            "/dev/vdb 1000 10 990 1% /srv\n",
            "stat -c %m": "/srv\n",
            "backup_manifest": f"1700003600\n1700000000.5 {root}/db2/base/20231114T221320Z\n"
            f"1699990000.0 {root}/db1/base/20231114T193000Z\n",
        },
    )
    sql = FakeSql(
        "db1",
        {
            "pg_ls_waldir": [(3 * 16 * 1024 * 1024, 3)],
            "pg_ls_archive_statusdir": [(0,)],
            "max_connections": [(7, 100, 3)],
            "state = 'active'": [],
            "idle in transaction": [],
            "pg_stat_archiver": [
                ("on", 12, "000000010000000000000003", 1700000000.0, 0, None, 1700000060.0)
            ],
            "pg_settings": [
                ("fsync", "on"),
                ("full_page_writes", "on"),
                ("wal_level", "replica"),
                ("data_checksums", "off"),
            ],
        },
    )
    targets = Targets(env, {"primary": "db1"}, FakeConnector(host, sql))
    _forbid_local_access(monkeypatch)

    disk = inspection.disk_space(targets, "primary", inspection.DiskParams())
    assert disk.held
    assert disk.observed["path"] == REMOTE_DATA and disk.observed["mount"] == "/srv"
    assert (disk.observed["used_bytes"], disk.observed["free_bytes"]) == (30 * GIB, 60 * GIB)
    assert disk.observed["size_bytes"] == 90 * GIB and disk.observed["used_percent"] == 33.3

    wal = inspection.wal_space(targets, "primary", inspection.WalParams())
    assert wal.held and wal.observed["segments"] == 3 and wal.observed["mount"] == "/srv"

    assert inspection.connections(targets, "primary", inspection.ConnectionsParams()).held
    assert inspection.long_sessions(targets, "primary", inspection.LongSessionsParams()).held
    assert inspection.idle_in_transaction(targets, "primary", inspection.IdleParams()).held

    backup = inspection.backup_age(targets, "primary", inspection.BackupAgeParams())
    assert backup.held, backup.detail
    assert backup.observed["found"] == 2
    assert backup.observed["path"] == f"{root}/db2/base/20231114T221320Z"  # a standby's too
    assert backup.observed["age_seconds"] == 3599.5  # on the host's clock, not this machine's
    archiver = inspection.backup_age(
        targets, "primary", inspection.BackupAgeParams(method="archiver")
    )
    assert archiver.held and archiver.observed["age_seconds"] == 60.0

    settings = inspection.settings(targets, "primary", inspection.SettingsParams())
    assert not settings.held and settings.observed["wrong"] == {"data_checksums": "off"}

    # Every command ran on the node's host, as the database's OS user.
    commands = [" ".join(argv) for argv, _ in host.calls]
    assert {user for _, user in host.calls} == {"postgres"}
    assert f"df -P -B1 {REMOTE_DATA}" in commands
    assert f"df -P -B1 {REMOTE_DATA}/pg_wal/." in commands
    assert any("stat -c %m" in c and c.endswith(REMOTE_DATA) for c in commands)
    (find,) = [argv for argv, _ in host.calls if "backup_manifest" in " ".join(argv)]
    # Beside the data directory on that host (every node's base/), never DRCTL_HOME.
    assert find[-3:] == (root, "4", "*/base/*/backup_manifest")
    assert len(sql.queries) == 7  # wal 2, connections, long, idle, archiver, settings


def test_backup_age_with_no_backup_names_where_it_looked_on_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = Environment.model_validate(
        {
            "name": "his",
            "nodes": {
                "db2": {
                    "role": "standby",
                    "host": "10.1.2.4",
                    "postgres": {"data_dir": "/data/pg/", "bin_dir": "/usr/bin"},
                }
            },
        }
    )
    host = RecordingHost("db2", {"backup_manifest": "1700000000\n"})
    targets = Targets(env, {"standby": "db2"}, FakeConnector(host, FakeSql("db2", {})))
    _forbid_local_access(monkeypatch)
    found = inspection.backup_age(targets, "standby", inspection.BackupAgeParams())
    assert not found.held and found.observed["found"] == 0
    assert found.observed["looked_in"] == "/data/drctl-backups/his"
    given = inspection.backup_age(
        targets, "standby", inspection.BackupAgeParams(backup_dir="/backup/pg/")
    )
    assert given.observed["looked_in"] == "/backup/pg"
    assert host.calls[-1][0][-3:] == ("/backup/pg", "2", "*/backup_manifest")
    assert host.calls[-1][1] is None  # no os_user configured: as the login user
