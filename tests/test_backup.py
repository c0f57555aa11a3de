"""Backups that really restore, on a real lab: pg_basebackup → pg_verifybackup → a scratch server
recovered to the backup's end → reconciled with the source → removed; the same with pg_dump.
The shipped playbooks do it all on the standby's host (pg2).

The two end-to-end restore tests run the shipped playbooks unchanged on both session labs
(`any_lab`): the one-host lab, and the two-site lab where the standby's host is site B, reached
only over SSH as its site user (every step's data name that host and address).

Bad input must give a clear error in the record and leave the source untouched: an old backup, a
flipped byte, a scratch directory without space, a missing table. Those run through the runner
without Prefect, on a one-host lab of their own (their own DRCTL_HOME).

And everything happens on the node, through its host executor: a recording executor handed out
by a fake connector sees every command and file of a backup and scratch restore, and the
orchestrator's own DRCTL_HOME gets nothing but the run's state file.
"""

from __future__ import annotations

import ast
import os
import pwd
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.engine.catalogue import Params
from drills.engine.loader import resolve_environment
from drills.engine.targets import LiveConnector, Targets
from drills.engines.postgres.backupdir import TakeParams
from drills.engines.postgres.basebackup import basebackup_run, verifybackup_run
from drills.engines.postgres.compare import ScratchReconcileParams, reconcile_scratch_run
from drills.engines.postgres.dump import DumpParams, dump_run, verifydump_run
from drills.engines.postgres.restore import (
    RestoreParams,
    drop_scratch_run,
    restore_dump_scratch_run,
    restore_scratch_run,
)
from drills.executors.host import CommandResult, DiskUsage, HostExecutor, InstanceProcesses
from drills.executors.local import LocalExecutor
from drills.lab.onehost import Lab
from drills.model.environment import Node
from drills.model.record import Record
from tests.helpers import REPO, drctl
from tests.labs import AnyLab
from tests.pg_fixtures import (
    SEED,
    SEEDED_TABLES,
    dsn_of,
    environment,
    fingerprint,
    postgres_processes_under,
    private_home,
    run,
    sql,
    steps_of,
    user_dir,
    variant,
)

pytestmark = [pytest.mark.lab]


@pytest.fixture(scope="module")
def backup_home() -> Iterator[Path]:
    with private_home("drctl-backup-") as backup_home:
        lab = Lab(backup_home)
        lab.up()
        try:
            nodes = environment(backup_home)["nodes"]
            sql(dsn_of(nodes["pg1"]), SEED)
            wait_replayed(dsn_of(nodes["pg1"]), dsn_of(nodes["pg2"]))
            yield backup_home
        finally:
            lab.down()
            leftovers = postgres_processes_under(backup_home)
            assert not leftovers, leftovers


@pytest.fixture
def source(backup_home: Path) -> Iterator[str]:
    """The primary's DSN; the test fails if the source changed (drctl's own schema aside)."""
    dsn = dsn_of(environment(backup_home)["nodes"]["pg1"])
    before = fingerprint(dsn)
    yield dsn
    assert fingerprint(dsn) == before, "the source was changed"


def assert_nothing_left(backup_home: Path) -> None:
    """No scratch server beside the nodes' data directories, no run state left."""
    assert postgres_processes_under(*(backup_home / "lab").glob("drctl-scratch-*")) == []
    assert list((backup_home / "lab").glob("drctl-scratch-*")) == []
    assert not (backup_home / "scratch" / "lab" / "pg2").exists()


def wait_replayed(primary: str, standby: str, deadline: float = 30) -> None:
    """Until the standby has replayed everything the primary had written when asked."""
    lsn = sql(primary, "select pg_current_wal_lsn()::text")[0][0]
    end = time.monotonic() + deadline
    while not sql(standby, "select pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0][0]:
        assert time.monotonic() < end, f"the standby did not replay up to {lsn}"
        time.sleep(0.05)


def take_into(tmp_path: Path, directory: Path, shipped: str, step: str) -> Any:
    """Take a backup (or dump) into ``directory`` with only the first step of a playbook."""
    playbook = variant(
        tmp_path,
        shipped,
        name=f"take-{directory.name}",
        with_={step: {"backup_dir": str(user_dir(directory))}},
        only=[step],
    )
    record = run(playbook)
    assert record.status == "passed", record.reason
    return record.steps[0].data


@pytest.fixture
def seeded(any_lab: AnyLab) -> Iterator[AnyLab]:
    """A session lab (either) with the seeded tables on its primary, replayed on its standby,
    DRCTL_HOME pointing at it; the test fails if the primary changed (drctl's schema aside)."""
    with any_lab.active():
        any_lab.wait_streaming()
        primary, standby = any_lab.role_of("primary"), any_lab.role_of("standby")
        dsn = any_lab.dsn(primary)
        if sql(dsn, "select to_regclass('public.patients') is null")[0][0]:
            sql(dsn, SEED)
        wait_replayed(dsn, any_lab.dsn(standby))
        before = fingerprint(dsn)
        yield any_lab
        assert fingerprint(dsn) == before, "the source was changed"
        assert_nothing_left_on(any_lab)


def assert_nothing_left_on(lab: AnyLab) -> None:
    """No scratch server beside any node's data directory, on its host; no run state left."""
    for name, node in lab.environment.nodes.items():
        if node.postgres is None:
            continue
        scratch = list(lab.work_dir(name).glob("drctl-scratch-*"))
        assert postgres_processes_under(*scratch) == [] and scratch == []
        assert not (lab.home / "scratch" / lab.env / name).exists()


def assert_ran_on_the_standbys_host(lab: AnyLab, record: Record) -> str:
    """Every step's data name the standby and how its host was reached: over SSH as the site's
    user at the two-site lab. Returns the standby's name."""
    standby = str(record.roles["standby"])
    address = lab.address_of(standby)
    if lab.over_ssh:
        assert address.startswith("drctl-site-") and f"@{lab.node(standby).host}:" in address
    else:
        assert address == "local"
    assert [(s.id, s.data["host"], s.data["address"]) for s in record.steps] == [
        (s.id, standby, address) for s in record.steps
    ]
    return standby


def test_backup_verify_restores_to_the_backup_end_and_reconciles(seeded: AnyLab) -> None:
    lab = seeded
    record = run("pg-backup-verify", lab.env)

    assert record.status == "passed", record.reason
    steps = steps_of(record)
    assert list(steps) == [
        "main:take_backup",
        "main:verify_backup",
        "main:restore_scratch",
        "main:reconcile",
        "main:drop_scratch",
    ]
    standby = assert_ran_on_the_standbys_host(lab, record)
    node = lab.node(standby)
    backup = steps["main:take_backup"].data
    assert backup["taken"] is True
    assert backup["size_bytes"] > 10_000_000 and backup["files"] > 100
    assert 0 <= backup["age_seconds"] < 60 and backup["max_backup_age_seconds"] == 86400
    backups = lab.work_dir(standby) / "drctl-backups" / lab.env / standby / "base"
    assert Path(backup["path"]).parent == backups
    assert backup["end_lsn"] and backup["label"].startswith(f"drctl {lab.env}/{standby}")
    assert steps["main:verify_backup"].data["verified"] is True

    restore = steps["main:restore_scratch"].data
    assert restore["at_backup_end"] is True
    assert restore["restored_to_lsn"] == backup["end_lsn"]
    assert 0 < restore["restore_seconds"] < 60
    ports = {n.port for n in lab.environment.nodes.values()}
    ports |= {n.ssh.port for n in lab.environment.nodes.values() if n.ssh}
    assert restore["scratch_port"] not in ports
    assert restore["scratch_address"] == node.host  # the standby's own address: 127.0.0.3 at B
    scratch = lab.work_dir(standby) / f"drctl-scratch-{lab.env}-{standby}"
    assert Path(restore["data_dir"]).parent == scratch

    compared = steps["main:reconcile"].data
    assert compared["identical"] is True
    assert compared["point_lsn"] == backup["end_lsn"]
    assert "drctl" in compared["excluded_schemas"]
    by_table = {t["table"]: t for t in compared["tables"]}
    assert set(by_table) >= SEEDED_TABLES
    assert by_table["public.visits"]["source_rows"] == by_table["public.visits"]["target_rows"]
    assert by_table["public.visits"]["target_rows"] == 5000
    assert by_table["public.audit_log"]["method"] == "whole-table"  # no primary key
    assert "removed" in steps["main:drop_scratch"].output

    restore_time = next(o for o in record.objectives if o.name == "restore_time")
    assert restore_time.met and restore_time.measured_seconds is not None
    assert Path(backup["path"]).is_dir()  # the backup is kept; only the scratch server goes
    if lab.over_ssh:  # made on the site's host as the site's user, who owns it there
        assert node.postgres is not None
        assert pwd.getpwuid(backups.stat().st_uid).pw_name == node.postgres.os_user


def test_dump_restore_verify_restores_and_reconciles(seeded: AnyLab) -> None:
    lab = seeded
    record = run("pg-dump-restore-verify", lab.env)

    assert record.status == "passed", record.reason
    steps = steps_of(record)
    standby = assert_ran_on_the_standbys_host(lab, record)
    dump = steps["main:take_dump"].data
    assert dump["taken"] is True and dump["database"] == "postgres"
    assert dump["size_bytes"] > 0 and dump["age_seconds"] < 60
    dumps = lab.work_dir(standby) / "drctl-backups" / lab.env / standby / "dump"
    assert Path(dump["path"]).parent == dumps
    assert Path(dump["path"]).is_file() and Path(dump["path"] + ".sha256").is_file()
    assert steps["main:verify_dump"].data["checksum_matches"] is True
    assert steps["main:verify_dump"].data["tables_with_data"] >= len(SEEDED_TABLES)
    restore = steps["main:restore_scratch"].data
    assert 0 < restore["pg_restore_seconds"] <= restore["restore_seconds"]
    assert restore["scratch_address"] == lab.node(standby).host
    compared = steps["main:reconcile"].data
    assert compared["identical"] is True
    assert {t["table"] for t in compared["tables"]} >= SEEDED_TABLES
    assert compared["point"] == "dump snapshot"


def test_a_backup_older_than_max_backup_age_fails_the_drill_with_that_reason(
    backup_home: Path, source: str, tmp_path: Path
) -> None:
    directory = backup_home / "old-backups"
    taken = take_into(tmp_path, directory, "pg-backup-verify", "take_backup")
    two_days_ago = time.time() - 2 * 86400
    os.utime(Path(taken["path"]) / "backup_manifest", (two_days_ago, two_days_ago))
    playbook = variant(
        tmp_path,
        "pg-backup-verify",
        with_={
            "take_backup": {
                "reuse_latest": True,
                "backup_dir": str(directory),
                "max_backup_age": "1d",
            }
        },
    )
    record = run(playbook)

    assert record.status == "failed"
    steps = steps_of(record)
    failed = steps["main:take_backup"]
    assert failed.status == "failed"
    assert f"backup {taken['path']} is 48h00m old" in failed.reason
    assert "older than max_backup_age 24h00m" in failed.reason
    assert failed.reason in record.reason or "older than max_backup_age" in record.reason
    assert failed.data["age_seconds"] > 2 * 86400 - 60 and failed.data["taken"] is False
    # Nothing was restored; the rollback found nothing to remove.
    assert "main:restore_scratch" not in steps
    assert steps["rollback:remove_scratch"].output == "no scratch server to remove"
    assert_nothing_left(backup_home)


def test_an_old_dump_fails_the_drill_too(backup_home: Path, source: str, tmp_path: Path) -> None:
    directory = backup_home / "old-dumps"
    taken = take_into(tmp_path, directory, "pg-dump-restore-verify", "take_dump")
    three_days_ago = time.time() - 3 * 86400
    os.utime(taken["path"], (three_days_ago, three_days_ago))
    playbook = variant(
        tmp_path,
        "pg-dump-restore-verify",
        with_={"take_dump": {"reuse_latest": True, "backup_dir": str(directory)}},
    )
    record = run(playbook)

    assert record.status == "failed"
    assert f"dump {taken['path']} is 72h00m old" in record.reason
    assert "older than max_backup_age 24h00m" in record.reason
    assert_nothing_left(backup_home)


def test_a_flipped_byte_fails_at_pg_verifybackup_naming_the_file(
    backup_home: Path, source: str, tmp_path: Path
) -> None:
    directory = backup_home / "damaged-backups"
    taken = take_into(tmp_path, directory, "pg-backup-verify", "take_backup")
    relative = sql(source, "select pg_relation_filepath('public.patients')")[0][0]
    damaged = Path(taken["path"]) / relative
    content = bytearray(damaged.read_bytes())
    content[len(content) // 2] ^= 0x01
    damaged.write_bytes(bytes(content))
    playbook = variant(
        tmp_path,
        "pg-backup-verify",
        with_={"take_backup": {"reuse_latest": True, "backup_dir": str(directory)}},
    )
    record = run(playbook)

    assert record.status == "failed"
    steps = steps_of(record)
    verify = steps["main:verify_backup"]
    assert verify.status == "failed"
    assert f'checksum mismatch for file "{relative}"' in verify.reason
    assert str(damaged) in verify.reason
    assert verify.data["files"] == [str(damaged)] and verify.data["verified"] is False
    assert str(damaged) in record.reason
    assert "main:restore_scratch" not in steps
    assert_nothing_left(backup_home)


@pytest.fixture
def tiny_scratch(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs the lab's OS user may write in; unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = Path("/tmp") / f"drctl-tiny-{os.getpid()}-{time.monotonic_ns()}"
    mount.mkdir()
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        try:
            yield mount
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    finally:
        mount.rmdir()


def test_a_scratch_directory_without_space_fails_before_writing_anything(
    backup_home: Path, source: str, tmp_path: Path, tiny_scratch: Path
) -> None:
    playbook = variant(
        tmp_path,
        "pg-backup-verify",
        with_={"restore_scratch": {"scratch_dir": str(tiny_scratch)}},
    )
    record = run(playbook)

    assert record.status == "failed"
    restore = steps_of(record)["main:restore_scratch"]
    assert restore.status == "failed"
    assert "not enough space for the scratch server" in restore.reason
    assert f"{tiny_scratch} on pg2 has 1.0 MiB free" in restore.reason
    assert "nothing was written" in restore.reason
    assert restore.data["free_bytes"] < restore.data["needed_bytes"]
    assert list(tiny_scratch.iterdir()) == []
    assert_nothing_left(backup_home)


def test_a_missing_table_is_named_and_the_scratch_server_is_removed(
    backup_home: Path, source: str, tmp_path: Path
) -> None:
    playbook = variant(
        tmp_path,
        "pg-backup-verify",
        with_={"reconcile": {"tables": ["public.patients", "public.no_such_table"]}},
    )
    record = run(playbook)

    assert record.status == "failed" and record.rolled_back
    steps = steps_of(record)
    assert steps["main:restore_scratch"].status == "passed"
    assert steps["main:reconcile"].status == "failed"
    assert "public.no_such_table" in steps["main:reconcile"].reason
    assert "public.no_such_table" in record.reason
    assert steps["rollback:remove_scratch"].status == "passed"
    assert "removed" in steps["rollback:remove_scratch"].output
    assert_nothing_left(backup_home)


def test_a_change_after_the_backup_point_is_found_row_by_row(
    backup_home: Path, source: str, tmp_path: Path
) -> None:
    """The comparison is real: a table changed on the primary after the backup, and replayed on
    the standby it was taken from, differs, and the record names the table and the rows."""
    sql(source, "create table public.scribble (id int primary key, v text)")
    sql(source, "insert into public.scribble select g, 'v' || g from generate_series(1, 50) g")
    try:
        change = {
            "id": "change_the_source",
            "action": "sql",
            "target": "primary",
            "with": {
                "statement": "update public.scribble set v = 'changed' where id = 7;"
                " delete from public.scribble where id = 9;"
                " insert into public.scribble values (51, 'new')"
            },
            "verify": [{"check": "pg.replay_lag", "target": "standby", "with": {"max_bytes": 0}}],
            "within": "10s",
        }
        playbook = variant(tmp_path, "pg-backup-verify", insert_after={"restore_scratch": change})
        data = yaml.safe_load(playbook.read_text())
        playbook.write_text(yaml.safe_dump({**data, "roles": ["primary", "standby"]}))
        record = run(playbook)
    finally:
        sql(source, "drop table public.scribble")

    assert record.status == "failed"
    reconcile = steps_of(record)["main:reconcile"]
    assert reconcile.reason.count("public.scribble") >= 1
    assert "1 of " in reconcile.reason
    by_table = {t["table"]: t for t in reconcile.data["tables"]}
    scribble = by_table["public.scribble"]
    assert scribble["identical"] is False
    kinds = {(tuple(d["key"]), d["kind"]) for d in scribble["diffs"]}
    # The source is the reference: a row it gained is missing in the copy, one it lost is
    # missing in the source.
    assert kinds == {
        ((7,), "changed"),
        ((9,), "missing_in_source"),
        ((51,), "missing_in_target"),
    }
    assert all(t["identical"] for name, t in by_table.items() if name != "public.scribble")
    assert_nothing_left(backup_home)


def test_a_scratch_server_left_by_a_crashed_run_is_removed_by_the_next(
    backup_home: Path, source: str, tmp_path: Path
) -> None:
    """A run that dies after the restore leaves its scratch server and state file; the next run
    finds them through the run state in $DRCTL_HOME/scratch and removes them on the node's host
    before it restores again."""
    crashed = variant(
        tmp_path,
        "pg-backup-verify",
        name="crashed",
        only=["take_backup", "verify_backup", "restore_scratch"],
    )
    first = run(crashed)
    assert first.status == "passed", first.reason
    left = first.steps[-1].data["data_dir"]
    assert postgres_processes_under(left) != []
    assert (backup_home / "scratch" / "lab" / "pg2" / "state.json").is_file()

    record = run("pg-backup-verify")

    assert record.status == "passed", record.reason
    restore = steps_of(record)["main:restore_scratch"]
    assert "an earlier run left a scratch server: stopped the scratch server" in restore.output
    assert_nothing_left(backup_home)


def test_validate_and_plan_show_the_real_commands(backup_home: Path) -> None:
    names = ["pg-backup-verify", "pg-dump-restore-verify", "pg-migrate"]
    result = drctl("validate", *[f"playbooks/{n}.yaml" for n in names], home=backup_home)
    assert result.returncode == 0, result.stdout + result.stderr
    made = [
        backup_home / "lab" / "drctl-backups",
        backup_home / "scratch",
        *(backup_home / "lab").glob("drctl-scr*"),
    ]
    before = sorted(p for d in made if d.exists() for p in d.rglob("*"))

    backup = drctl("plan", "pg-backup-verify", "--env", "lab", home=backup_home)
    assert backup.returncode == 0, backup.stderr
    for text in (
        "pg_basebackup -d",
        "-X stream -c fast",
        "pg_verifybackup",
        "pg_ctl start",
        "recovery_target = 'immediate'",
        "finished more than 24h00m ago",
        "nothing was run.",
        "on pg2: ",  # what runs on the standby's host, as its OS user
        f"{backup_home}/lab/drctl-backups/lab/pg2/base",
        f"{backup_home}/lab/drctl-scratch-lab-pg2",
    ):
        assert text in backup.stdout, text
    dump = drctl("plan", "pg-dump-restore-verify", "--env", "lab", home=backup_home)
    assert dump.returncode == 0, dump.stderr
    for text in ("pg_dump -Fc", "--exclude-schema=drctl", "pg_restore --list", "initdb"):
        assert text in dump.stdout, text
    after = sorted(p for d in made if d.exists() for p in d.rglob("*"))
    assert after == before  # plan ran nothing and made nothing


# -- everything on the node, through its host executor -------------------------------------------


class RecordingHost(LocalExecutor):
    """A host executor that writes down every operation it is asked for, then does it here.

    Its address is not "local", as a remote node's would not be: a step that reached the node
    some other way would not carry it in its data."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.calls: list[tuple[str, ...]] = []

    @property
    def address(self) -> str:
        return f"recording@{self.host}"

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        self.calls.append(("run", *argv))
        return super().run(argv, **kwargs)

    def read_file(self, path: str, *, user: str | None = None) -> str | None:
        self.calls.append(("read_file", path))
        return super().read_file(path, user=user)

    def write_file(
        self, path: str, text: str, *, user: str | None = None, mode: int = 0o600
    ) -> None:
        self.calls.append(("write_file", path))
        super().write_file(path, text, user=user, mode=mode)

    def exists(self, path: str, *, user: str | None = None) -> bool:
        self.calls.append(("exists", path))
        return super().exists(path, user=user)

    def make_dirs(
        self, path: str, *, owner: str | None = None, mode: int = 0o700, user: str | None = None
    ) -> None:
        self.calls.append(("make_dirs", path))
        super().make_dirs(path, owner=owner, mode=mode, user=user)

    def instance_processes(self, data_dir: str, *, user: str | None = None) -> InstanceProcesses:
        self.calls.append(("instance_processes", data_dir))
        return super().instance_processes(data_dir, user=user)

    def signal(self, pids: Sequence[int], signal_name: str, *, user: str | None = None) -> None:
        self.calls.append(("signal", signal_name, *map(str, pids)))
        super().signal(pids, signal_name, user=user)

    def free_port(self, address: str) -> int:
        self.calls.append(("free_port", address))
        return super().free_port(address)

    def disk_usage(self, path: str, *, user: str | None = None) -> DiskUsage:
        self.calls.append(("disk_usage", path))
        return super().disk_usage(path, user=user)

    def words(self) -> list[str]:
        return [word for call in self.calls for word in call]


class RecordingConnector(LiveConnector):
    """Hands out one RecordingHost per node (the real SQL sessions otherwise)."""

    def __init__(self) -> None:
        self.hosts: dict[str, RecordingHost] = {}

    def host(self, name: str, node: Node) -> HostExecutor:
        self.hosts[name] = RecordingHost(name)
        return self.hosts[name]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.mark.parametrize("kind", ["backup", "dump"])
def test_a_restore_test_works_only_through_the_nodes_host_executor(
    backup_home: Path, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Every command, file, directory, port and process of a backup (or dump), its scratch
    restore and its removal goes through the standby's host executor; the orchestrator's own
    DRCTL_HOME (a different directory here, as on a third host) gets only the run's state."""
    env = resolve_environment(str(backup_home / "environments" / "lab.yaml"))
    orchestrator = tmp_path / "orchestrator-home"
    orchestrator.mkdir()
    monkeypatch.setenv("DRCTL_HOME", str(orchestrator))
    connector = RecordingConnector()
    targets = Targets(env, {"standby": "pg2"}, connector)
    standby = env.nodes["pg2"]
    steps: list[dict[str, Any]] = []
    try:
        if kind == "backup":
            steps.append(basebackup_run(targets, "standby", TakeParams(), 120).data)
            steps.append(verifybackup_run(targets, "standby", Params(), 120).data)
            steps.append(restore_scratch_run(targets, "standby", RestoreParams(), 120).data)
        else:
            steps.append(dump_run(targets, "standby", DumpParams(), 120).data)
            steps.append(verifydump_run(targets, "standby", Params(), 120).data)
            steps.append(restore_dump_scratch_run(targets, "standby", RestoreParams(), 120).data)
        steps.append(reconcile_scratch_run(targets, "standby", ScratchReconcileParams(), 120).data)
        assert files_under(orchestrator) == ["scratch/lab/pg2/state.json"]
    finally:
        steps.append(drop_scratch_run(targets, "standby", Params(), 60).data)
        targets.close()

    assert files_under(orchestrator) == []  # the state went with the scratch server
    assert list(connector.hosts) == ["pg2"]
    host = connector.hosts["pg2"]
    assert all((s["host"], s["address"]) == ("pg2", "recording@pg2") for s in steps)
    words = host.words()
    taken = steps[0]["path"]
    assert taken.startswith(f"{backup_home}/lab/drctl-backups/lab/pg2/")
    assert Path(taken).exists()  # on the node's side, and kept
    program = "pg_basebackup" if kind == "backup" else "pg_dump"
    for expected in (program, "pg_ctl", "start", "stop", "rm"):
        assert any(w.endswith(expected) for w in words), expected
    scratch = str(backup_home / "lab" / "drctl-scratch-lab-pg2")
    assert ("make_dirs", scratch) in host.calls
    assert ("free_port", standby.host) in host.calls
    assert ("instance_processes", f"{scratch}/data") in host.calls
    assert any(c[0] == "disk_usage" for c in host.calls)
    assert steps[2]["scratch_address"] == standby.host
    assert not any(str(orchestrator) in w for w in words)
    assert_nothing_left(backup_home)


def test_the_backup_modules_touch_no_local_file_process_or_socket() -> None:
    """What runs on a node goes through its executor: these modules import nothing that would
    reach the orchestrator's own processes, files or sockets (the run state's file aside), and no
    database driver (its errors are translated in drills.executors.postgres only)."""
    forbidden = {"os", "subprocess", "socket", "pwd", "shutil", "psycopg", "pathlib"}
    modules = [
        "backup",
        "backupdir",
        "basebackup",
        "compare",
        "dump",
        "freeze",
        "migrate",
        "restore",
        "scratch",
        "servers",
        "transfer",
    ]
    for module in modules:
        source = (REPO / "drills" / "engines" / "postgres" / f"{module}.py").read_text()
        imported: set[str] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        roots = {name.split(".")[0] for name in imported}
        assert not roots & forbidden, (module, roots & forbidden)
        assert "drills.executors.local" not in imported, module
    state = (REPO / "drills" / "engines" / "postgres" / "runstate.py").read_text()
    assert "drctl_home" in state  # the one file of the orchestrator's own: the run's state
