"""Every lost transaction counted, and kept (issue 10, section 2).

An outside writer once lost 472 acknowledged writes (10.97 s of them) while the failover record
said `lost_writes: 2`, RPO 0.052 s: the canary is a sample. The loss is counted from the old
primary's WAL instead (``drills.engines.postgres.walloss``): its pure parts are tested on
pg_waldump's own output, the measurements' merging and the RPO objective on their own, and the
whole on both session labs: the standby's WAL receiver is stalled (its ``primary_conninfo``
pointed at a port nobody listens on), our own writer commits rows on the primary, each its own
transaction, the drill crashes the primary and fails over, and the record must count exactly the
rows the writer lost, name their tables, take the RPO from the WAL, and keep the WAL segments
that hold them, which pg_waldump reads back.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from drills.engine.catalogue import ActionResult, ActionSpec, Params
from drills.engine.runner import Runner, RunRequest
from drills.engines.postgres import walloss
from drills.engines.postgres.canary import SCHEMA_SQL
from drills.model.playbook import Objective
from drills.model.record import (
    CanaryResult,
    LostTransaction,
    LostTransactions,
    Measurements,
    Record,
    evaluate_objectives,
    merge_measurements,
)
from tests import test_runner_decisions as fakes
from tests.labs import AnyLab
from tests.test_real_failover import restore_pair, wait_replayed

# pg_waldump 18's own output (TZ=UTC): a transaction with a subtransaction (its insert into the
# table and its two indexes), an empty one, then the segment switch.
WALDUMP = (Path(__file__).parent / "fixtures" / "pg_waldump" / "pg18-subxact.txt").read_text()
MESSAGES = (
    "pg_waldump: first record is after 0/1726DC0, at 0/1726E00, skipping over 64 bytes\n"
    "pg_waldump: error: error in WAL record at 0/2000028: invalid record length at "
    "0/2000060: expected at least 24, got 0\n"
)
SWITCH = walloss.lsn_int("0/01726F98")  # where the new timeline forked: 751 survived


def test_pg_waldump_records_commits_subtransactions_and_relations() -> None:
    records = walloss.parse_waldump(WALDUMP + MESSAGES)
    assert len(records) == 11
    assert records[0].rmgr == "Heap" and records[0].xid == 751
    assert walloss.lsn_text(records[0].lsn) == "0/01726E00"
    commit = walloss.commit_of(records[6])
    assert commit is not None and commit.xid == 752 and commit.subxacts == (753,)
    assert commit.at == datetime(2026, 12, 1, 23, 46, 25, 625593, tzinfo=UTC)
    assert walloss.commit_of(records[9]) is None  # an ABORT loses nothing
    assert walloss.relations_of(records[5]) == {(1663, 5, 1247)}  # two blocks, one relation
    assert walloss.end_of_wal(MESSAGES) == walloss.lsn_int("0/2000060")


def test_the_lost_are_the_commits_past_the_switch_point_with_their_subtransactions() -> None:
    records = walloss.parse_waldump(WALDUMP)
    found = walloss.account(records, SWITCH)
    assert [c.xid for c in found.commits] == [752, 754]
    # 753's records (the table and its indexes) belong to 752, whose subtransaction it was.
    assert found.relations[753] == {(1663, 5, 16384), (1663, 5, 16390), (1663, 5, 16392)}
    assert 751 not in found.relations  # before the switch point: it survived
    last = walloss.last_commit_before(records, SWITCH)
    assert last is not None and last.xid == 751


def test_timeline_history_and_segment_names() -> None:
    history = walloss.parse_history(
        "1\t0/3000158\tno recovery target specified\n\n2\t0/5000A20\tno recovery target specified\n"
    )
    assert history == [
        (1, walloss.lsn_int("0/3000158"), "no recovery target specified"),
        (2, walloss.lsn_int("0/5000A20"), "no recovery target specified"),
    ]
    size = 16 * 1024 * 1024
    name = walloss.segment_name(2, walloss.lsn_int("1/05000A20") // size, size)
    assert name == "000000020000000100000005"
    assert walloss.segment_of(name, size) == (2, walloss.lsn_int("1/05000000") // size)
    assert walloss.segment_of("00000002.history", size) is None
    assert walloss.missing_segment(
        'pg_waldump: error: could not find file "000000010000000000000009": No such file'
    ) == ("000000010000000000000009")


def lost(accounting: str = "exact", count: int | None = 5, rpo: float | None = 10.5) -> Any:
    return LostTransactions(
        loss_accounting=accounting,  # type: ignore[arg-type]
        count=count,
        rpo_seconds=rpo,
        node="pg1",
        transactions=[LostTransaction(xid=n, lsn="0/1", tables=["public.t"]) for n in range(5)],
        note=""
        if accounting == "exact"
        else "the WAL of pg1 could not be read: its host cannot be reached (connection refused)",
    )


def canary(lost_: int, rpo: float) -> CanaryResult:
    return CanaryResult(written=100, acknowledged=90, lost=lost_, rpo_seconds=rpo)


def test_the_wal_count_is_the_runs_count_and_the_canary_stays_a_sample() -> None:
    base = Measurements(lost_writes=2, rpo_seconds=0.052, canary=canary(2, 0.052))
    merged = merge_measurements(base, [{"lost_transactions": lost().model_dump()}])
    assert (merged.lost_writes, merged.rpo_seconds) == (5, 10.5)
    assert merged.canary == canary(2, 0.052)
    assert merged.lost_transactions is not None
    assert merged.lost_transactions.loss_accounting == "exact"


def test_an_unreadable_wal_gives_the_canary_as_a_lower_bound() -> None:
    base = Measurements(lost_writes=2, rpo_seconds=0.052, canary=canary(2, 0.052))
    merged = merge_measurements(
        base, [{"lost_transactions": lost("lower_bound", None).model_dump()}]
    )
    bound = merged.lost_transactions
    assert bound is not None and bound.loss_accounting == "lower_bound"
    assert (bound.count, bound.rpo_seconds, merged.lost_writes) == (2, 0.052, 2)
    assert "its host cannot be reached" in bound.note
    assert "the canary's figures are a lower bound: at least 2 writes lost" in bound.note
    no_canary = merge_measurements(
        Measurements(), [{"lost_transactions": lost("lower_bound", None).model_dump()}]
    )
    assert no_canary.lost_transactions is not None
    assert no_canary.lost_transactions.count is None
    assert "the loss is unknown" in no_canary.lost_transactions.note


def test_a_canary_that_lost_more_than_the_wal_showed_makes_the_count_a_lower_bound() -> None:
    base = Measurements(canary=canary(7, 11.0))
    merged = merge_measurements(base, [{"lost_transactions": lost().model_dump()}])
    assert merged.lost_transactions is not None
    assert merged.lost_transactions.loss_accounting == "lower_bound"
    assert merged.lost_writes == 7 and "that count is not trusted" in merged.lost_transactions.note


def test_the_rpo_objective_reads_the_wal_figure() -> None:
    rpo5, rpo0 = Objective(target=5.0, measure="rpo"), Objective(target=0.0, measure="rpo")
    exact = merge_measurements(
        Measurements(canary=canary(2, 0.052)), [{"lost_transactions": lost().model_dump()}]
    )
    [missed] = evaluate_objectives({"rpo": rpo5}, [], exact)
    assert (missed.met, missed.measured_seconds) == (False, 10.5)
    assert missed.basis == "measured: rpo (5 transactions lost, read from the old primary's WAL)"
    # rpo 0 fails whenever a transaction was lost, however short the time.
    quick = merge_measurements(Measurements(), [{"lost_transactions": lost(rpo=0.0).model_dump()}])
    [zero] = evaluate_objectives({"rpo": rpo0}, [], quick)
    assert zero.measured_seconds == 0.0 and not zero.met
    none_lost = merge_measurements(
        Measurements(), [{"lost_transactions": lost(count=0, rpo=0.0).model_dump()}]
    )
    assert evaluate_objectives({"rpo": rpo0}, [], none_lost)[0].met
    # A lower bound cannot show an objective met, however small it is.
    bound = merge_measurements(
        Measurements(canary=canary(0, 0.0)),
        [{"lost_transactions": lost("lower_bound", None).model_dump()}],
    )
    [unknown] = evaluate_objectives({"rpo": rpo5}, [], bound)
    assert not unknown.met and "only a lower bound" in unknown.note
    assert unknown.basis == "measured: rpo (a lower bound: at least 0 canary writes lost)"


class MeasureParams(Params):
    count: int


def _measure_run(targets: Any, role: str, params: MeasureParams, timeout: float) -> ActionResult:
    found = lost(count=params.count, rpo=1.5).model_dump()
    return ActionResult("counted", {"measurements": {"lost_transactions": found}})


def test_the_runner_merges_what_a_step_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's data key `measurements` reaches the run's measurements (the objectives read
    them: ``test_the_rpo_objective_reads_the_wal_figure``)."""
    plain = fakes.fake_catalogue

    def with_measure() -> Any:
        catalogue = plain()
        catalogue.add_actions(
            ActionSpec("fake.measure", MeasureParams, _measure_run, lambda *a: [], False, "m")
        )
        return catalogue

    monkeypatch.setattr(fakes, "fake_catalogue", with_measure)
    world = fakes.World({"db1": "primary", "db2": "standby"})
    steps = [{"id": "count", "action": "fake.measure", "target": "primary", "with": {"count": 3}}]
    record = fakes.run(tmp_path, world, steps)
    assert record.status == "passed", record.reason
    m = record.measurements
    assert m.lost_transactions is not None and m.lost_transactions.count == 3
    assert (m.lost_writes, m.rpo_seconds) == (3, 1.5)
    # ... as the journal has it: the record is built from the journal alone.
    journal = tmp_path / "records" / f"{record.id}.journal.jsonl"
    assert '"lost_writes": 3' in journal.read_text().splitlines()[-2]


def test_the_report_lists_the_lost_transactions_in_both_languages(tmp_path: Path) -> None:
    from drills.reports.view import ReportInput, build_view

    found = lost().model_copy(
        update={
            "switch_lsn": "0/5000A20",
            "timeline": 1,
            "new_timeline": 2,
            "last_surviving_commit_at": "2026-12-01T23:40:01.000000Z",
            "last_lost_commit_at": "2026-12-01T23:40:11.500000Z",
            "tables": {
                "public.t": 5,
                "relfilenode 1663/5/9 (not in the new primary's catalogue)": 1,
            },
            "note": "the first 5000 lost transactions are listed",
        }
    )
    record = fake_record(found)
    from drills.reports.site import PACKAGE

    words = yaml.safe_load((PACKAGE / "messages.yaml").read_text())
    for lang in ("zh", "en"):
        t = words[lang]
        doc = build_view(ReportInput(record, None, []), lang, {}, t)
        section = doc["lost_transactions"]
        assert section is not None and len(section["rows"]) == 5
        assert str(section["rows"][0]["tables"]) == "public.t"
        if lang == "zh":
            assert "据原主库 pg1 的 WAL 精确统计" in str(section["text"])
            assert "新主库系统目录中没有" in str(section["tables"][1]["name"])
            assert "仅列出前 5000 个" in str(section["note"])
            assert "RPO（据 WAL）" in section["rpo"]
            assert not doc["unknown"], [str(x) for x in doc["consistency"]]
        else:
            assert "Counted exactly from the WAL of the old primary pg1" in section["text"]


def fake_record(found: LostTransactions) -> Record:
    measurements = merge_measurements(
        Measurements(canary=canary(1, 0.05)), [{"lost_transactions": found.model_dump()}]
    )
    objective = Objective(target=5.0, measure="rpo")
    return Record.model_validate(
        {
            "id": "20261201T234000Z-pg-failover-lab-0000",
            "status": "failed",
            "reason": "objectives missed: rpo 10.5s against a target of 5s",
            "mode": "drill",
            "playbook": {"name": "pg-failover", "version": 1, "kind": "failover"},
            "environment": {"name": "lab", "nodes": {}},
            "started_at": "2026-12-01T23:40:00.000Z",
            "ended_at": "2026-12-01T23:40:20.000Z",
            "duration_seconds": 20.0,
            "measurements": measurements.model_dump(),
            "objectives": [
                o.model_dump() for o in evaluate_objectives({"rpo": objective}, [], measurements)
            ],
        }
    )


# -- the labs: a stalled standby, an outside writer, a crash ------------------------------------

WRITER_TABLES = ("public.ward_orders", "public.ward_notes")
ROWS = 240


def stalled_failover(tmp_path: Path) -> Path:
    """pg-failover as shipped, without the streaming precondition (the stall is the point)."""
    data = yaml.safe_load((Path(__file__).parent.parent / "playbooks/pg-failover.yaml").read_text())
    data["preconditions"] = [p for p in data["preconditions"] if p["check"] != "pg.streaming"]
    path = tmp_path / "pg-failover-stalled.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def primary_conninfo(lab: AnyLab, node: str, value: str | None = None) -> str:
    """The node's primary_conninfo; with ``value``, set it (ALTER SYSTEM, reload) first."""
    with psycopg.connect(lab.dsn(node), autocommit=True) as conn:
        if value is not None:
            conn.execute(f"alter system set primary_conninfo = {psycopg.sql.quote(value)}")
            conn.execute("select pg_reload_conf()")
        row = conn.execute("show primary_conninfo").fetchone()
        return str(row[0]) if row else ""


def receiving(lab: AnyLab, node: str) -> bool:
    with psycopg.connect(lab.dsn(node), autocommit=True) as conn:
        return bool(
            conn.execute("select 1 from pg_stat_wal_receiver where status = 'streaming'").fetchall()
        )


@pytest.fixture
def healthy(any_lab: AnyLab, tmp_path: Path) -> Iterator[AnyLab]:
    with any_lab.active():
        any_lab.wait_streaming()
        try:
            yield any_lab
        finally:
            restore_pair(any_lab, tmp_path)


@pytest.mark.lab
def test_every_transaction_a_stalled_failover_lost_is_counted_and_kept(
    healthy: AnyLab, tmp_path: Path
) -> None:
    lab = healthy
    old, new = lab.role_of("primary"), lab.role_of("standby")
    base = int(time.time() * 1000) * 1000
    with psycopg.connect(lab.dsn(old), autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)  # drctl's own tables exist on both before the stall
        for table in WRITER_TABLES:
            conn.execute(
                f"create table if not exists {table} (id bigint primary key, at"
                " timestamptz not null default clock_timestamp())"
            )
    wait_replayed(lab, old, new)
    original = primary_conninfo(lab, new)
    host = lab.node(old).host
    stalled = False
    try:
        # The stall: the standby's WAL receiver points at a port nobody listens on.
        primary_conninfo(lab, new, f"host={host} port=1 user=postgres application_name={new}")
        stalled = True
        deadline = time.monotonic() + 10
        while receiving(lab, new):
            assert time.monotonic() < deadline, "the standby kept streaming"
            time.sleep(0.05)
        # Our own writer: each row its own transaction, acknowledged when its commit returned;
        # spread over 6 s, so the WAL's RPO must exceed the playbook's 5 s.
        acked: dict[str, list[int]] = {t: [] for t in WRITER_TABLES}
        with psycopg.connect(lab.dsn(old), autocommit=True) as conn:
            for n in range(ROWS):
                table = WRITER_TABLES[n % 2]
                conn.execute(f"insert into {table} (id) values (%s)", (base + n,))
                acked[table].append(base + n)
                time.sleep(6.0 / ROWS)

        record = Runner(
            RunRequest(playbook=str(stalled_failover(tmp_path)), environment=lab.env)
        ).run()

        steps = {s.id: s for s in record.steps}
        assert [s.id for s in record.steps][-2:] == [
            "count_lost_transactions",
            "rejoin_old_primary",
        ]
        assert all(s.status in ("passed", "skipped") for s in record.steps), [
            (s.id, s.status, s.reason) for s in record.steps
        ]
        assert lab.roles_now() == {old: "standby", new: "primary"}
        missing: dict[str, int] = {}
        with psycopg.connect(lab.dsn(new), autocommit=True) as conn:
            for table, keys in acked.items():
                have = {
                    int(r[0])
                    for r in conn.execute(f"select id from {table} where id >= %s", (base,))
                }
                missing[table] = len([k for k in keys if k not in have])
    finally:
        if stalled:
            primary_conninfo(lab, new, original)
    # The writer lost every row it wrote during the stall; the record counted each of them.
    assert missing == {t: ROWS // 2 for t in WRITER_TABLES}
    m = record.measurements
    found = m.lost_transactions
    assert found is not None and found.loss_accounting == "exact", found
    assert {t: found.tables.get(t) for t in WRITER_TABLES} == missing
    writer_txs = [tx for tx in found.transactions if set(tx.tables) & set(WRITER_TABLES)]
    assert len(writer_txs) == ROWS and all(len(tx.tables) == 1 for tx in writer_txs)
    assert found.count == len(found.transactions) == m.lost_writes
    assert found.count >= ROWS  # and the canary's, the write probe's, the HIS's...
    assert found.node == old and found.new_timeline == (found.timeline or 0) + 1
    # The canary saw a sample of it: its lost writes are the canary transactions the WAL holds
    # (one more when the crash came between a commit and its acknowledgement).
    assert m.canary is not None
    canary_txs = found.tables.get("drctl.canary", 0)
    assert canary_txs - 1 <= m.canary.lost <= canary_txs
    # The RPO is the WAL's: from the last commit that survived to the old primary's last one.
    assert found.rpo_seconds is not None and found.rpo_seconds >= 6.0
    assert m.rpo_seconds == found.rpo_seconds
    assert found.last_surviving_commit_at and found.last_lost_commit_at
    span = datetime.fromisoformat(found.last_lost_commit_at.replace("Z", "+00:00")) - (
        datetime.fromisoformat(found.last_surviving_commit_at.replace("Z", "+00:00"))
    )
    assert round(span.total_seconds(), 3) == found.rpo_seconds
    assert m.canary.rpo_seconds is None or m.canary.rpo_seconds < found.rpo_seconds
    rpo = next(o for o in record.objectives if o.name == "rpo")
    assert not rpo.met and rpo.measured_seconds == found.rpo_seconds
    assert f"({found.count} transactions lost, read from the old primary's WAL)" in rpo.basis
    assert record.status == "failed" and "objectives missed: rpo" in record.reason
    # The WAL segments that hold them are kept, whole, with their sha256; pg_waldump reads the
    # lost commits back from the copies.
    count_step = steps["count_lost_transactions"]
    assert count_step.data["wal_segments"] == [s.model_dump() for s in found.wal_segments]
    assert found.wal_segments
    evidence = Path(found.wal_segments[0].path).parent
    assert evidence == lab.home / "evidence" / record.id / "wal"
    for segment in found.wal_segments:
        data = Path(segment.path).read_bytes()
        assert len(data) == segment.size and hashlib.sha256(data).hexdigest() == segment.sha256
    pg = lab.node(old).postgres
    assert pg is not None
    dump = subprocess.run(
        [
            f"{pg.bin_dir}/pg_waldump",
            *("--path", str(evidence), "--start", str(found.switch_lsn)),
            *("--timeline", str(found.timeline), "--rmgr", "Transaction"),
        ],
        capture_output=True,
        text=True,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    commits = [r for r in walloss.parse_waldump(dump.stdout) if walloss.commit_of(r)]
    assert len(commits) == found.count, dump.stderr[-500:]
    # The report lists them, in both languages.
    from drills.reports import render_report

    sealed = lab.store.sealed(record.id)
    zh = render_report(sealed, fmt="md", lang="zh").decode()
    en = render_report(sealed, fmt="md", lang="en").decode()
    assert "### 丢失事务" in zh and f"事务共 {found.count} 个" in zh
    assert "public.ward\\_orders" in zh and str(writer_txs[0].xid) in zh
    assert "### Lost transactions" in en and f"{found.count} transaction\\(s\\)" in en
    with contextlib.suppress(AssertionError):
        lab.wait_streaming(30)
