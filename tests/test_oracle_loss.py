"""What an Oracle failover may have lost (``drills.engines.oracle.loss``): the parsing of the
standby's V$DATAGUARD_STATS on the published outputs of ``tests/fixtures/oracle/views/``, the
bound they give, the decision with the SCNs, and how the record merges and judges it.

On Oracle the count of lost transactions is not known (no LogMiner on the old primary's redo);
exact is the SCN at which the standby became primary; the window of possible loss is bounded by
the standby's transport lag plus the age of its last datum from the primary; the canary's lost
rows are a lower bound. ``rpo: 0s`` fails whenever that bound is above 0.
"""

from __future__ import annotations

from typing import Any

import pytest

from drills.engines.oracle import loss
from drills.model.playbook import Objective
from drills.model.record import CanaryResult, Measurements, evaluate_objectives, merge_measurements
from tests.oracle_standin import recorded

STATS = ["name", "value", "unit", "time_computed", "datum_time"]
COLUMNS_19C = ("time_computed", "datum_time", "con_id")


def stats_rows(name: str, columns: list[str], fill: dict[str, Any] | None = None) -> list[Any]:
    """A recorded output as the rows of loss's query (name, value, unit, time_computed,
    datum_time): what the output does not show is NULL, as the fixture's header says."""
    names, rows = recorded.scenario({"recorded": name, "columns": columns, "fill": fill or {}})
    return [tuple(dict(zip(names, row, strict=True)).get(c) for c in STATS) for row in rows]


def window(name: str, columns: list[str]) -> loss.Window:
    return loss.window_of(loss.parse_stats(stats_rows(name, columns)).get("transport lag"))


def test_the_19c_output_bounds_the_window_by_its_lag_and_datum_age() -> None:
    rows = stats_rows(
        "v_dataguard_stats_19c.txt",
        [*("source_dbid", "source_db_unique_name", "name", "value", "unit"), *COLUMNS_19C],
    )
    lags = loss.parse_stats(rows)
    transport = lags["transport lag"]
    assert (transport.value, transport.seconds) == ("+00 00:00:00", 0.0)
    assert (transport.time_computed, transport.datum_time) == (
        "06/03/2024 11:18:52",
        "06/03/2024 11:18:51",
    )
    assert transport.datum_age == 1.0
    found = loss.window_of(transport)
    assert (found.seconds, found.transport, found.datum_age) == (1.0, 0.0, 1.0)


def test_a_current_datum_and_no_lag_bound_the_window_at_zero() -> None:
    found = window(
        "v_dataguard_stats_datum_current_adg.txt",
        ["source_dbid", "name", "value", "time_computed", "datum_time"],
    )
    assert found.seconds == 0.0 and not found.why


@pytest.mark.parametrize(
    ("name", "why"),
    [
        # 11g outputs of a query without DATUM_TIME: whether the standby still heard from the
        # primary is not known, so a lag of 0 bounds nothing
        ("v_dataguard_stats_in_sync_11g.txt", "gave no DATUM_TIME"),
        ("v_dataguard_stats_apply_stopped_11g.txt", "gave no DATUM_TIME"),
        # waiting for a gap: the transport lag is NULL (not computed)
        ("v_dataguard_stats_wait_for_gap_11g.txt", "its transport lag was not computed (NULL)"),
    ],
)
def test_outputs_that_bound_nothing(name: str, why: str) -> None:
    found = window(name, ["name", "value", "unit", "time_computed"])
    assert found.seconds is None and why in found.why


def test_the_apply_lag_is_read_too() -> None:
    rows = stats_rows(
        "v_dataguard_stats_apply_stopped_11g.txt", ["name", "value", "unit", "time_computed"]
    )
    assert loss.parse_stats(rows)["apply lag"].seconds == 178.0  # +00 00:02:58


def test_the_old_primarys_redo_lines() -> None:
    text = (
        "drctl-redo 1 5012881 2026-12-01T23:40:11 0 MOUNTED PRIMARY\n"
        "drctl-redo 2 5012999 2026-12-01T23:40:12 0 MOUNTED PRIMARY\n"
    )
    redo = loss.parse_redo("SQL> \n" + text)
    assert redo is not None
    assert (redo.last_scn, redo.last_time, redo.threads) == (5012999, "2026-12-01T23:40:12", 2)
    assert redo.current_scn is None and redo.open_mode == "MOUNTED"
    opened = loss.parse_redo("drctl-redo 1 77 2026-12-01T23:40:11 80 READ_WRITE PRIMARY")
    assert opened is not None and (opened.current_scn, opened.open_mode) == (80, "READ WRITE")
    assert loss.parse_redo("ORA-01034: ORACLE not available") is None


def before(transport: str = "+00 00:00:03", datum: str = "06/03/2024 11:18:50") -> dict[str, Any]:
    lags = {
        "transport lag": loss.Lag(
            "transport lag", transport, 3.0 if transport else None, "06/03/2024 11:18:52", datum
        ).as_dict(),
        "apply lag": loss.Lag(
            "apply lag", "+00 00:00:09", 9.0, "06/03/2024 11:18:52", datum
        ).as_dict(),
    }
    return {"run_id": "r1", "node": "his-dr", "lags": lags, "applied_scn": 990}


def after(last: int | None = 1000, mode: str = "MOUNTED") -> loss.After:
    redo = loss.Redo(last, "2026-12-01T23:40:11", None, mode, "PRIMARY", 1) if last else None
    return loss.After("his-dr", "his-pri", became_scn=1001, redo=redo)


def test_the_decision_bounds_the_window_and_says_what_is_exact() -> None:
    decided = loss.decide(before(), after())
    lost = decided.lost
    assert lost.loss_accounting == "bound" and lost.engine == "oracle"
    assert (lost.rpo_seconds, lost.switch_scn, lost.count) == (5.0, 1001, None)  # 3s + 2s
    parts = lost.what_is_exact.split("; ")
    assert parts[0].startswith("exact: the SCN at which his-dr became primary, 1001")
    assert parts[1] == loss.NOT_COUNTED
    assert parts[2].startswith("a bound: the window of possible loss is at most 5s")
    assert parts[3] == loss.CANARY_LOWER
    assert "is not past the SCN 1001" in lost.note
    assert "the apply lag was 9s" in lost.note  # a complete failover applied it
    assert "at most 5s" in decided.sentence


@pytest.mark.parametrize(
    ("readings", "state", "why"),
    [
        (None, after(), "no oracle.record_lag_before_failover step ran"),
        (before(datum=""), after(), "gave no DATUM_TIME"),
        (before(transport=""), after(), "its transport lag was not computed"),
        (before(), after(mode="READ WRITE"), "was still open read write after the failover"),
    ],
)
def test_what_leaves_the_window_unbounded(
    readings: dict[str, Any] | None, state: loss.After, why: str
) -> None:
    lost = loss.decide(readings, state).lost
    assert lost.loss_accounting == "lower_bound" and lost.rpo_seconds is None
    assert why in lost.what_is_exact and "not bounded" in lost.what_is_exact


def test_redo_past_the_failover_scn_contradicts_a_bound_of_zero() -> None:
    zero = before(transport="+00 00:00:00", datum="06/03/2024 11:18:52")
    zero["lags"]["transport lag"]["seconds"] = 0.0
    assert loss.decide(zero, after(last=1000)).lost.loss_accounting == "bound"
    lost = loss.decide(zero, after(last=1005)).lost
    assert lost.loss_accounting == "lower_bound"
    assert "although the transport lag showed no window" in lost.what_is_exact
    # with a window above 0, the same redo is what the window allows: said, still a bound
    bounded = loss.decide(before(), after(last=1005)).lost
    assert bounded.loss_accounting == "bound" and "changes were lost" in bounded.note


def canary(lost: int, rpo: float | None) -> CanaryResult:
    return CanaryResult(written=50, acknowledged=50, lost=lost, rpo_seconds=rpo)


def merged(window_after: int, canary_: CanaryResult | None) -> Measurements:
    zero = window_after == 0
    readings = before(transport="+00 00:00:00", datum="06/03/2024 11:18:52") if zero else before()
    if zero:
        readings["lags"]["transport lag"]["seconds"] = 0.0
    found = loss.decide(readings, after()).lost
    return merge_measurements(
        Measurements(canary=canary_), [{"lost_transactions": found.model_dump()}]
    )


def rpo(target: float, measurements: Measurements) -> Any:
    return evaluate_objectives({"rpo": Objective(target=target, measure="rpo")}, [], measurements)[
        0
    ]


def test_rpo_0_holds_on_a_bound_of_zero_and_fails_on_any_window() -> None:
    zero = merged(0, canary(0, 0.0))
    assert zero.lost_transactions is not None
    assert zero.lost_transactions.loss_accounting == "bound"
    assert (zero.rpo_seconds, zero.lost_writes) == (0.0, 0)
    assert rpo(0, zero).met
    some = merged(5, canary(2, 0.4))
    assert some.lost_transactions is not None
    assert some.lost_transactions.loss_accounting == "bound"
    assert (some.rpo_seconds, some.lost_writes, some.lost_transactions.count) == (5.0, 2, 2)
    assert "at least 2 writes lost" in some.lost_transactions.note
    missed = rpo(0, some)
    assert not missed.met and missed.measured_seconds == 5.0
    assert "a loss within 0s cannot be shown" in missed.note
    assert missed.basis.startswith("measured: rpo (a bound: at most 5s")
    assert rpo(30, some).met  # an upper bound under the target shows it met
    # no canary: the bound alone, the count unknown
    alone = merged(5, None)
    assert alone.lost_transactions is not None and alone.lost_transactions.count is None
    assert not rpo(0, alone).met and rpo(30, alone).met


def test_a_canary_the_bound_rules_out_makes_it_a_lower_bound() -> None:
    contradicted = merged(0, canary(1, 0.2))
    lost = contradicted.lost_transactions
    assert lost is not None and lost.loss_accounting == "lower_bound"
    assert "that bound is not trusted" in lost.note
    assert (contradicted.lost_writes, contradicted.rpo_seconds) == (1, 0.2)
    result = rpo(30, contradicted)
    assert not result.met and "could not be bounded" in result.note
    longer = merged(5, canary(3, 7.5)).lost_transactions  # 7.5s lost > 5s + 1s of resolution
    assert longer is not None and longer.loss_accounting == "lower_bound"


def test_the_report_says_it_in_both_languages() -> None:
    import yaml

    from drills.model.record import Record
    from drills.reports.phrases import Said
    from drills.reports.site import PACKAGE
    from drills.reports.view import ReportInput, build_view

    measurements = merged(5, canary(2, 0.4))
    record = Record.model_validate(
        {
            "id": "20261201T234000Z-oracle-dg-failover-his-oracle-0000",
            "status": "failed",
            "reason": "objectives missed: rpo",
            "mode": "drill",
            "playbook": {"name": "oracle-dg-failover", "version": 1, "kind": "failover"},
            "environment": {"name": "his-oracle", "nodes": {}},
            "started_at": "2026-12-01T23:40:00.000Z",
            "ended_at": "2026-12-01T23:40:20.000Z",
            "duration_seconds": 20.0,
            "measurements": measurements.model_dump(),
            "objectives": [o.model_dump() for o in [rpo(0, measurements)]],
        }
    )
    words = yaml.safe_load((PACKAGE / "messages.yaml").read_text())

    def unknown(value: Any) -> list[str]:
        if isinstance(value, Said):
            return list(value.unknown)
        if isinstance(value, dict):
            return [u for v in value.values() for u in unknown(v)]
        if isinstance(value, list | tuple):
            return [u for v in value for u in unknown(v)]
        return []

    for lang in ("zh", "en"):
        doc = build_view(ReportInput(record, None, []), lang, {}, words[lang])
        section = doc["lost_transactions"]
        if lang == "zh":
            assert "丢失的事务数无法得知" in str(section["text"])
            assert "精确：his-dr 成为主库时的 SCN 为 1001" in str(section["exactness"])
            assert "上限：可能丢失的时间窗口不超过 5s" in str(section["exactness"])
            assert "RPO（上限）" in section["rpo"]
            said = [section, [[o["basis"], o["note"]] for o in doc["objectives"]]]
            assert not unknown(said), unknown(said)
        else:
            assert "the window of possible loss is at most" in str(section["text"])
            assert "What is exact and what is not" in str(section["exactness"])
