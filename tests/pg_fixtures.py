"""What test_backup and test_migrate share: a private DRCTL_HOME, seeded tables, a fingerprint
of a source that proves it was not changed, playbook variants, and a look for leftover servers.

No side effects on import.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.engine.runner import Runner, RunRequest
from drills.executors.postgres import SqlExecutor
from drills.lab.onehost import OS_USER
from drills.model.record import Record
from tests.helpers import REPO

RUN_AS = OS_USER if os.geteuid() == 0 else None

SEED = """
create schema if not exists ward;
create table public.patients (
    id integer primary key, name text not null, born date, ward integer, note text);
insert into public.patients
    select g, 'patient ' || g, date '1950-01-01' + g, g % 40,
           case when g % 7 = 0 then null else md5(g::text) end
    from generate_series(1, 3000) g;
create table public.visits (
    id bigint primary key, patient_id integer not null, at timestamptz not null,
    amount numeric(10, 2) not null);
insert into public.visits
    select g, 1 + g % 3000, timestamptz '2026-01-01 08:00+08' + g * interval '17 minutes',
           (g % 997) * 1.25
    from generate_series(1, 5000) g;
create table ward.beds (ward integer, bed integer, label text, primary key (ward, bed));
insert into ward.beds select w, b, 'W' || w || '-' || b
    from generate_series(1, 40) w, generate_series(1, 12) b;
create table public.audit_log (at timestamptz, message text);
insert into public.audit_log
    select timestamptz '2026-01-01' + g * interval '1 hour', 'event ' || g
    from generate_series(1, 200) g;
"""
SEEDED_TABLES = {"public.patients", "public.visits", "ward.beds", "public.audit_log"}


@contextlib.contextmanager
def private_home(prefix: str) -> Iterator[Path]:
    """A DRCTL_HOME of our own, reachable by the lab's OS user; DRCTL_HOME restored after."""
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    home.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRCTL_HOME", str(home))
        try:
            yield home
        finally:
            shutil.rmtree(home, ignore_errors=True)


def environment(home: Path, name: str = "lab") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((home / "environments" / f"{name}.yaml").read_text())
    return data


def dsn_of(node: dict[str, Any], database: str | None = None) -> str:
    pg = node["postgres"]
    return (
        f"host={node['host']} port={node['port']} user={pg['user']} "
        f"dbname={database or pg['database']} connect_timeout=3"
    )


def sql(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    return SqlExecutor(dsn + " options='-c default_transaction_read_only=off'", host="test").query(
        statement, params, timeout=60
    )


def user_tables(dsn: str) -> list[str]:
    rows = sql(
        dsn,
        "select n.nspname || '.' || c.relname from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'r'"
        " and n.nspname not in ('pg_catalog', 'information_schema', 'drctl', 'his')"
        " and n.nspname not like 'pg\\_toast%%' order by 1",
    )
    return [str(r[0]) for r in rows]


def fingerprint(dsn: str) -> dict[str, Any]:
    """Every user table's columns, rows and a checksum of its content, the tuples ever written
    to it (pg_stat_user_tables), and whether new sessions may write. drctl's schema is left out:
    drills write heartbeats there."""
    found: dict[str, Any] = {}
    for table in user_tables(dsn):
        columns = sql(
            dsn,
            "select string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', '"
            " order by attnum) from pg_attribute where attrelid = %s::regclass"
            " and attnum > 0 and not attisdropped",
            (table,),
        )[0][0]
        count, digest = sql(
            dsn, f"select count(*), md5(string_agg(t::text, '|' order by t::text)) from {table} t"
        )[0]
        written = sql(
            dsn,
            "select n_tup_ins, n_tup_upd, n_tup_del from pg_stat_user_tables"
            " where relid = %s::regclass",
            (table,),
        )[0]
        found[table] = {"columns": columns, "rows": count, "md5": digest, "written": written}
    read_only = SqlExecutor(dsn, host="test").scalar("show default_transaction_read_only")
    return {"tables": found, "default_transaction_read_only": read_only}


def user_dir(path: Path) -> Path:
    """A directory the lab's OS user may write in (as pg_basebackup and pg_dump run as it)."""
    path.mkdir(parents=True, exist_ok=True)
    if RUN_AS is not None:
        entry = pwd.getpwnam(RUN_AS)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def postgres_processes_under(*roots: Path | str) -> list[str]:
    """Command lines of live PostgreSQL servers whose data directory is under one of ``roots``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in cmdline if w]
        if not words or not words[0].endswith("postgres"):
            continue
        if any(cwd.startswith(str(root)) for root in roots):
            found.append(f"{entry}: {' '.join(words)} (in {cwd})")
    return found


def run(playbook: str | Path, environment: str = "lab", **request: Any) -> Record:
    return Runner(RunRequest(playbook=str(playbook), environment=environment, **request)).run()


def variant(
    tmp_path: Path,
    shipped: str,
    *,
    name: str | None = None,
    with_: dict[str, dict[str, Any]] | None = None,
    insert_after: dict[str, dict[str, Any]] | None = None,
    only: list[str] | None = None,
) -> Path:
    """A copy of a shipped playbook with some steps' parameters changed, steps inserted, or only
    some steps kept (rollback steps are kept)."""
    data = yaml.safe_load((REPO / "playbooks" / f"{shipped}.yaml").read_text())
    steps = []
    for step in data["steps"]:
        if only is not None and step["id"] not in only:
            continue
        if with_ and step["id"] in with_:
            step["with"] = {**step.get("with", {}), **with_[step["id"]]}
        steps.append(step)
        if insert_after and step["id"] in insert_after:
            steps.append(insert_after[step["id"]])
    data["steps"] = steps
    if only is not None:
        data.pop("objectives", None)
    path = tmp_path / f"{name or shipped}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def steps_of(record: Record) -> dict[str, Any]:
    return {f"{s.phase}:{s.id}": s for s in record.steps}
