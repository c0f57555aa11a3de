"""Migration on real servers: a database of the lab's primary (role source) moves to an
independent server (role target, listening on 127.0.0.3 as a second site's would) by dump and
restore, with writes stopped; every table is reconciled and the downtime recorded. With the two
nodes on different hosts, the dump is copied between them through their executors.

The end-to-end migration runs on both session labs (`any_lab`): at the one-host lab the target
listens on 127.0.0.3 beside the lab; at the two-site lab the source is the primary's site (site
A's pg1 on a fresh lab) and the target a new server on the other site, initdb'd and started there
over SSH as that site's user, so the dump is copied between the two hosts through drctl.

Bad input gets a clear error in the record and leaves the source untouched: an unreachable
target, a missing table, a target that is not empty, mismatched column sets; a failure after
writes stopped rolls back and the source takes writes again. Those run on a one-host lab of
their own (their own DRCTL_HOME).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.engine.loader import resolve_environment
from drills.engine.targets import Targets
from drills.engines.postgres.dump import DumpParams, dump_run
from drills.engines.postgres.migrate import RestoreDumpParams, restore_dump_run
from drills.engines.postgres.runstate import update_state
from drills.engines.postgres.scratch import Instance, ScratchServer, init_instance
from drills.engines.postgres.transfer import copy_file
from drills.executors.host import HostExecutor
from drills.executors.local import LocalExecutor
from drills.executors.ssh import SshExecutor
from drills.lab.onehost import Lab, find_pg_bin
from drills.model.errors import CommandFailed
from tests.labs import AnyLab
from tests.pg_fixtures import (
    RUN_AS,
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
from tests.test_backup import RecordingConnector, RecordingHost

pytestmark = [pytest.mark.lab]

DATABASE = "his_prod"
TARGET_HOST = "127.0.0.3"  # another loopback address: drctl must connect where the node says


def free_port(address: str = "127.0.0.1") -> int:
    return LocalExecutor().free_port(address)


@pytest.fixture(scope="module")
def migrate_home() -> Iterator[Path]:
    """A lab whose primary pg1 holds database his_prod, an independent empty server on
    127.0.0.3, and an environment `migrate` naming them source and target."""
    with private_home("drctl-migrate-") as migrate_home:
        lab = Lab(migrate_home)
        lab.up()
        target: ScratchServer | None = None
        try:
            lab_env = environment(migrate_home)
            pg1 = lab_env["nodes"]["pg1"]
            sql(dsn_of(pg1), f"create database {DATABASE}")
            sql(dsn_of(pg1, DATABASE), SEED)
            bin_dir = pg1["postgres"]["bin_dir"] or str(find_pg_bin())
            instance = Instance(
                directory=str(user_dir(migrate_home / "target") / "drctl-scratch-migrate-target"),
                port=free_port(TARGET_HOST),
                address=TARGET_HOST,
                bin_dir=bin_dir,
                os_user=RUN_AS,
                node="dst",
            )
            target = ScratchServer(instance, LocalExecutor("dst"))
            init_instance(target, user="postgres", password=None, timeout=120)
            target.start(60)
            source = {**pg1, "role": "source"}
            source["postgres"] = {**pg1["postgres"], "database": DATABASE}
            env = {
                "name": "migrate",
                "nodes": {
                    "src": source,
                    "dst": {
                        "role": "target",
                        "host": TARGET_HOST,
                        "port": instance.port,
                        "postgres": {
                            "data_dir": instance.data_dir,
                            "bin_dir": bin_dir,
                            **({"os_user": RUN_AS} if RUN_AS else {}),
                            "user": "postgres",
                            "database": DATABASE,
                        },
                    },
                },
            }
            (migrate_home / "environments" / "migrate.yaml").write_text(yaml.safe_dump(env))
            yield migrate_home
        finally:
            try:
                if target is not None:
                    target.stop_and_remove()
            finally:
                lab.down()
            leftovers = postgres_processes_under(migrate_home)
            assert not leftovers, leftovers


def nodes(migrate_home: Path) -> dict[str, Any]:
    return environment(migrate_home, "migrate")["nodes"]  # type: ignore[no-any-return]


@pytest.fixture
def source(migrate_home: Path) -> Iterator[str]:
    """The source database's DSN; the test fails if the source changed (drctl's schema aside),
    and that includes being left read-only."""
    dsn = dsn_of(nodes(migrate_home)["src"])
    before = fingerprint(dsn)
    assert before["default_transaction_read_only"] == "off"
    yield dsn
    assert fingerprint(dsn) == before, "the source was changed"


@pytest.fixture
def target(migrate_home: Path) -> Iterator[str]:
    """The target server's maintenance DSN; the migrated database is dropped after each test."""
    dsn = dsn_of(nodes(migrate_home)["dst"], "postgres")
    yield dsn
    sql(dsn, f"drop database if exists {DATABASE} with (force)")


@dataclass(frozen=True)
class Migration:
    """A migration on a session lab: its environment file and the two servers' DSNs."""

    lab: AnyLab
    env_file: Path
    source: str  # the source database on the lab's primary
    target: str  # the migrated database on the target server (made by the drill)
    addresses: dict[str, str]  # src, dst: how drctl reaches each one's host


@pytest.fixture
def migration(any_lab: AnyLab, tmp_path: Path) -> Iterator[Migration]:
    """The lab's primary (role source) holds database his_prod; a new, empty server (role
    target) runs on another host: at the one-host lab on 127.0.0.3 beside it, at the two-site
    lab on the other site (site B when pg1 at site A is the primary), initdb'd and started
    there over SSH as that site's user, in a new directory beside the site's data directory.
    Everything it made is removed after; the source must be unchanged and writable."""
    with any_lab.active():
        any_lab.wait_streaming()
        primary = any_lab.role_of("primary")
        other = any_lab.role_of("standby")
        lab_env = environment(any_lab.home, any_lab.env)
        src = {**lab_env["nodes"][primary], "role": "source"}
        src["postgres"] = {**src["postgres"], "database": DATABASE}
        bin_dir = src["postgres"]["bin_dir"] or str(find_pg_bin())
        name = f"migrate-{any_lab.env}"
        if any_lab.over_ssh:
            site = any_lab.node(other)
            assert site.ssh is not None and site.postgres is not None
            host: HostExecutor = SshExecutor("dst", site.host, site.ssh)
            address, os_user = site.host, site.postgres.os_user
            directory = any_lab.work_dir(other) / "drctl-scratch-migrate-target"
            reach = {"executor": "ssh", "ssh": lab_env["nodes"][other]["ssh"]}
        else:
            host, address, os_user = LocalExecutor("dst"), TARGET_HOST, RUN_AS
            directory = user_dir(any_lab.home / "migrate-target") / "drctl-scratch-migrate-target"
            reach = {}
        admin = any_lab.dsn(primary)
        sql(admin, f"drop database if exists {DATABASE} with (force)")
        sql(admin, f"create database {DATABASE}")
        sql(any_lab.dsn(primary, DATABASE), SEED)
        instance = Instance(
            directory=str(directory),
            port=host.free_port(address),
            address=address,
            bin_dir=bin_dir,
            os_user=os_user,
            node="dst",
        )
        server = ScratchServer(instance, host)
        try:
            init_instance(server, user="postgres", password=None, timeout=120)
            server.start(60)
            dst = {
                "role": "target",
                "host": address,
                "port": instance.port,
                **reach,
                "postgres": {
                    "data_dir": instance.data_dir,
                    "bin_dir": bin_dir,
                    **({"os_user": os_user} if os_user else {}),
                    "user": "postgres",
                    "database": DATABASE,
                },
            }
            env_file = tmp_path / f"{name}.yaml"
            env_file.write_text(yaml.safe_dump({"name": name, "nodes": {"src": src, "dst": dst}}))
            source_dsn = dsn_of(src)
            before = fingerprint(source_dsn)
            assert before["default_transaction_read_only"] == "off"
            yield Migration(
                any_lab,
                env_file,
                source_dsn,
                dsn_of(dst),
                {"src": any_lab.address_of(primary), "dst": host.address},
            )
            assert fingerprint(source_dsn) == before, "the source was changed"
        finally:
            try:
                server.stop_and_remove()
            finally:
                host.close()
                sql(admin, f"drop database if exists {DATABASE} with (force)")
                shutil.rmtree(any_lab.work_dir(primary) / "drctl-backups" / name, True)
                shutil.rmtree(any_lab.home / "scratch" / name, True)
        assert postgres_processes_under(directory) == [] and not directory.exists()


def test_migration_moves_every_table_and_records_the_downtime(migration: Migration) -> None:
    record = run("pg-migrate", str(migration.env_file))

    assert record.status == "passed", record.reason
    assert record.roles == {"source": "src", "target": "dst"}
    steps = steps_of(record)
    assert list(steps) == [
        "main:preflight",
        "main:freeze_source",
        "main:dump_source",
        "main:restore_target",
        "main:reconcile_tables",
        "main:cutover",
        "main:release_source",
    ]
    assert steps["main:preflight"].data["target_database_exists"] is False
    frozen = steps["main:freeze_source"].checks[0]
    assert (frozen.check, frozen.observed) == ("pg.rejects_writes", "read-only")
    restored = steps["main:restore_target"].data
    dumped = steps["main:dump_source"].data
    assert restored["created_database"] is True
    src, dst = migration.addresses["src"], migration.addresses["dst"]
    # pg_dump ran on the source's host, pg_restore on the target's: each reached its own way.
    assert (dumped["host"], dumped["address"]) == ("src", src)
    assert (restored["host"], restored["address"]) == ("dst", dst)
    transfer = restored["transfer"]
    if migration.lab.over_ssh:
        assert src.startswith("drctl-site-") and dst.startswith("drctl-site-") and src != dst
        assert transfer["how"] == f"copied from src ({src}) to dst ({dst}) through drctl"
        assert transfer["bytes"] == dumped["size_bytes"] and transfer["sha256"] == dumped["sha256"]
    else:
        assert (src, dst) == ("local", "local")
        assert transfer["how"] == "none: src and dst are on the same host"
    compared = steps["main:reconcile_tables"].data
    assert compared["identical"] is True and compared["database"] == DATABASE
    assert {t["table"] for t in compared["tables"]} == SEEDED_TABLES
    assert compared["rows_compared"] == 3000 + 5000 + 480 + 200
    assert steps["main:cutover"].checks[0].observed == "committed"

    names = [m.name for m in record.milestones]
    assert names.index("writes_stopped") < names.index("writes_resumed")
    downtime = next(o for o in record.objectives if o.name == "downtime")
    assert downtime.met and downtime.measured_seconds is not None
    assert 0 < downtime.measured_seconds < 60
    # The target holds the same tables; the source takes writes again (drill mode).
    assert fingerprint(migration.target)["tables"].keys() == (
        fingerprint(migration.source)["tables"].keys()
    )
    assert steps["main:release_source"].checks[0].observed == "committed"


def test_an_unreachable_target_is_a_clear_error_and_the_source_is_untouched(
    migrate_home: Path, source: str, tmp_path: Path
) -> None:
    env = environment(migrate_home, "migrate")
    closed = free_port(TARGET_HOST)
    env["nodes"]["dst"]["port"] = closed
    path = tmp_path / "migrate-nowhere.yaml"
    path.write_text(yaml.safe_dump({**env, "name": "migrate-nowhere"}))
    record = run("pg-migrate", str(path))

    assert record.status == "aborted"
    preflight = steps_of(record)["main:preflight"]
    assert preflight.status == "failed"
    assert f"the target dst ({TARGET_HOST}:{closed}, database {DATABASE}) cannot be reached" in (
        preflight.reason
    )
    assert "Connection refused" in preflight.reason
    assert [s.id for s in record.steps] == ["preflight"]


def test_a_missing_table_is_named_and_the_source_is_untouched(
    migrate_home: Path, source: str, target: str, tmp_path: Path
) -> None:
    playbook = variant(
        tmp_path,
        "pg-migrate",
        with_={"preflight": {"tables": ["public.patients", "public.no_such_table"]}},
    )
    record = run(playbook, "migrate")

    assert record.status == "aborted"
    assert [s.id for s in record.steps] == ["preflight"]
    assert (
        f"table(s) public.no_such_table do not exist in database {DATABASE} on the source src"
        in record.reason
    )
    assert "nothing was changed" in record.reason


def test_a_target_that_is_not_empty_is_refused(
    migrate_home: Path, source: str, target: str
) -> None:
    sql(target, f"create database {DATABASE}")
    sql(dsn_of(nodes(migrate_home)["dst"]), "create table public.patients (id int primary key)")
    record = run("pg-migrate", "migrate")

    assert record.status == "aborted"
    assert f"the target database {DATABASE} on dst is not empty (it has public.patients)" in (
        record.reason
    )
    assert steps_of(record)["main:preflight"].data["target_tables"] == ["public.patients"]


def test_mismatched_columns_fail_the_reconciliation_naming_table_and_columns(
    migrate_home: Path, source: str, target: str, tmp_path: Path
) -> None:
    sql(target, f"create database {DATABASE}")
    sql(
        dsn_of(nodes(migrate_home)["dst"]),
        "create table public.patients (id integer primary key, name text not null, born date,"
        " ward integer, remark text)",
    )
    playbook = tmp_path / "reconcile-only.yaml"
    playbook.write_text(
        yaml.safe_dump(
            {
                "name": "reconcile-only",
                "version": 1,
                "kind": "migration",
                "title": {"en": "Reconcile", "zh": "核对"},
                "roles": ["source", "target"],
                "steps": [
                    {
                        "id": "reconcile_tables",
                        "action": "pg.reconcile",
                        "target": "target",
                        "with": {"source": "source", "tables": ["public.patients"]},
                    }
                ],
            },
            allow_unicode=True,
        )
    )
    record = run(playbook, "migrate")

    assert record.status == "aborted"
    step = record.steps[0]
    assert step.status == "failed"
    assert "cannot compare" in step.reason and "public.patients" in step.reason
    assert "note" in step.reason and "remark" in step.reason
    assert "\n" not in step.reason


def test_a_failure_after_writes_stopped_rolls_back_and_the_source_takes_writes(
    migrate_home: Path, source: str, target: str, tmp_path: Path
) -> None:
    fail = {
        "id": "something_breaks",
        "action": "observe",
        "target": "target",
        "verify": [{"check": "pg.is_standby"}],
        "within": "100ms",
        "on_failure": "rollback",
    }
    playbook = variant(tmp_path, "pg-migrate", insert_after={"dump_source": fail})
    record = run(playbook, "migrate")

    assert record.status == "failed" and record.rolled_back
    steps = steps_of(record)
    assert steps["main:freeze_source"].status == "passed"
    assert steps["main:something_breaks"].status == "failed"
    assert "main:restore_target" not in steps
    released = steps["rollback:release_source_after_failure"]
    assert released.status == "passed"
    assert released.checks[0].observed == "committed"
    assert "takes writes again" in released.output
    # The source fixture checks that it is writable again and unchanged.


# -- the dump between two hosts ------------------------------------------------------------------


def test_a_dump_moves_from_the_source_host_to_the_target_host_through_their_executors(
    migrate_home: Path, source: str, target: str
) -> None:
    """Two nodes on two hosts (their executors' addresses differ): pg_dump runs on the source's
    host, the dump is copied to the target's host through the two executors and checked there,
    pg_restore runs on the target's host, and the copy is removed."""
    env = resolve_environment(str(migrate_home / "environments" / "migrate.yaml"))
    connector = RecordingConnector()
    targets = Targets(env, {"source": "src", "target": "dst"}, connector)
    try:
        dump = dump_run(targets, "source", DumpParams(), 120).data
        restored = restore_dump_run(targets, "target", RestoreDumpParams(source="source"), 120)
    finally:
        update_state("migrate", "src", dump=None)
        targets.close()

    data = restored.data
    transfer = data["transfer"]
    assert transfer["how"] == (
        "copied from src (recording@src) to dst (recording@dst) through drctl"
    )
    assert transfer["bytes"] == dump["size_bytes"] and transfer["sha256"] == dump["sha256"]
    assert transfer["chunks"] >= 1 and "copied from src in" in restored.output
    dst_dir = Path(env.nodes["dst"].postgres.data_dir).parent  # type: ignore[union-attr]
    assert transfer["target_path"].startswith(f"{dst_dir}/drctl-backups/migrate/dst/migration/")
    assert not Path(transfer["target_path"]).exists()  # removed after the restore
    assert data["tables_restored"] == len(SEEDED_TABLES)
    assert (data["host"], data["address"], dump["host"]) == ("dst", "recording@dst", "src")
    src, dst = connector.hosts["src"], connector.hosts["dst"]
    assert any(w.endswith("pg_dump") for w in src.words())
    assert not any(w.endswith("pg_restore") for w in src.words())
    assert any(w.endswith("pg_restore") for w in dst.words())
    assert any("base64 -d" in w for w in dst.words()) and any("dd if=" in w for w in src.words())
    assert fingerprint(dsn_of(nodes(migrate_home)["dst"]))["tables"].keys() == (
        fingerprint(source)["tables"].keys()
    )


def test_a_dump_too_big_to_copy_fails_before_anything_is_restored(
    migrate_home: Path, source: str, target: str
) -> None:
    env = resolve_environment(str(migrate_home / "environments" / "migrate.yaml"))
    targets = Targets(env, {"source": "src", "target": "dst"}, RecordingConnector())
    big = {"path": "/nowhere/his_prod.dump", "size_bytes": 3 * 1024 * 1024, "database": DATABASE}
    update_state("migrate", "src", dump=big)
    try:
        with pytest.raises(CommandFailed) as failed:
            restore_dump_run(
                targets, "target", RestoreDumpParams(source="source", max_transfer_mib=2), 60
            )
    finally:
        update_state("migrate", "src", dump=None)
        targets.close()
    assert "is 3.0 MiB, more than max_transfer_mib 2 MiB" in str(failed.value)
    assert "nothing was restored" in str(failed.value)
    dbs = sql(target, "select count(*) from pg_database where datname = %s", (DATABASE,))
    assert dbs[0][0] == 0


def test_copy_file_goes_chunk_by_chunk_and_checks_the_copy(tmp_path: Path) -> None:
    """The copy between two executors, in small chunks: byte for byte, and a damaged or short
    copy is an error that leaves no partial file."""
    import hashlib
    import time

    content = bytes(range(256)) * 1200 + b"tail"  # 307204 bytes: 5 chunks of 64 KiB
    original = tmp_path / "a.dump"
    original.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    here, there = RecordingHost("a"), RecordingHost("b")
    copied = copy_file(
        here,
        str(original),
        None,
        there,
        str(tmp_path / "b.dump"),
        None,
        size=len(content),
        expected_sha256=digest,
        deadline=time.monotonic() + 60,
        chunk_bytes=64 * 1024,
    )
    assert (tmp_path / "b.dump").read_bytes() == content
    assert (copied.chunks, copied.bytes, copied.sha256) == (5, len(content), digest)
    with pytest.raises(CommandFailed, match="does not match its sha256"):
        copy_file(
            here,
            str(original),
            None,
            there,
            str(tmp_path / "c.dump"),
            None,
            size=len(content),
            expected_sha256="0" * 64,
            deadline=time.monotonic() + 60,
            chunk_bytes=64 * 1024,
        )
    with pytest.raises(
        CommandFailed, match="chunk 5 of 6 came back with 60080 characters, not 87384"
    ):
        copy_file(
            here,
            str(original),
            None,
            there,
            str(tmp_path / "d.dump"),
            None,
            size=len(content) + 64 * 1024,  # the file is shorter than the dump step said
            expected_sha256=digest,
            deadline=time.monotonic() + 60,
            chunk_bytes=64 * 1024,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dump", "b.dump"]
