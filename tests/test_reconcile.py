"""Table reconciliation (verify/reconcile/): real PostgreSQL servers from our own lab, the
SQL of both engines as text, the CLI, the playbook check, and Oracle Database Free where Docker
answers.

The lab's primary holds two databases, ``src`` and ``dst``, built by the same SQL; then ``dst``
is given known differences (a changed row, a missing row, an extra row per table) and every
test asserts the exact keys reported. The lab's standby replays both: comparing from it proves
the comparison never writes.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from drills.engine.catalogue import default_catalogue
from drills.engine.checking import run_check
from drills.engine.targets import Targets
from drills.executors import oracle as ora_exec
from drills.lab.onehost import Lab
from drills.model.clock import Clock
from drills.model.environment import Environment
from drills.model.errors import CommandFailed, ConnectionFailed, InputError
from tests.helpers import REPO, drctl
from verify import reconcile as rc
from verify.reconcile import Column, KeyRange, TableRef, reconcile
from verify.reconcile import engine as rc_engine
from verify.reconcile.dialects import oracle as ora
from verify.reconcile.dialects import oracle_sql as ora_sql
from verify.reconcile.dialects import postgres as pgd

SCHEMA_SQL = """
create table patients (
    id bigint primary key, name text not null, born date, weight numeric(5,1),
    admitted timestamptz, active boolean, tags jsonb, ward varchar(20), score float8,
    ref uuid, stay interval, amount numeric);
insert into patients
select i, 'patient ' || i, date '1950-01-01' + (i * 7 % 25000), (i % 900) / 10.0,
       timestamptz '2024-01-01 00:00+00' + i * interval '17 minutes', i % 2 = 0,
       jsonb_build_object('n', i % 5), 'W' || (i % 30), i / 3.0, md5(i::text)::uuid,
       (i % 40) * interval '1 hour', i / 8.0
from generate_series(1, 3000) i;

create schema ward;
create table ward.beds (ward text, bed int, status text, updated timestamptz,
                        primary key (ward, bed));
insert into ward.beds
select 'W' || lpad(w::text, 3, '0'), b, case when (w + b) % 3 = 0 then 'free' else 'taken' end,
       timestamptz '2024-05-01 00:00+00' + (w * 100 + b) * interval '1 minute'
from generate_series(1, 200) w, generate_series(1, 100) b;

create table big (id int primary key, v text);
insert into big select i, 'v' || i from generate_series(1, 60000) i;

create table visits (patient int, visit int, note text, primary key (patient, visit))
    partition by range (patient);
create table visits_1 partition of visits for values from (1) to (2);
create table visits_2 partition of visits for values from (2) to (3);
insert into visits select p, v, 'visit ' || p || '/' || v
from generate_series(1, 2) p, generate_series(1, 5000) v;

create table nopk (a int, b text);
insert into nopk select i, 'x' || i from generate_series(1, 500) i;

create table same (k text primary key, v int);
insert into same select 'key' || i, i from generate_series(1, 1000) i;

create table many (id int primary key, v int);
insert into many select i, i from generate_series(1, 5000) i;

create table empty_both (id int primary key);

create table edges4 (id int primary key, v text);
insert into edges4 values (-2147483648, 'min'), (0, 'zero'), (2147483647, 'max');
create table edges8 (id bigint primary key, v text);
insert into edges8 values (-9223372036854775808, 'min'), (0, 'zero'), (9223372036854775807, 'max');

create schema bad;
"""

SOURCE_ONLY_SQL = """
create table only_src (id int primary key);
create table bad.cols (a int, b text, d date);
"""

TARGET_SQL = """
update patients set weight = weight + 1 where id = 5;
delete from patients where id = 9;
insert into patients (id, name) values (5001, 'extra');

update ward.beds set status = 'cleaning' where ward = 'W050' and bed = 7;
delete from ward.beds where ward = 'W120' and bed = 33;
insert into ward.beds values ('W999', 1, 'free', now());

update big set v = null where id = 30000;
delete from big where id = 12;
insert into big values (60001, 'new');

update visits set note = 'edited' where patient = 2 and visit = 4321;
delete from visits where patient = 1 and visit = 17;

update nopk set b = 'y' where a = 250;

update many set v = -v where id % 100 = 0;

update edges4 set v = 'MAX' where id = 2147483647;
delete from edges4 where id = -2147483648;
update edges8 set v = 'MAX' where id = 9223372036854775807;
delete from edges8 where id = -9223372036854775808;

create table bad.cols (a bigint, c text, d date);
"""


@dataclass(frozen=True)
class Dbs:
    src: str
    dst: str
    standby_src: str
    home: Path


def _dsn(port: int, dbname: str) -> str:
    return f"host=127.0.0.1 port={port} user=postgres dbname={dbname} connect_timeout=5"


def _content(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select md5(string_agg(p::text, ',' order by id)) from patients p"
        ).fetchone()
        assert row is not None
        return str(row[0])


@pytest.fixture(scope="module")
def dbs() -> Iterator[Dbs]:
    home = Path(tempfile.mkdtemp(prefix="drctl-reconcile-test-", dir="/tmp"))
    home.chmod(0o755)  # as root the lab's PostgreSQL runs as drctl-pg, which must reach it
    lab = Lab(home)
    try:
        up = lab.up()
        primary = next(n for n in up.nodes if n.role == "primary")
        standby = next(n for n in up.nodes if n.role == "standby")
        with psycopg.connect(_dsn(primary.port, "postgres"), autocommit=True) as admin:
            admin.execute("create database src")
            admin.execute("create database dst")
        for name, extra in (("src", SOURCE_ONLY_SQL), ("dst", TARGET_SQL)):
            with psycopg.connect(_dsn(primary.port, name), autocommit=True) as conn:
                conn.execute(SCHEMA_SQL)
                conn.execute(extra)
                conn.execute("vacuum analyze")
                lsn = conn.execute("select pg_current_wal_lsn()::text").fetchone()
        assert lsn is not None
        deadline = time.monotonic() + 30
        while True:  # the standby has replayed everything above
            try:
                with psycopg.connect(_dsn(standby.port, "src"), autocommit=True) as conn:
                    row = conn.execute(
                        "select pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn[0],)
                    ).fetchone()
                    if row and row[0]:
                        break
            except psycopg.OperationalError:
                pass
            assert time.monotonic() < deadline, "the standby did not replay the test data"
            time.sleep(0.1)
        yield Dbs(
            _dsn(primary.port, "src"),
            _dsn(primary.port, "dst"),
            _dsn(standby.port, "src"),
            home,
        )
    finally:
        try:
            lab.down()
        finally:
            shutil.rmtree(home, ignore_errors=True)


def _found(result: rc.TableResult) -> set[tuple[tuple[object, ...], str]]:
    return {(d.key, d.kind) for d in result.diffs}


# ---------------------------------------------------------------------------------- real databases

needs_lab = pytest.mark.lab


@needs_lab
def test_identical_table_is_identical(dbs: Dbs) -> None:
    report = reconcile(dbs.src, dbs.dst, tables=["same", "empty_both"])
    assert report.identical
    assert report.summary() == "2 tables identical"
    same, empty = report.tables
    assert (same.table, same.source_rows, same.target_rows) == ("public.same", 1000, 1000)
    assert same.method == "keyed" and same.diffs == []
    assert (empty.source_rows, empty.target_rows, empty.identical) == (0, 0, True)
    assert report.hash_mode == "record"  # same server: hash_record_extended


@needs_lab
def test_changed_missing_and_extra_rows_are_named_by_key(dbs: Dbs) -> None:
    report = reconcile(dbs.src, dbs.dst, tables=["public.patients"])
    assert not report.identical
    (table,) = report.tables
    assert (table.source_rows, table.target_rows) == (3000, 3000)
    assert _found(table) == {
        ((5,), "changed"),
        ((9,), "missing_in_target"),
        ((5001,), "missing_in_source"),
    }
    assert table.summary() == (
        "public.patients: 1 changed (id=5), 1 missing in target (id=9), "
        "1 missing in source (id=5001)"
    )
    assert report.summary() == table.summary()
    data = report.as_dict()
    assert json.loads(json.dumps(data))["tables"][0]["differences"] == {
        "changed": 1,
        "missing_in_target": 1,
        "missing_in_source": 1,
    }
    assert "password" not in json.dumps(data)


@needs_lab
def test_composite_text_key_sampled_and_bisected(dbs: Dbs) -> None:
    """20 000 rows keyed (text, int): first ranges from a block sample, then quantile splits."""
    (table,) = reconcile(dbs.src, dbs.dst, tables=["ward.beds"]).tables
    assert table.key_columns == ("ward", "bed")
    assert _found(table) == {
        (("W050", 7), "changed"),
        (("W120", 33), "missing_in_target"),
        (("W999", 1), "missing_in_source"),
    }
    assert "(ward=W050, bed=7)" in table.summary()


@needs_lab
def test_integer_key_bisected_and_null_change_found(dbs: Dbs) -> None:
    (table,) = reconcile(dbs.src, dbs.dst, tables=["big"]).tables
    assert (table.source_rows, table.target_rows) == (60000, 60000)
    assert _found(table) == {
        ((30000,), "changed"),  # a value set to NULL
        ((12,), "missing_in_target"),
        ((60001,), "missing_in_source"),
    }


@needs_lab
def test_integer_keys_at_the_ends_of_their_types(dbs: Dbs) -> None:
    edges4, edges8 = reconcile(dbs.src, dbs.dst, tables=["edges4", "edges8"]).tables
    assert _found(edges4) == {((2147483647,), "changed"), ((-2147483648,), "missing_in_target")}
    assert _found(edges8) == {
        ((9223372036854775807,), "changed"),
        ((-9223372036854775808,), "missing_in_target"),
    }


@needs_lab
def test_partitioned_table_composite_integer_key(dbs: Dbs) -> None:
    """5 000 rows under one value of the leading key: split arithmetically, then at quantiles."""
    (table,) = reconcile(dbs.src, dbs.dst, tables=["visits"]).tables
    assert _found(table) == {((2, 4321), "changed"), ((1, 17), "missing_in_target")}


@needs_lab
@pytest.mark.parametrize("mode", ["text", "md5"])
def test_every_hash_mode_finds_the_same_rows(
    dbs: Dbs, mode: rc.HashMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallbacks used across major versions or encodings, forced on the same servers."""
    monkeypatch.setattr(pgd, "pg_hash_mode", lambda s, t: (mode, f"forced {mode}"))
    report = reconcile(dbs.src, dbs.dst, tables=["patients", "same"])
    assert report.hash_mode == mode and report.notes == [f"forced {mode}"]
    patients, same = report.tables
    assert _found(patients) == {
        ((5,), "changed"),
        ((9,), "missing_in_target"),
        ((5001,), "missing_in_source"),
    }
    assert same.identical


@needs_lab
def test_table_without_primary_key_compared_whole(dbs: Dbs) -> None:
    (table,) = reconcile(dbs.src, dbs.dst, tables=["nopk"]).tables
    assert table.method == "whole-table"
    assert not table.identical and table.diffs == []
    assert (table.source_rows, table.target_rows) == (500, 500)
    assert "no primary key" in table.note
    assert "different checksum" in table.summary() and "no primary key" in table.summary()


@needs_lab
def test_max_diffs_caps_the_list_and_says_so(dbs: Dbs) -> None:
    (table,) = reconcile(dbs.src, dbs.dst, tables=["many"], max_diffs=10).tables
    assert len(table.diffs) == 10 and table.truncated and not table.identical
    assert all(d.kind == "changed" and d.key[0] % 100 == 0 for d in table.diffs)  # type: ignore[operator]
    assert "max_diffs 10" in table.note
    (full,) = reconcile(dbs.src, dbs.dst, tables=["many"]).tables
    assert {d.key for d in full.diffs} == {(i,) for i in range(100, 5001, 100)}
    assert not full.truncated
    (counted,) = reconcile(dbs.src, dbs.dst, tables=["many"], max_diffs=0).tables
    assert not counted.identical and counted.diffs == [] and counted.truncated


@needs_lab
def test_schema_mode_compares_every_table_and_reports_one_sided_tables(dbs: Dbs) -> None:
    report = reconcile(dbs.src, dbs.dst, schemas=["public"])
    by_name = {t.table: t for t in report.tables}
    assert set(by_name) == {
        "public.patients",
        "public.big",
        "public.visits",  # the partitioned parent, not its partitions
        "public.nopk",
        "public.same",
        "public.many",
        "public.empty_both",
        "public.edges4",
        "public.edges8",
        "public.only_src",
    }
    assert by_name["public.same"].identical
    only = by_name["public.only_src"]
    assert not only.identical and only.note == "the table does not exist in the target"
    assert "does not exist in the target" in only.summary()
    assert not report.identical


@needs_lab
def test_reads_only_from_a_hot_standby(dbs: Dbs) -> None:
    """The standby refuses every write: a comparison from it can only have read."""
    report = reconcile(dbs.standby_src, dbs.dst, tables=["patients", "same"])
    assert _found(report.tables[0]) == {
        ((5,), "changed"),
        ((9,), "missing_in_target"),
        ((5001,), "missing_in_source"),
    }


@needs_lab
def test_sessions_are_read_only_repeatable_read_with_pinned_settings(dbs: Dbs) -> None:
    session = rc.PostgresSession("source", dbs.src)
    try:
        settings = dict(
            session.rows(
                "select name, setting from pg_settings where name in ('transaction_read_only',"
                " 'transaction_isolation', 'TimeZone', 'DateStyle', 'extra_float_digits')"
            )
        )
        assert settings == {
            "transaction_read_only": "on",
            "transaction_isolation": "repeatable read",
            "TimeZone": "UTC",
            "DateStyle": "ISO, YMD",
            "extra_float_digits": "1",
        }
        with pytest.raises(CommandFailed, match="read-only transaction"):
            session.rows("create table written (id int)")
    finally:
        session.close()


# ---------------------------------------------------------------------------------- bad input


@needs_lab
def test_unreachable_dsn_names_the_side_without_password(dbs: Dbs) -> None:
    before = _content(dbs.src)
    port = _closed_port()
    bad = f"host=127.0.0.1 port={port} user=postgres password=s3cret-pw dbname=x"
    with pytest.raises(ConnectionFailed) as caught:
        reconcile(dbs.src, bad, tables=["patients"])
    message = str(caught.value)
    assert "target" in message and f"port={port}" in message
    assert "s3cret-pw" not in message
    assert _content(dbs.src) == before


@needs_lab
def test_missing_table_names_table_and_side(dbs: Dbs) -> None:
    before = _content(dbs.src)
    with pytest.raises(InputError) as caught:
        reconcile(dbs.src, dbs.dst, tables=["patients", "only_src", "no_such"])
    message = str(caught.value)
    assert "table public.only_src does not exist in the target" in message
    assert "table public.no_such does not exist in the source" in message
    assert "table public.no_such does not exist in the target" in message
    assert _content(dbs.src) == before


@needs_lab
def test_mismatched_columns_listed(dbs: Dbs) -> None:
    with pytest.raises(InputError) as caught:
        reconcile(dbs.src, dbs.dst, tables=["bad.cols"])
    assert str(caught.value) == (
        "table bad.cols: the columns differ: only in the source: b; only in the target: c; "
        "different types: a (source integer, target bigint)"
    )


@needs_lab
def test_other_bad_input(dbs: Dbs) -> None:
    with pytest.raises(InputError, match="invalid source DSN"):
        reconcile("host=127.0.0.1 nonsense=1", dbs.dst, tables=["patients"])
    with pytest.raises(InputError, match="schema 'nowhere' does not exist in the source"):
        reconcile(dbs.src, dbs.dst, schemas=["nowhere"])
    with pytest.raises(InputError, match="more than two parts"):
        reconcile(dbs.src, dbs.dst, tables=["a.b.c"])
    with pytest.raises(InputError, match="max_diffs"):
        reconcile(dbs.src, dbs.dst, tables=["patients"], max_diffs=-1)


# ---------------------------------------------------------------------------------- CLI


@needs_lab
def test_cli_exit_codes_and_output(dbs: Dbs) -> None:
    same = drctl("verify", "tables", "--source", dbs.src, "--target", dbs.dst, "--table", "same")
    assert same.returncode == 0, same.stderr
    assert "identical" in same.stdout

    differ = drctl(
        "verify", "tables", "--source", dbs.src, "--target", dbs.dst,
        "--table", "patients", "--table", "same",
    )  # fmt: skip
    assert differ.returncode == 1, differ.stderr
    assert "id=5  changed" in differ.stdout
    assert "id=9  missing in target" in differ.stdout
    assert "id=5001  missing in source" in differ.stdout

    as_json = drctl(
        "verify", "tables", "--source", dbs.src, "--target", dbs.dst,
        "--schema", "ward", "--json",
    )  # fmt: skip
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert data["identical"] is False
    assert {(tuple(d["key"]), d["kind"]) for d in data["tables"][0]["diffs"]} == {
        (("W050", 7), "changed"),
        (("W120", 33), "missing_in_target"),
        (("W999", 1), "missing_in_source"),
    }


@needs_lab
def test_cli_bad_input_exits_2_with_a_clear_message(dbs: Dbs) -> None:
    missing = drctl(
        "verify", "tables", "--source", dbs.src, "--target", dbs.dst, "--table", "only_src"
    )
    assert missing.returncode == 2
    assert "only_src does not exist in the target" in missing.stderr
    assert "Traceback" not in missing.stderr

    columns = drctl(
        "verify", "tables", "--source", dbs.src, "--target", dbs.dst, "--table", "bad.cols",
        "--json",
    )  # fmt: skip
    assert columns.returncode == 2
    assert "only in the source: b" in json.loads(columns.stdout)["error"]

    port = _closed_port()
    down = drctl(
        "verify", "tables", "--source",
        f"host=127.0.0.1 port={port} user=postgres password=pw-xyz", "--target", dbs.dst,
    )  # fmt: skip
    assert down.returncode == 2
    assert "cannot connect to the source database" in down.stderr
    assert "pw-xyz" not in down.stderr + down.stdout
    assert "Traceback" not in down.stderr


# ---------------------------------------------------------------------------------- the check


@needs_lab
def test_tables_match_check_in_a_playbook(dbs: Dbs) -> None:
    port = int(dbs.src.split("port=")[1].split()[0])
    nodes = {
        name: {
            "role": role,
            "host": "127.0.0.1",
            "port": port,
            "postgres": {"data_dir": "/nonexistent", "bin_dir": "/nonexistent", "database": db},
        }
        for name, role, db in (("a", "origin", "src"), ("b", "copy", "dst"))
    }
    env = Environment.model_validate({"name": "reconcile-check", "nodes": nodes})
    targets = Targets(env, {"origin": "a", "copy": "b"})
    assert "pg.tables_match" in default_catalogue().checks
    try:
        differs = run_check(
            "pg.tables_match",
            "copy",
            {"source": "origin", "tables": ["patients"]},
            targets,
            Clock(),
        )
        assert differs.verdict == "deviated"
        assert differs.observed == (
            "public.patients: 1 changed (id=5), 1 missing in target (id=9), "
            "1 missing in source (id=5001)"
        )
        held = run_check(
            "pg.tables_match", "copy", {"source": "origin", "tables": ["same", "big"],
                                         "database": "src"}, targets, Clock(),
        )  # fmt: skip
        assert held.verdict == "held" and held.observed == "2 tables identical"
        broken = run_check(
            "pg.tables_match", "copy", {"source": "origin", "tables": ["only_src"]},
            targets, Clock(),
        )  # fmt: skip
        assert broken.verdict == "error"
        assert "only_src does not exist in the target" in broken.detail
    finally:
        targets.close()


# ---------------------------------------------------------------------------------- pure functions


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_parse_table_name() -> None:
    assert rc.parse_table_name("Public.Patients") == TableRef("public", "patients")
    assert rc.parse_table_name('"My Schema"."A.b"') == TableRef("My Schema", "A.b")
    assert rc.parse_table_name("beds") == TableRef("", "beds")
    assert rc.parse_table_name("his.patient", fold=str.upper) == TableRef("HIS", "PATIENT")
    assert "more than two parts" in str(rc.parse_table_name("a.b.c"))
    assert "cannot read" in str(rc.parse_table_name("a..b"))


def test_hash_mode_choice() -> None:
    same = (18, "UTF8", 1, 2)
    assert pgd.pg_hash_mode(same, same) == ("record", "")
    mode, why = pgd.pg_hash_mode(same, (17, "UTF8", 1, 2))
    assert mode == "text" and "major versions differ (18 vs 17)" in why
    mode, why = pgd.pg_hash_mode(same, (18, "LATIN1", 1, 2))
    assert mode == "md5" and "encodings differ" in why
    assert pgd.pg_hash_mode(same, (18, "UTF8", 1, None))[0] == "text"


def test_integer_ranges_cover_without_gaps() -> None:
    ranges = rc_engine._int_split(1, 1_000_001, 64)
    assert len(ranges) == 64
    assert ranges[0].lower == ("1",) and ranges[-1].upper == ("1000001",)
    assert all(a.upper == b.lower for a, b in itertools.pairwise(ranges))
    assert [(r.lo, r.hi) for r in rc_engine._int_split(5, 8, 64)] == [(5, 6), (6, 7), (7, 8)]
    top = rc_engine._int_split(rc_engine.INT8_MAX - 9, rc_engine.INT8_MAX + 1, 64)
    assert top[-1].upper is None and top[-2].upper == (str(rc_engine.INT8_MAX),)
    huge = rc_engine._int_split(10**20, 10**20 + 128, 4)  # Oracle NUMBER keys past bigint
    assert [r.upper for r in huge[:-1]] == [(str(10**20 + n),) for n in (32, 64, 96)]


def test_pg_range_sql_is_explicit_bounds() -> None:
    key = (Column("id", "bigint", "int8", True, True), Column("name", "text", "text", True))
    where = pgd.pg_range_where(key, KeyRange(("5", "x'y"), ("9",)))
    assert where.as_string(None) == (
        """("id", "name") >= ('5'::bigint, 'x''y'::text) AND "id" < '9'::bigint"""
    )
    assert pgd.pg_range_where(key, KeyRange()).as_string(None) == "true"
    columns = (*key, Column("doc", "json", "json"), Column("n", "numeric", "numeric"))
    assert pgd.pg_row_hash(columns, "record").as_string(None) == (
        """hash_record_extended(ROW("id", "name", "doc"::text, "n"::text), 0)"""
    )
    assert pgd.pg_row_hash(columns, "text").as_string(None) == (
        """hashtextextended(ROW("id", "name", "doc", "n")::text, 0)"""
    )
    plan = rc.TablePlan(TableRef("public", "t"), columns, key)
    stats = pgd.pg_range_stats_sql(plan, [KeyRange(None, ("3",)), KeyRange(("3",))], "record")
    text = stats.as_string(None)
    assert "GROUP BY" not in text.upper() and text.count("UNION ALL") == 1
    assert """WHERE "id" < '3'::bigint""" in text and """WHERE "id" >= '3'::bigint""" in text


def test_pg_column_hashing_choice() -> None:
    assert pgd.pg_column("a", "numeric(12,2)", "numeric", "b", 786438).native
    assert not pgd.pg_column("a", "numeric", "numeric", "b", -1).native  # 1.0 vs 1.00
    assert not pgd.pg_column("a", "interval", "interval", "b", -1).native
    assert not pgd.pg_column("a", "public.mood", "mood", "e", -1).native  # enum oids differ
    assert pgd.pg_column("a", "bigint", "int8", "b", -1).integer


# -- Oracle SQL, as text (no Oracle database here)

ORA_COLUMNS = (
    ora_sql.oracle_column("ID", "NUMBER", 22, 10, 0, 0, None),
    ora_sql.oracle_column("NAME", "VARCHAR2", 40, None, None, 40, "B"),
    ora_sql.oracle_column("BORN", "DATE", 7, None, None, 0, None),
    ora_sql.oracle_column("SEEN", "TIMESTAMP(6) WITH TIME ZONE", 13, None, 6, 0, None),
    ora_sql.oracle_column("TOKEN", "RAW", 16, None, None, 0, None),
    ora_sql.oracle_column("NICK", "NVARCHAR2", 40, None, None, 20, "C"),
    ora_sql.oracle_column("NOTES", "CLOB", 4000, None, None, 0, None),
)


def test_oracle_columns_and_types() -> None:
    assert [c.type for c in ORA_COLUMNS] == [
        "NUMBER(10,0)",
        "VARCHAR2(40 BYTE)",
        "DATE",
        "TIMESTAMP(6) WITH TIME ZONE",
        "RAW(16)",
        "NVARCHAR2(20 CHAR)",
        "CLOB",
    ]
    assert ORA_COLUMNS[0].integer and not ORA_COLUMNS[1].integer
    assert ora_sql.key_usable(ORA_COLUMNS[0]) and not ora_sql.key_usable(ORA_COLUMNS[3])


def test_oracle_row_string() -> None:
    text = ora_sql.row_string(ORA_COLUMNS)
    assert text.split(" || '|' || ") == [
        """NVL2("ID", LENGTHB(TO_CHAR("ID", 'TM9', 'NLS_NUMERIC_CHARACTERS=''.,''')) || ':' || """
        """TO_CHAR("ID", 'TM9', 'NLS_NUMERIC_CHARACTERS=''.,'''), '~')""",
        """NVL2("NAME", LENGTHB("NAME") || ':' || "NAME", '~')""",
        """NVL2("BORN", LENGTHB(TO_CHAR("BORN", 'SYYYY-MM-DD HH24:MI:SS')) || ':' || """
        """TO_CHAR("BORN", 'SYYYY-MM-DD HH24:MI:SS'), '~')""",
        """NVL2("SEEN", LENGTHB(TO_CHAR(SYS_EXTRACT_UTC("SEEN"), 'SYYYY-MM-DD HH24:MI:SS.FF9'))"""
        """ || ':' || TO_CHAR(SYS_EXTRACT_UTC("SEEN"), 'SYYYY-MM-DD HH24:MI:SS.FF9'), '~')""",
        """NVL2("TOKEN", LENGTHB(RAWTOHEX("TOKEN")) || ':' || RAWTOHEX("TOKEN"), '~')""",
        """NVL2("NICK", LENGTHB(TO_CHAR((ORA_HASH("NICK", 4294967295, 0) * 4294967296 + """
        """ORA_HASH("NICK", 4294967295, 1)))) || ':' || TO_CHAR((ORA_HASH("NICK", 4294967295, 0)"""
        """ * 4294967296 + ORA_HASH("NICK", 4294967295, 1))), '~')""",
        """NVL2("NOTES", LENGTHB(RAWTOHEX(DBMS_CRYPTO.HASH("NOTES", 2))) || ':' || """
        """RAWTOHEX(DBMS_CRYPTO.HASH("NOTES", 2)), '~')""",
    ]
    assert "CONVERT(\"NAME\", 'AL32UTF8')" in ora_sql.row_string(ORA_COLUMNS, utf8=True)
    wide = (ORA_COLUMNS[0], ora_sql.oracle_column("BODY", "VARCHAR2", 4000, None, None, 4000, "B"))
    assert 'ORA_HASH("BODY", 4294967295, 0)' in ora_sql.row_string(wide)  # would not fit: digested
    with pytest.raises(InputError, match="LONG"):
        ora_sql.row_string((ora_sql.oracle_column("OLD", "LONG", 0, None, None, 0, None),))


def test_oracle_ranges_are_lexicographic_without_row_values() -> None:
    key = (ORA_COLUMNS[0], ORA_COLUMNS[1])
    binds = ora_sql.Binds()
    where = ora_sql.range_where(key, KeyRange(("5", "abc"), ("9",)), binds)
    assert where == (
        """("ID" > TO_NUMBER(:b0) OR ("ID" = TO_NUMBER(:b0) AND "NAME" >= :b1))"""
        """ AND "ID" < TO_NUMBER(:b2)"""
    )
    assert binds.values == {"b0": "5", "b1": "abc", "b2": "9"}
    statement, values = ora_sql.range_stats_sql(
        TableRef("HIS", "PATIENT"), ORA_COLUMNS, key, [KeyRange(None, ("5",)), KeyRange(("5",))]
    )
    branches = statement.split("\nUNION ALL\n")
    assert len(branches) == 2 and values == {"b0": "5", "b1": "5"}
    assert branches[0].startswith("SELECT 0 AS ri, COUNT(*) AS n, TO_CHAR(SUM((ORA_HASH(x.rs")
    assert 'FROM "HIS"."PATIENT" WHERE "ID" < TO_NUMBER(:b0)) x' in branches[0]
    leaf, _ = ora_sql.leaf_sql(TableRef("HIS", "PATIENT"), ORA_COLUMNS, key, [(KeyRange(), 7)])
    assert leaf.endswith("WHERE ROWNUM <= 7") and 'ORDER BY "ID", "NAME"' in leaf
    split, _ = ora_sql.split_sql(TableRef("HIS", "PATIENT"), key, [(KeyRange(), 100, 6400)])
    assert "MOD(rn, 100) = 0 AND rn < 6400" in split
    dated = (ORA_COLUMNS[2],)
    assert ora_sql.key_text(dated[0]) == """TO_CHAR("BORN", 'YYYY-MM-DD HH24:MI:SS')"""
    assert ora_sql.range_where(dated, KeyRange(("2024-01-02 00:00:00",)), ora_sql.Binds()) == (
        """"BORN" >= TO_DATE(:b0, 'YYYY-MM-DD HH24:MI:SS')"""
    )
    assert "SAMPLE BLOCK (1.000000) SEED (7)" in ora_sql.sample_sql(
        TableRef("HIS", "PATIENT"), key, 1.0, 64
    )
    assert "SAMPLE" not in ora_sql.sample_sql(TableRef("HIS", "PATIENT"), key, 100.0, 64)


def test_oracle_dsn_and_hash_mode() -> None:
    parsed = ora.parse_dsn("his/Secr3t@db1.example:1521/HISPDB")
    assert (parsed.user, parsed.password, parsed.connect) == (
        "his",
        "Secr3t",
        "db1.example:1521/HISPDB",
    )
    assert ora.redact_dsn("his/Secr3t@db1:1521/HISPDB") == "his@db1:1521/HISPDB"
    assert ora.parse_dsn("oracle://his:p%40ss@db1:1521/HIS").password == "p@ss"
    with pytest.raises(InputError):
        ora.parse_dsn("no-at-sign")
    assert ora.oracle_hash_mode((1, "AL32UTF8", "AL16UTF16"), (1, "AL32UTF8", "AL16UTF16")) == (
        "ora_hash",
        "",
    )
    mode, why = ora.oracle_hash_mode((1, "ZHS16GBK", "AL16UTF16"), (1, "AL32UTF8", "AL16UTF16"))
    assert mode == "ora_hash_utf8" and "ZHS16GBK vs AL32UTF8" in why


def test_oracle_unreachable_names_the_side() -> None:
    port = _closed_port()
    with pytest.raises(ConnectionFailed) as caught:
        reconcile(
            f"his/pw-secret@127.0.0.1:{port}/FREEPDB1",
            f"his/pw-secret@127.0.0.1:{port}/FREEPDB1",
            engine="oracle",
        )
    assert "source" in str(caught.value) and "pw-secret" not in str(caught.value)
    assert "DPY-6005" in str(caught.value)  # the driver's code, from the one oracle executor
    assert "host 127.0.0.1: cannot connect to the source database" in str(caught.value)


def test_oracle_executor_names_codes_and_hosts() -> None:
    assert ora_exec.host_of("db1.example:1521/HISPDB") == "db1.example"
    assert ora_exec.host_of("tcps://db2/HIS") == "db2"
    assert ora_exec.host_of("[::1]:1521/FREEPDB1") == "::1"
    assert ora_exec.host_of("(DESCRIPTION=(ADDRESS=(HOST=db3)(PORT=1521)))") == "db3"
    assert ora_exec.host_of("HISPROD") == "HISPROD"  # a TNS alias
    plain = RuntimeError("ORA-00942: table or view does not exist\nHelp: https://...")
    assert ora_exec.error_code(plain) == "ORA-00942"
    assert ora_exec.error_text(plain) == (
        "ORA-00942: table or view does not exist Help: https://..."
    )
    assert ora_exec.error_code(RuntimeError("no code")) is None


def test_unreachable_nodes_named_by_the_check_without_password() -> None:
    """pg.tables_match opens its sessions from the run's nodes: errors name the node."""
    port = _closed_port()
    nodes = {
        name: {
            "role": role,
            "host": "127.0.0.1",
            "port": port,
            "postgres": {"data_dir": "/nonexistent", "bin_dir": "/nonexistent"},
        }
        for name, role in (("a", "origin"), ("b", "copy"))
    }
    env = Environment.model_validate({"name": "reconcile-down", "nodes": nodes})
    targets = Targets(env, {"origin": "a", "copy": "b"})
    try:
        with pytest.raises(ConnectionFailed) as caught:
            rc.tables_match(targets, "copy", rc.TablesMatchParams(source="origin"))
    finally:
        targets.close()
    message = str(caught.value)
    assert "host a: cannot connect to the source database" in message
    assert "host b: cannot connect to the target database" in message
    assert f"port={port}" in message and "password" not in message


def test_the_package_has_small_layers_and_no_driver_errors_of_its_own() -> None:
    """No module over ~500 lines; psycopg's and oracledb's errors are caught only in the
    executors (drills/executors/postgres.py, drills/executors/oracle.py)."""
    package = REPO / "verify" / "reconcile"
    modules = sorted(package.rglob("*.py"))
    assert {p.relative_to(package).as_posix() for p in modules} >= {
        "__init__.py", "model.py", "engine.py", "plan.py", "compare.py", "check.py",
        "dialects/postgres.py", "dialects/oracle.py", "dialects/oracle_sql.py",
    }  # fmt: skip
    for path in modules:
        text = path.read_text()
        assert len(text.splitlines()) <= 500, path
        assert "except psycopg" not in text and "except oracledb" not in text, path
        assert "import oracledb" not in text and "psycopg.connect" not in text, path
    model = (package / "model.py").read_text()
    assert "psycopg" not in model and "drills.executors" not in model
    for neutral in ("engine.py", "plan.py", "compare.py"):
        assert "psycopg" not in (package / neutral).read_text(), neutral


# ---------------------------------------------------------------------------------- Oracle Free

ORACLE_IMAGE = "gvenzl/oracle-free:23-slim-faststart"
ORACLE_TABLES = """
CREATE TABLE PATIENT (ID NUMBER(10) PRIMARY KEY, NAME VARCHAR2(40), BORN DATE,
                      SEEN TIMESTAMP WITH TIME ZONE, WEIGHT NUMBER(5,1))
INSERT INTO PATIENT SELECT LEVEL, 'patient ' || LEVEL, DATE '1950-01-01' + MOD(LEVEL * 7, 25000),
  TIMESTAMP '2024-01-01 00:00:00 +00:00' + NUMTODSINTERVAL(LEVEL * 17, 'MINUTE'),
  MOD(LEVEL, 900) / 10 FROM DUAL CONNECT BY LEVEL <= 20000
CREATE TABLE BED (WARD VARCHAR2(10), BED NUMBER(4), STATUS VARCHAR2(10), PRIMARY KEY (WARD, BED))
INSERT INTO BED SELECT 'W' || LPAD(TRUNC((LEVEL - 1) / 100) + 1, 3, '0'), MOD(LEVEL - 1, 100) + 1,
  'free' FROM DUAL CONNECT BY LEVEL <= 10000
"""


def _docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client"
    try:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the Docker engine does not answer ({exc})"
    if probe.returncode != 0:
        return "no Docker engine answers: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
    return None


@pytest.mark.docker
def test_oracle_free_reconcile() -> None:
    """Oracle Database Free in Docker, two schemas as source and target (same table names)."""
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    import oracledb

    name = f"drctl-oracle-test-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex[:16]
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "-p", "127.0.0.1::1521",
         "-e", f"ORACLE_PASSWORD={password}", ORACLE_IMAGE],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    try:
        port_line = subprocess.run(
            ["docker", "port", name, "1521/tcp"],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.splitlines()[0]  # fmt: skip
        port = int(port_line.rsplit(":", 1)[1])
        service = f"127.0.0.1:{port}/FREEPDB1"
        deadline = time.monotonic() + 600
        while True:
            try:
                system = oracledb.connect(user="system", password=password, dsn=service)
                break
            except oracledb.Error:
                assert time.monotonic() < deadline, "Oracle Free did not open within 10 min"
                time.sleep(5)
        with system.cursor() as cursor:
            for user in ("SRC", "DST"):
                cursor.execute(f'CREATE USER {user} IDENTIFIED BY "{password}"')
                cursor.execute(f"GRANT CREATE SESSION, CREATE TABLE TO {user}")
                cursor.execute(f"ALTER USER {user} QUOTA UNLIMITED ON USERS")
        system.close()
        for user, changes in (
            ("SRC", []),
            ("DST", [
                "UPDATE PATIENT SET WEIGHT = WEIGHT + 1 WHERE ID = 5",
                "DELETE FROM PATIENT WHERE ID = 9",
                "INSERT INTO PATIENT (ID, NAME) VALUES (20001, 'extra')",
                "UPDATE BED SET STATUS = 'busy' WHERE WARD = 'W050' AND BED = 7",
            ]),
        ):  # fmt: skip
            with oracledb.connect(user=user, password=password, dsn=service) as conn:
                cursor = conn.cursor()
                for statement in _statements(ORACLE_TABLES):
                    cursor.execute(statement)
                for statement in changes:
                    cursor.execute(statement)
                conn.commit()
        report = reconcile(
            f"src/{password}@{service}",
            f"dst/{password}@{service}",
            tables=["PATIENT", "BED"],
            engine="oracle",
        )
        patient, bed = report.tables
        assert patient.table == "SRC.PATIENT (target DST.PATIENT)"
        assert _found(patient) == {
            ((5,), "changed"),
            ((9,), "missing_in_target"),
            ((20001,), "missing_in_source"),
        }
        assert _found(bed) == {(("W050", 7), "changed")}
        assert password not in json.dumps(report.as_dict())
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120)


def _statements(script: str) -> list[str]:
    """The script's statements: each starts with CREATE or INSERT at the start of a line."""
    statements: list[str] = []
    for line in script.strip().splitlines():
        if line.startswith(("CREATE", "INSERT")):
            statements.append(line)
        else:
            statements[-1] += "\n" + line
    return statements
