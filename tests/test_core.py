"""The pure core: durations, objectives, the record built from a journal, canary analysis, lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drills.engine.measures import Write, WriterLog, analyse_canary, analyse_write_outage
from drills.model.durations import parse_duration
from drills.model.errors import RefusedError
from drills.model.playbook import Objective
from drills.model.record import Measurements, Milestone, build_record, evaluate_objectives
from drills.records.journal import Journal, read_journal
from drills.records.lock import EnvironmentLock, force_unlock, holder_if_alive


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h30m", 5400), (12, 12.0), ("1.5s", 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5x", "", "m5", True, -1, "5m3"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)


def milestone(name: str, offset: float) -> Milestone:
    return Milestone(name=name, at="2026-11-27T00:00:00.000Z", offset=offset)


def test_objectives_between_milestones_use_offsets() -> None:
    objectives = {
        "rto": Objective.model_validate({"target": "2s", "from": "a", "to": "b"}),
        "slow": Objective.model_validate({"target": "0.5s", "from": "a", "to": "b"}),
        "never": Objective.model_validate({"target": "1s", "from": "a", "to": "c"}),
    }
    results = {
        o.name: o
        for o in evaluate_objectives(
            objectives, [milestone("a", 1.0), milestone("b", 2.25)], Measurements()
        )
    }
    assert results["rto"].measured_seconds == 1.25 and results["rto"].met
    assert results["slow"].measured_seconds == 1.25 and not results["slow"].met
    assert results["never"].measured_seconds is None and not results["never"].met
    assert "milestone c was not reached" in results["never"].note


def test_rpo_zero_is_missed_by_any_lost_write() -> None:
    rpo = {"rpo": Objective.model_validate({"target": 0, "measure": "rpo"})}
    [kept] = evaluate_objectives(rpo, [], Measurements(lost_writes=0, rpo_seconds=0.0))
    [lost] = evaluate_objectives(rpo, [], Measurements(lost_writes=1, rpo_seconds=0.0))
    [unmeasured] = evaluate_objectives(rpo, [], Measurements())
    assert kept.met and not lost.met and not unmeasured.met


def log_of(writes: list[tuple[int, float, str]], attempts: int | None = None) -> WriterLog:
    log = WriterLog(attempts=attempts or len(writes))
    log.acks = [Write(seq, offset, 1_800_000_000 + offset, node) for seq, offset, node in writes]
    return log


def test_canary_lost_writes_and_rpo() -> None:
    log = log_of(
        [(1, 0.0, "pg1"), (2, 0.1, "pg1"), (3, 0.2, "pg1"), (4, 0.3, "pg1"), (6, 1.5, "pg2")],
        attempts=6,
    )
    result = analyse_canary(log, present={1, 2, 6}, checked_on="pg2")
    assert result.lost == 2 and result.lost_seqs == [3, 4]
    assert result.rpo_seconds == pytest.approx(0.2)  # last acked (0.3) - newest survivor (0.1)
    nothing_lost = analyse_canary(log, present={1, 2, 3, 4, 6}, checked_on="pg2")
    assert nothing_lost.lost == 0 and nothing_lost.rpo_seconds == 0.0
    unreadable = analyse_canary(log, present=None, checked_on=None)
    assert unreadable.rpo_seconds is None


def test_write_outage_is_the_longest_gap_and_names_both_sides() -> None:
    log = log_of(
        [(1, 0.0, "pg1"), (2, 0.01, "pg1"), (3, 0.02, "pg1"), (9, 0.42, "pg2"), (10, 0.43, "pg2")]
    )
    outage = analyse_write_outage(log, stopped_offset=0.45)
    assert outage.seconds == pytest.approx(0.4)
    assert (outage.last_write_node, outage.first_write_node) == ("pg1", "pg2")


def test_write_outage_is_the_switch_even_when_a_later_gap_is_longer() -> None:
    """A stall on the new primary after the switch is not the switch's outage."""
    log = log_of(
        [(1, 0.0, "pg2"), (2, 0.01, "pg2"), (5, 0.09, "pg1"), (6, 0.10, "pg1"), (9, 0.40, "pg1")]
    )
    outage = analyse_write_outage(log, stopped_offset=0.41)
    assert outage.seconds == pytest.approx(0.08)
    assert (outage.last_write_node, outage.first_write_node) == ("pg2", "pg1")
    assert outage.note == ""


def test_writes_that_never_moved_give_the_longest_gap_and_say_so() -> None:
    log = log_of([(1, 0.0, "pg1"), (2, 0.01, "pg1"), (3, 0.31, "pg1"), (4, 0.32, "pg1")])
    outage = analyse_write_outage(log, stopped_offset=0.33)
    assert outage.seconds == pytest.approx(0.3)
    assert "never moved to another node" in outage.note


def test_write_outage_that_never_ended_is_not_invented() -> None:
    log = log_of([(1, 0.0, "pg1"), (2, 0.01, "pg1")])
    outage = analyse_write_outage(log, stopped_offset=5.0)
    assert outage.seconds is None and "had not ended" in outage.note


def started_event(run_id: str = "R1") -> dict[str, Any]:
    return {
        "event": "run_started",
        "at": "2026-11-27T00:00:00.000Z",
        "offset": 0.0,
        "run_id": run_id,
        "mode": "drill",
        "playbook": {"name": "p", "sha256": "0" * 64},
        "environment": {"name": "e"},
        "objectives": {"rto": {"target": 10, "from": "run_started", "to": "done"}},
    }


def step_event(step_id: str, start: float, end: float) -> dict[str, Any]:
    return {
        "event": "step",
        "at": "x",
        "offset": end,
        "step": {
            "id": step_id,
            "action": "observe",
            "target": "primary",
            "node": "pg1",
            "status": "passed",
            "attempts": 1,
            "started_at": "s",
            "ended_at": "e",
            "offsets": {"started": start, "ended": end},
            "duration_seconds": end - start,
        },
    }


def test_a_journal_without_an_end_is_an_interrupted_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "r.journal.jsonl")
    journal.append(started_event())
    journal.append(step_event("one", 0.1, 0.2))
    journal.close()
    with (tmp_path / "r.journal.jsonl").open("a") as handle:
        handle.write('{"event": "step", "torn')  # the process died mid-write
    record = build_record(read_journal(tmp_path / "r.journal.jsonl"))
    assert record.status == "interrupted"
    assert [s.id for s in record.steps] == ["one"]
    assert "steps finished: one" in record.reason
    assert record.objectives[0].met is False


def test_a_finished_journal_keeps_its_status_and_objectives() -> None:
    events = [
        started_event(),
        {
            "event": "milestone",
            "at": "x",
            "offset": 0.0,
            "milestone": {"name": "run_started", "at": "a", "offset": 0.0},
        },
        step_event("one", 0.1, 0.2),
        {
            "event": "milestone",
            "at": "x",
            "offset": 3.5,
            "milestone": {"name": "done", "at": "b", "offset": 3.5},
        },
        {"event": "run_ended", "at": "z", "offset": 4.0, "status": "passed", "reason": "ok"},
    ]
    record = build_record(events)
    assert record.status == "passed" and record.duration_seconds == 4.0
    assert record.objectives[0].measured_seconds == 3.5 and record.objectives[0].met


def test_one_drill_at_a_time_and_a_dead_run_keeps_the_lock(tmp_path: Path) -> None:
    first = EnvironmentLock(tmp_path, "lab")
    first.acquire("R1", 0.0)
    assert holder_if_alive(tmp_path, "lab") is not None
    with pytest.raises(RefusedError, match="in use by run R1"):
        EnvironmentLock(tmp_path, "lab").acquire("R2", 0.0)
    first.release()
    EnvironmentLock(tmp_path, "lab").acquire("R3", 0.0)  # the process "dies": no release
    # (the flock is held by this process, so make a clean handle drop it as a death would)
    import gc

    gc.collect()
    stale_path = tmp_path / "lab.lock"
    assert "R3" in stale_path.read_text()
    with pytest.raises(RefusedError, match="drctl unlock lab"):
        EnvironmentLock(tmp_path, "lab").acquire("R4", 0.0)
    cleared = force_unlock(tmp_path, "lab")
    assert cleared is not None and cleared.run_id == "R3"
    EnvironmentLock(tmp_path, "lab").acquire("R5", 0.0)


def test_reading_an_interrupted_run_never_writes_and_sealing_is_explicit(tmp_path: Path) -> None:
    from drills.records.store import RecordStore

    store = RecordStore(tmp_path / "records", tmp_path / "locks")
    run_id = "20261201T000000Z-p-e-dead"
    journal = Journal(store.journal_path(run_id))
    journal.append({**started_event(), "run_id": run_id})
    journal.append(step_event("one", 0.1, 0.2))
    journal.close()
    assert store.load(run_id).status == "interrupted"
    assert [r.id for r in store.list()] == [run_id]
    assert list(store.entries()) == [], "reading wrote to the chain"
    assert store.unsealed() == [run_id]
    with pytest.raises(Exception, match="drctl records seal"):
        store.sealed(run_id)
    store.seal(run_id)
    assert [e.id for e in store.entries()] == [run_id]
    assert store.unsealed() == [] and store.sealed(run_id).record.status == "interrupted"
