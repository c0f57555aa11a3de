"""The Oracle engine against the stand-in (``tests.oracle_standin``): every check, held and
deviated, on the recorded outputs; role discovery and the split-brain refusal through the
runner; the canary writer following the primary through a switchover and counting what a lagging
failover lost; a planted password that never reaches a journal, record or report.

At the end, docker-marked tests run the queries, the inspection checks and the canary on Oracle
Database Free; they skip where no Docker engine answers.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.engine.catalogue import ActionResult, ActionSpec, Catalogue, Params, build_catalogue
from drills.engine.checking import run_check
from drills.engine.loader import load_environment_file, load_playbook
from drills.engine.measures import analyse_canary
from drills.engine.roles import discover_roles
from drills.engine.runner import Runner
from drills.engine.targets import Targets
from drills.engines.oracle.canary import OracleInstruments, writer_descriptor
from drills.engines.oracle.checks import oracle_checks
from drills.model.clock import Clock
from drills.model.environment import Environment
from drills.model.errors import AuthenticationFailed, ConnectionFailed, InputError
from drills.model.request import RunRequest
from drills.records.store import RecordStore
from tests.oracle_standin.connector import StandinConnector
from tests.oracle_standin.state import StandinError, StandinState
from verify import oracle
from verify.oracle_dataguard import interval_seconds

REPO = Path(__file__).resolve().parents[1]
HIS_ORACLE = REPO / "playbooks" / "environments" / "his-oracle.yaml"
PASSWORD = "Standin-Pw-7731"
ROLES = {"primary": "his-pri", "standby": "his-dr"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Environment:
    monkeypatch.setenv("HIS_ORACLE_PASSWORD", PASSWORD)
    return load_environment_file(HIS_ORACLE)


NODES = {"his-pri": "his_pri", "his-dr": "his_dr", "his-old": "hisrpt", "his-new": "hisnew"}
MIGRATION = ("his-old", "his-new")  # databases of their own: a migration's source and target


@pytest.fixture
def state(tmp_path: Path) -> StandinState:
    return StandinState.create(
        tmp_path / "oracle.json", NODES, primary="his-pri", password=PASSWORD, standalone=MIGRATION
    )


@pytest.fixture
def catalogue() -> Catalogue:
    return build_catalogue()


@pytest.fixture
def targets(env: Environment, state: StandinState) -> Iterator[Targets]:
    found = Targets(env, dict(ROLES), StandinConnector(state, env))
    yield found
    found.close()


# -- every check, held and deviated --------------------------------------------------------------

Setup = Callable[[StandinState], None]


def use(node: str, view: str, scenario: str) -> Setup:
    return lambda s: s.use(node, view, scenario)


def both(*setups: Setup) -> Setup:
    def run(s: StandinState) -> None:
        for setup in setups:
            setup(s)

    return run


P, S = "primary", "standby"
CASES: list[tuple[str, str, dict[str, Any], Setup | None, str, str]] = [
    # role and readiness
    ("oracle.is_primary", P, {}, None, "held", "PRIMARY, READ WRITE"),
    ("oracle.is_primary", S, {}, None, "deviated", "PHYSICAL STANDBY, MOUNTED"),
    ("oracle.is_standby", S, {}, None, "held", "PHYSICAL STANDBY"),
    ("oracle.is_standby", P, {}, None, "deviated", "PRIMARY"),
    (
        "oracle.database_role",
        S,
        {"database_role": "PHYSICAL STANDBY", "open_modes": ["mounted"]},
        None,
        "held",
        "PHYSICAL STANDBY, MOUNTED",
    ),
    (
        "oracle.database_role",
        S,
        {"database_role": "PHYSICAL STANDBY", "open_modes": ["READ ONLY WITH APPLY"]},
        None,
        "deviated",
        "MOUNTED",
    ),
    ("oracle.switchover_status", P, {}, None, "held", "TO STANDBY"),
    ("oracle.switchover_status", S, {}, None, "held", "TO PRIMARY"),
    (
        "oracle.switchover_status",
        S,
        {},
        lambda s: s.set_apply("his-dr", False),
        "deviated",
        "RECOVERY NEEDED",
    ),
    (
        "oracle.switchover_status",
        S,
        {},
        use("his-dr", "v$database", "standby_recovery_needed_11g"),
        "deviated",
        "RECOVERY NEEDED",
    ),
    (
        "oracle.switchover_status",
        P,
        {},
        use("his-pri", "v$database", "primary_switchover_19c"),
        "held",
        "TO STANDBY",
    ),
    (
        "oracle.switchover_status",
        S,
        {},
        use("his-dr", "v$database", "standby_switchover_19c"),
        "held",
        "TO PRIMARY",
    ),
    (
        "oracle.protection",
        P,
        {"mode": "MAXIMUM AVAILABILITY"},
        None,
        "held",
        "level MAXIMUM AVAILABILITY",
    ),
    (
        "oracle.protection",
        P,
        {},
        use("his-pri", "v$database", "resynchronization_11g"),
        "deviated",
        "level RESYNCHRONIZATION",
    ),
    (
        "oracle.protection",
        P,
        {"mode": "MAXIMUM AVAILABILITY", "level_matches": False},
        use("his-pri", "v$database", "primary_19c"),
        "deviated",
        "mode MAXIMUM PERFORMANCE",
    ),
    ("oracle.flashback_on", S, {}, None, "held", "YES"),
    (
        "oracle.flashback_on",
        S,
        {},
        use("his-dr", "v$database", "standby_adg_19c"),
        "deviated",
        "NO",
    ),
    ("oracle.flashback_on", P, {}, use("his-pri", "v$database", "primary_19c"), "deviated", "NO"),
    (
        "oracle.flashback_on",
        P,
        {"accept_restore_point_only": True},
        lambda s: s.set("his-pri", flashback_on="RESTORE POINT ONLY"),
        "held",
        "RESTORE POINT ONLY",
    ),
    ("oracle.force_logging", P, {}, None, "held", "YES"),
    (
        "oracle.force_logging",
        P,
        {},
        use("his-pri", "v$database", "force_logging_off_19c"),
        "deviated",
        "NO",
    ),
    (
        "oracle.force_logging",
        P,
        {},
        use("his-pri", "v$database", "primary_switchover_19c"),
        "held",
        "YES",
    ),
    ("oracle.rejects_writes", S, {}, None, "held", "PHYSICAL STANDBY"),
    ("oracle.rejects_writes", P, {}, None, "deviated", "PRIMARY, READ WRITE"),
    ("oracle.rejects_writes", P, {}, lambda s: s.abort("his-pri"), "held", "ORA-12514"),
    ("oracle.takes_writes", P, {}, None, "held", "heartbeat of his-pri committed"),
    # Data Guard: lag, gaps, apply
    ("oracle.transport_lag", S, {}, None, "held", "transport lag +00 00:00:00"),
    (
        "oracle.transport_lag",
        S,
        {"max": "30s"},
        lambda s: s.set_lag("his-dr", transport=45),
        "deviated",
        "transport lag +00 00:00:45",
    ),
    ("oracle.transport_lag", P, {}, None, "deviated", "a primary?"),
    ("oracle.apply_lag", S, {}, None, "held", "apply lag +00 00:00:00"),
    (
        "oracle.apply_lag",
        S,
        {},
        use("his-dr", "v$dataguard_stats", "upper_names"),
        "held",
        "+00 00:00:03",
    ),
    (
        "oracle.apply_lag",
        S,
        {"max": "1h"},
        use("his-dr", "v$dataguard_stats", "delayed_apply_10g"),
        "deviated",
        "apply lag +00 08:03:01",
    ),
    (
        "oracle.apply_lag",
        S,
        {},
        use("his-dr", "v$dataguard_stats", "apply_stopped_11g"),
        "deviated",
        "apply lag +00 00:02:58",
    ),
    (
        "oracle.apply_lag",
        S,
        {},
        use("his-dr", "v$dataguard_stats", "wait_for_gap_11g"),
        "deviated",
        "apply lag +01 17:17:09",
    ),
    (
        "oracle.transport_lag",
        S,
        {},
        use("his-dr", "v$dataguard_stats", "wait_for_gap_11g"),
        "deviated",
        "transport lag not computed (NULL)",
    ),
    (
        "oracle.transport_lag",
        S,
        {},
        use("his-dr", "v$dataguard_stats", "in_sync_11g"),
        "held",
        "transport lag +00 00:00:00",
    ),
    (
        "oracle.apply_lag",
        S,
        {"max_datum_age": "60s"},
        use("his-dr", "v$dataguard_stats", "stale_datum"),
        "deviated",
        "hears nothing new",
    ),
    ("oracle.apply_lag", S, {"max_datum_age": "60s"}, None, "held", "apply lag"),
    ("oracle.archive_gap", S, {}, None, "held", "no gap"),
    (
        "oracle.archive_gap",
        S,
        {},
        lambda s: s.set_gap("his-dr", 1186, 1189),
        "deviated",
        "thread 1 1186-1189",
    ),
    ("oracle.archive_gap", S, {}, use("his-dr", "v$archive_gap", "gap"), "deviated", "1 5199-5231"),
    (
        "oracle.apply_running",
        S,
        {},
        None,
        "held",
        "MRP0 IDLE (thread 0, sequence 0) in v$dataguard_process",
    ),
    (
        "oracle.apply_running",
        S,
        {},
        lambda s: s.set_apply("his-dr", False),
        "deviated",
        "Redo Apply is off",
    ),
    (
        "oracle.apply_running",
        S,
        {},
        use("his-dr", "v$dataguard_process", "wait_for_gap"),
        "deviated",
        "MRP0 WAIT_FOR_GAP",
    ),
    (
        "oracle.apply_running",
        S,
        {},
        lambda s: s.set("his-dr", release="11.2"),
        "held",
        "MRP0 APPLYING_LOG (thread 1, sequence 18) in v$managed_standby",
    ),
    (
        "oracle.apply_running",
        S,
        {},
        both(
            lambda s: s.set("his-dr", release="11.2"),
            use("his-dr", "v$managed_standby", "wait_for_gap_11g"),
        ),
        "deviated",
        "MRP0 WAIT_FOR_GAP (thread 1, sequence 2542) in v$managed_standby",
    ),
    # backups and corruption
    ("oracle.rman_backup", P, {}, None, "held", "DB INCR COMPLETED at 2024-06-14 01:42:19"),
    (
        "oracle.rman_backup",
        P,
        {},
        use("his-pri", "v$rman_backup_job_details", "failed_since"),
        "deviated",
        "1 failed since",
    ),
    (
        "oracle.rman_backup",
        P,
        {},
        use("his-pri", "v$rman_backup_job_details", "stale"),
        "deviated",
        "DB FULL COMPLETED at 2024-06-09 03:11:05",
    ),
    (
        "oracle.rman_backup",
        P,
        {},
        use("his-pri", "v$rman_backup_job_details", "warnings"),
        "deviated",
        "no good DB FULL/DB INCR job",
    ),
    (
        "oracle.rman_backup",
        P,
        {"accept_warnings": True},
        use("his-pri", "v$rman_backup_job_details", "warnings"),
        "held",
        "COMPLETED WITH WARNINGS",
    ),
    (
        "oracle.rman_backup",
        P,
        {"input_types": ["ARCHIVELOG"], "max_age": "2h"},
        None,
        "held",
        "ARCHIVELOG COMPLETED",
    ),
    (
        "oracle.rman_backup",
        P,
        {},
        use("his-pri", "v$rman_backup_job_details", "livelabs_21c"),
        "held",
        "DB FULL COMPLETED at 16-DEC-21",
    ),
    ("oracle.block_corruption", P, {}, None, "held", "none"),
    (
        "oracle.block_corruption",
        P,
        {},
        use("his-pri", "v$database_block_corruption", "corrupt"),
        "deviated",
        "9 corrupt block(s): file 7 block 1234 (CHECKSUM)",
    ),
    (
        "oracle.block_corruption",
        P,
        {},
        use("his-pri", "v$database_block_corruption", "corrupt_11g"),
        "deviated",
        "1 corrupt block(s): file 41 block 131 (CORRUPT)",
    ),
    # inspection: space and archiving
    ("oracle.tablespace_usage", P, {}, None, "held", "fullest SYSTEM 3.6%"),
    (
        "oracle.tablespace_usage",
        P,
        {},
        use("his-pri", "dba_tablespace_usage_metrics", "full"),
        "deviated",
        "HIS_DATA 91.3%, TEMP 95.2%",
    ),
    (
        "oracle.tablespace_usage",
        P,
        {"exclude": ["his_data"], "max_temp_used_percent": 96},
        use("his-pri", "dba_tablespace_usage_metrics", "full"),
        "held",
        "fullest TEMP 95.2%",
    ),
    ("oracle.tablespace_usage", S, {}, None, "deviated", "only mounted"),
    ("oracle.tablespace_usage", S, {"view_missing_holds": True}, None, "held", "ORA-01219"),
    (
        "oracle.recovery_area",
        P,
        {},
        None,
        "held",
        "+FRA: 1.2 GiB of 2.0 GiB (61.3% not reclaimable)",
    ),
    (
        "oracle.recovery_area",
        P,
        {},
        use("his-pri", "v$recovery_file_dest", "full"),
        "deviated",
        "(94% not reclaimable)",
    ),
    (
        "oracle.recovery_area",
        P,
        {},
        use("his-pri", "v$recovery_file_dest", "none"),
        "deviated",
        "not set",
    ),
    (
        "oracle.recovery_area",
        P,
        {"required": False},
        use("his-pri", "v$recovery_file_dest", "none"),
        "held",
        "not set",
    ),
    ("oracle.archive_destinations", P, {}, None, "held", "1 destination(s) VALID"),
    (
        "oracle.archive_destinations",
        P,
        {},
        use("his-pri", "v$archive_dest_status", "error"),
        "deviated",
        "LOG_ARCHIVE_DEST_2 ERROR ORA-16191: Primary log shipping client not logged on standby",
    ),
    (
        "oracle.archive_destinations",
        P,
        {},
        use("his-pri", "v$archive_dest_status", "error_illustrative"),
        "deviated",
        "LOG_ARCHIVE_DEST_2 ERROR ORA-12514",
    ),
    (
        "oracle.asm_diskgroups",
        P,
        {},
        None,
        "held",
        "DATA CONNECTED 10.3%, FRA CONNECTED 10.9%, OCR MOUNTED 1.7%",
    ),
    (
        "oracle.asm_diskgroups",
        P,
        {},
        use("his-pri", "v$asm_diskgroup", "asm_instance_11g"),
        "held",
        "ARCH MOUNTED 18.9%, CRS MOUNTED 30.1%, DATA MOUNTED 49.8%",
    ),
    (
        "oracle.asm_diskgroups",
        P,
        {"max_used_percent": 40},
        use("his-pri", "v$asm_diskgroup", "asm_instance_11g"),
        "deviated",
        "DATA MOUNTED 49.8%",
    ),
    (
        "oracle.asm_diskgroups",
        P,
        {},
        use("his-pri", "v$asm_diskgroup", "none"),
        "held",
        "not use ASM",
    ),
    (
        "oracle.asm_diskgroups",
        P,
        {},
        use("his-pri", "v$asm_diskgroup", "offline"),
        "deviated",
        "DATA CONNECTED 95% 1 offline",
    ),
    # inspection: the alert log, objects, jobs
    ("oracle.alert_log_errors", P, {}, None, "held", "no ORA- error"),
    (
        "oracle.alert_log_errors",
        P,
        {},
        use("his-pri", "v$diag_alert_ext", "errors"),
        "deviated",
        "5 error message(s): ORA-19815 x1, ORA-00210 x1, ORA-00202 x1, ORA-17503 x1, ORA-15012 x1",
    ),
    (
        "oracle.alert_log_errors",
        P,
        {"ignore": ["ORA-19815"], "max_errors": 4},
        use("his-pri", "v$diag_alert_ext", "errors"),
        "held",
        "4 error message(s)",
    ),
    (
        "oracle.alert_log_errors",
        P,
        {},
        use("his-pri", "v$diag_alert_ext", "errors_illustrative"),
        "deviated",
        "3 error message(s): ORA-01555 x1, ORA-00060 x1, ORA-19504 x1, ORA-17502 x1",
    ),
    (
        "oracle.alert_log_errors",
        P,
        {},
        lambda s: s.set("his-pri", release="12.1"),
        "deviated",
        "not in this release",
    ),
    (
        "oracle.alert_log_errors",
        P,
        {"view_missing_holds": True},
        lambda s: s.set("his-pri", release="12.1"),
        "held",
        "ORA-00942",
    ),
    ("oracle.invalid_objects", P, {}, None, "held", "no invalid object"),
    (
        "oracle.invalid_objects",
        P,
        {},
        use("his-pri", "dba_objects", "invalid"),
        "deviated",
        "4 invalid: HIS PACKAGE BODY x3, HIS VIEW x1",
    ),
    ("oracle.invalid_objects", P, {"schemas": ["sys"]}, None, "deviated", "SYS PACKAGE BODY x1"),
    ("oracle.failed_jobs", P, {}, None, "held", "no failed run"),
    (
        "oracle.failed_jobs",
        P,
        {},
        use("his-pri", "dba_scheduler_job_run_details", "failed"),
        "deviated",
        "1 failed: HIS.NIGHTLY_STATS ORA-20001",
    ),
    # inspection: the instance's activity
    ("oracle.resource_limits", P, {}, None, "held", "processes 77/400, sessions 80/445"),
    (
        "oracle.resource_limits",
        P,
        {},
        use("his-pri", "v$resource_limit", "near_limit"),
        "deviated",
        "processes 247/250, sessions 250/280",
    ),
    (
        "oracle.resource_limits",
        P,
        {},
        use("his-pri", "v$resource_limit", "small_instance"),
        "held",
        "sessions 39/170",
    ),
    ("oracle.long_running_sql", P, {}, None, "held", "no long call"),
    (
        "oracle.long_running_sql",
        P,
        {"max": "5m"},
        use("his-pri", "v$session", "long_and_blocked"),
        "deviated",
        "2 long call(s): sid 23 (HIS_APP, 7b2twsn8vgfsc, ",
    ),
    ("oracle.blocking_sessions", P, {}, None, "held", "no blocked session"),
    (
        "oracle.blocking_sessions",
        P,
        {},
        use("his-pri", "v$session", "long_and_blocked"),
        "deviated",
        "1 blocked: sid 88 by 23 (",
    ),
    (
        "oracle.blocking_sessions",
        P,
        {},
        use("his-pri", "v$session", "blocked_rac_19c"),
        "deviated",
        "1 blocked: sid 310 by 297 (",
    ),
    (
        "oracle.blocking_sessions",
        P,
        {"max_wait": "5m"},
        use("his-pri", "v$session", "blocked_rac_19c"),
        "held",
        "no blocked session",
    ),
    ("oracle.redo_switch_rate", P, {}, None, "held", "4 switches"),
    (
        "oracle.redo_switch_rate",
        P,
        {},
        use("his-pri", "v$log_history", "busy"),
        "deviated",
        "busiest hour 2024-06-14 02:00: 38 switches",
    ),
    ("oracle.expiring_accounts", P, {}, None, "held", "none"),
    (
        "oracle.expiring_accounts",
        P,
        {},
        use("his-pri", "dba_users", "expiring"),
        "deviated",
        "2 expiring: HIS_APP 2024-06-17 (EXPIRED(GRACE)), HIS_REPORTS 2024-06-23 (OPEN)",
    ),
]


@pytest.mark.parametrize(
    ("check", "role", "params", "setup", "verdict", "says"),
    CASES,
    ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)],
)
def test_each_check_on_the_recorded_outputs(
    targets: Targets,
    state: StandinState,
    catalogue: Catalogue,
    check: str,
    role: str,
    params: dict[str, Any],
    setup: Setup | None,
    verdict: str,
    says: str,
) -> None:
    if setup is not None:
        setup(state)
    result = run_check(check, role, params, targets, Clock(), catalogue)
    assert result.verdict == verdict, result
    assert says in result.detail, result
    assert result.node == ROLES[role]


def test_every_oracle_check_has_a_case_held_and_a_case_deviated(catalogue: Catalogue) -> None:
    names = {name for name, _, _ in oracle_checks()}  # the SQL checks (not the tools')
    assert names <= set(catalogue.checks)
    held = {c[0] for c in CASES if c[4] == "held"}
    deviated = {c[0] for c in CASES if c[4] == "deviated"}
    assert names - {"oracle.takes_writes"} <= held & deviated, names - (held & deviated)
    assert "oracle.takes_writes" in held


def test_a_write_on_the_standby_is_refused_by_the_database(
    targets: Targets, catalogue: Catalogue
) -> None:
    result = run_check("oracle.takes_writes", "standby", {}, targets, Clock(), catalogue)
    assert result.verdict == "deviated" and result.observed == "write failed"
    assert "ORA-01033" in result.detail or "ORA-16000" in result.detail


def test_the_heartbeat_table_is_made_once_and_replicated(
    targets: Targets, state: StandinState, catalogue: Catalogue
) -> None:
    for _ in range(2):
        assert run_check("oracle.takes_writes", "primary", {}, targets, Clock(), catalogue).held
    assert [r["node"] for r in state.rows("his-pri", "drctl_heartbeat")] == ["his-pri"]
    assert [r["node"] for r in state.rows("his-dr", "drctl_heartbeat")] == ["his-pri"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("+00 00:00:03", 3.0),
        ("+00 08:03:01", 8 * 3600 + 181.0),
        ("+01 00:00:00", 86400.0),
        ("+00 00:00:04.7", 4.7),
        ("  +00 00:01:00 ", 60.0),
        ("10", 10.0),
        (None, None),
        ("", None),
        ("soon", None),
    ],
)
def test_dataguard_stats_values_are_read_as_seconds(value: Any, seconds: float | None) -> None:
    assert interval_seconds(value) == seconds


def test_check_parameters_are_typed(catalogue: Catalogue) -> None:
    spec = catalogue.check("oracle.apply_lag")
    with pytest.raises(ValueError, match="max_lag"):
        spec.params.model_validate({"max_lag": "5s"})
    with pytest.raises(ValueError, match="duration"):
        spec.params.model_validate({"max": "soon"})


# -- roles ---------------------------------------------------------------------------------------


def observed(targets: Targets) -> dict[str, str]:
    by_name = targets.view({n: n for n in ("his-pri", "his-dr")})
    found = {}
    for name in ("his-pri", "his-dr"):
        try:
            found[name] = oracle.server_role(by_name, name)
        except ConnectionFailed:
            found[name] = "unreachable"
    return found


def test_the_role_observer_follows_the_state(targets: Targets, state: StandinState) -> None:
    assert observed(targets) == {"his-pri": "primary", "his-dr": "standby"}
    state.switchover("his-dr")
    assert observed(targets) == {"his-pri": "standby", "his-dr": "primary"}
    state.abort("his-dr")
    assert observed(targets) == {"his-pri": "standby", "his-dr": "unreachable"}
    state.failover("his-pri")
    state.startup("his-dr")  # still PRIMARY, mounted: it may not open until reinstated
    assert state.node("his-dr")["database_role"] == "PRIMARY"
    assert state.status("his-dr") == "needs reinstate"
    assert observed(targets) == {"his-pri": "primary", "his-dr": "down"}
    state.reinstate("his-dr")
    assert observed(targets) == {"his-pri": "primary", "his-dr": "standby"}
    state.convert_to_snapshot("his-dr")  # open read write, but not a primary
    assert observed(targets) == {"his-pri": "primary", "his-dr": "standby"}


def test_roles_are_discovered_and_a_down_node_takes_the_unclaimed_role(
    targets: Targets, state: StandinState, catalogue: Catalogue
) -> None:
    state.switchover("his-dr")
    assert discover_roles(targets, ["primary", "standby"], catalogue).roles == {
        "primary": "his-dr",
        "standby": "his-pri",
    }
    state.abort("his-pri")
    found = discover_roles(targets, ["primary", "standby"], catalogue)
    assert found.roles == {"primary": "his-dr", "standby": "his-pri"}
    assert found.observed["his-pri"] == "down"


def test_transitions_oracle_would_refuse_are_refused(state: StandinState) -> None:
    with pytest.raises(StandinError, match="ORA-16500"):
        state.switchover("his-pri")
    state.set_apply("his-dr", False)
    with pytest.raises(StandinError, match="ORA-16467"):
        state.switchover("his-dr")
    with pytest.raises(StandinError, match="ORA-16653"):
        state.reinstate("his-dr")
    state.abort("his-dr")
    with pytest.raises(StandinError, match="ORA-16625"):
        state.failover("his-dr")


# -- through the runner ----------------------------------------------------------------------


def playbook(tmp_path: Path, steps: list[dict[str, Any]], **extra: Any) -> Path:
    body = {
        "name": "ora-drill",
        "version": 1,
        "kind": "switchover",
        "title": {"en": "Oracle drill", "zh": "Oracle 演练"},
        "roles": ["primary", "standby"],
        "engines": ["oracle"],
        "steps": steps,
        **extra,
    }
    path = tmp_path / "ora-drill.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return path


def run(
    tmp_path: Path,
    env: Environment,
    connector: StandinConnector,
    catalogue: Catalogue,
    steps: list[dict[str, Any]],
    **extra: Any,
) -> Any:
    loaded = load_playbook(playbook(tmp_path, steps, **extra), catalogue)
    store = RecordStore(tmp_path / "records", tmp_path / "locks")
    record = Runner(
        RunRequest(playbook="ora-drill", environment=env.name),
        loaded=loaded,
        env=env,
        catalogue=catalogue,
        connector=connector,
        store=store,
    ).run()
    return record, store


LOOK = {
    "id": "look",
    "action": "observe",
    "target": "primary",
    "verify": [
        {"check": "oracle.is_primary"},
        {"check": "oracle.apply_running", "target": "standby"},
    ],
    "within": "2s",
}


def test_the_runner_discovers_oracle_roles_and_runs_the_checks(
    tmp_path: Path, env: Environment, state: StandinState, catalogue: Catalogue
) -> None:
    state.switchover("his-dr")
    record, _ = run(tmp_path, env, StandinConnector(state, env), catalogue, [LOOK])
    assert record.status == "passed", record.reason
    assert record.roles == {"primary": "his-dr", "standby": "his-pri"}
    assert [c.node for c in record.steps[0].checks] == ["his-dr", "his-pri"]


def test_two_oracle_primaries_are_a_split_brain_and_nothing_runs(
    tmp_path: Path, env: Environment, state: StandinState, catalogue: Catalogue
) -> None:
    state.failover("his-dr")  # the old primary was never fenced: it is still open read write
    connector = StandinConnector(state, env)
    step = {
        "id": "write",
        "action": "oracle.sql",
        "target": "primary",
        "with": {"statement": "ALTER SYSTEM ARCHIVE LOG CURRENT"},
    }
    record, _ = run(tmp_path, env, connector, catalogue, [step])
    assert record.status == "aborted"
    assert "his-pri, his-dr all accept writes: split brain" in record.reason
    ran = [s for _, s in connector.database.statements]
    assert ran and all(s.startswith("SELECT database_role, open_mode FROM v$database") for s in ran)


def test_a_playbook_for_postgres_is_refused_before_anything_runs(
    tmp_path: Path, env: Environment, state: StandinState, catalogue: Catalogue
) -> None:
    connector = StandinConnector(state, env)
    with pytest.raises(InputError, match="supports engine postgres"):
        run(tmp_path, env, connector, catalogue, [LOOK], engines=["postgres"])
    assert connector.database.statements == []


def test_a_planted_password_never_reaches_the_journal_record_or_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: StandinState, catalogue: Catalogue
) -> None:
    from drills.reports import render_report

    planted = "Planted-0racle-Pw!93"
    # A variable whose name says nothing of secrets: only the oracle section names it.
    monkeypatch.setenv("HIS_ORA_LOGIN", planted)
    env = load_environment_file(HIS_ORACLE)
    data = env.model_dump()
    for name in NODES:
        data["nodes"][name]["oracle"]["password_env"] = "HIS_ORA_LOGIN"
    env = Environment.model_validate(data)
    planted_state = StandinState.create(
        tmp_path / "planted.json", NODES, primary="his-pri", password=planted, standalone=MIGRATION
    )
    # The database itself prints it: an alert-log line quoting a database link's credentials.
    planted_state.answer(
        "his-pri",
        "v$diag_alert_ext",
        ["at", "message_text"],
        [["2024-06-14 02:03:44 +08:00", f"ORA-12154 on link HIS_DR: c##drctl/{planted}@his_dr"]],
    )
    steps = [
        LOOK,
        {
            "id": "read_alert_log",
            "action": "oracle.sql",
            "target": "primary",
            "with": {"statement": "SELECT at, message_text FROM v$diag_alert_ext"},
            "verify": [{"check": "oracle.alert_log_errors"}],
            "within": "50ms",
            "on_failure": "continue",
        },
    ]
    record, store = run(tmp_path, env, StandinConnector(planted_state, env), catalogue, steps)
    assert record.status == "failed", record.reason  # the alert log had an error
    journal = store.journal_path(record.id).read_text()
    sealed = store.sealed(record.id)
    stored = sealed.record.model_dump_json()
    reports = [render_report(sealed, fmt=fmt).decode() for fmt in ("md", "html")]
    for text in (journal, stored, *reports):
        assert planted not in text
    assert "[REDACTED]" in journal and "[REDACTED]" in stored  # it was there, and masked
    step = next(s for s in record.steps if s.id == "read_alert_log")
    assert "c##drctl/[REDACTED]@his_dr" in step.output


# -- the canary writer and the write probe ----------------------------------------------------


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_writer_descriptor_lists_every_node_and_the_primary_service(env: Environment) -> None:
    descriptor = writer_descriptor(env, ["his-pri", "his-dr"])
    assert "(ADDRESS=(PROTOCOL=TCP)(HOST=127.0.0.2)(PORT=1521))" in descriptor
    assert "(ADDRESS=(PROTOCOL=TCP)(HOST=127.0.0.3)(PORT=1521))" in descriptor
    assert "(FAILOVER=ON)" in descriptor and "(SERVICE_NAME=his_rw)" in descriptor
    data = env.model_dump()
    data["nodes"]["his-dr"]["oracle"]["primary_service"] = None
    data["nodes"]["his-pri"]["oracle"]["primary_service"] = None
    with pytest.raises(InputError, match="primary_service"):
        writer_descriptor(Environment.model_validate(data), ["his-pri", "his-dr"])


def test_the_canary_follows_the_primary_through_a_switchover_and_loses_nothing(
    env: Environment, state: StandinState
) -> None:
    instruments = OracleInstruments(connect=StandinConnector(state, env).connect)
    nodes = ["his-pri", "his-dr"]
    instruments.prepare(env, nodes)
    assert state.rows("his-dr", "drctl_canary") == []  # made on the primary, carried over
    writer = instruments.canary(env, nodes, "run-1", Clock(), 0.005)
    writer.start()
    try:
        wait_for(lambda: len(writer.log.acks) >= 5)
        state.switchover("his-dr")
        wait_for(lambda: any(w.node == "his-dr" for w in writer.log.acks))
    finally:
        writer.stop()
    nodes_seen = [w.node for w in writer.log.acks]
    assert nodes_seen[0] == "his-pri" and nodes_seen[-1] == "his-dr" and "?" not in nodes_seen
    present, checked_on = instruments.surviving(env, nodes, "run-1")
    assert checked_on == "his-dr"
    result = analyse_canary(writer.log, present, checked_on)
    assert result.lost == 0 and result.rpo_seconds == 0.0


def test_a_failover_with_transport_lag_loses_the_writes_the_standby_never_received(
    env: Environment, state: StandinState
) -> None:
    instruments = OracleInstruments(connect=StandinConnector(state, env).connect)
    nodes = ["his-pri", "his-dr"]
    instruments.prepare(env, nodes)
    writer = instruments.canary(env, nodes, "run-2", Clock(), 0.005)
    probe = instruments.write_probe(env, nodes, "run-2", Clock(), 0.005)
    writer.start()
    probe.start()
    try:
        wait_for(lambda: len(writer.log.acks) >= 5)
        state.set_lag("his-dr", transport=5)  # the network to site B falls behind
        before = len(writer.log.acks)
        wait_for(lambda: len(writer.log.acks) >= before + 5)
        state.abort("his-pri")
        state.failover("his-dr")
        wait_for(lambda: any(w.node == "his-dr" for w in writer.log.acks))
    finally:
        writer.stop()
        probe.stop()
    present, checked_on = instruments.surviving(env, nodes, "run-2")
    result = analyse_canary(writer.log, present, checked_on)
    assert checked_on == "his-dr" and result.lost >= 5 and result.rpo_seconds
    assert all(seq not in present for seq in result.lost_seqs)
    assert probe.log.failures >= 1 and {w.node for w in probe.log.acks} == {"his-pri", "his-dr"}


def test_a_canary_through_the_runner_measures_a_switchover(
    tmp_path: Path, env: Environment, state: StandinState
) -> None:
    connector = StandinConnector(state, env)
    catalogue = build_catalogue()
    catalogue.measure_with("oracle", OracleInstruments(connect=connector.connect))

    def switchover(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
        target, _ = targets.node(role)
        state.switchover(target)  # what the dgmgrl stand-in does on the lab host
        return ActionResult(f"switched over to {target}")

    catalogue.add_actions(
        ActionSpec("standin.switchover", Params, switchover, lambda t, r, p: [], True, "test")
    )
    steps = [
        {
            "id": "switch",
            "action": "standin.switchover",
            "target": "standby",
            "verify": [{"check": "oracle.is_primary"}],
            "within": "5s",
        }
    ]
    measurements = {"canary": True, "write_probe": True, "canary_interval": "10ms", "settle": "3s"}
    record, _ = run(tmp_path, env, connector, catalogue, steps, measurements=measurements)
    assert record.status == "passed", record.reason
    canary = record.measurements.canary
    assert canary is not None and canary.lost == 0 and canary.checked_on == "his-dr"
    assert record.measurements.write_probe is not None
    assert record.measurements.write_probe.first_write_node == "his-dr"


# -- the recorded view outputs themselves ------------------------------------------------------


def test_every_recorded_view_output_names_its_source_and_reads_back() -> None:
    """Each published output under tests/fixtures/oracle/views/ says where it is from, which
    release, which query, and whether it was copied or adapted; and every scenario that names
    one reads it back into the rows the stand-in answers with."""
    from tests.oracle_standin import recorded
    from tests.oracle_standin.database import FIXTURES

    files = sorted(p.name for p in recorded.VIEWS.glob("*.txt"))
    assert len(files) >= 20
    used: set[str] = set()
    for path in sorted(FIXTURES.glob("*.json")):
        for name, spec in json.loads(path.read_text())["scenarios"].items():
            if "recorded" not in spec:
                continue
            names = spec["recorded"] if isinstance(spec["recorded"], list) else [spec["recorded"]]
            used.update(names)
            columns, rows = recorded.scenario(spec)
            assert all(len(row) == len(columns) for row in rows), (path.name, name)
    assert used == set(files), set(files) ^ used  # no recorded output left unused
    for name in files:
        if not name.startswith("alert_log_"):
            header = recorded.read(name).header
            assert header["source"] and header["release"] and header["query"], name
    # SQL*Plus's own layout: a heading cut to its column's width, a page's heading printed again
    corruption = recorded.read("v_database_block_corruption_11g.txt")
    assert corruption.headings[-1] == "CORRUPTIO" and corruption.rows == [
        [41, 131, 1, 0, "CORRUPT"]
    ]
    assert len(recorded.read("v_dataguard_process_19c.txt").rows) == 22  # "22 rows selected."
    stats = recorded.read("v_dataguard_stats_wait_for_gap_11g.txt").rows
    assert stats[0][:2] == ["transport lag", None]  # an empty VALUE is NULL
    limits = recorded.read("v_resource_limit_near_limit_10g.txt").rows
    assert limits[3] == ["enqueue_resources", 21, 81, "1452", "UNLIMITED"]  # VARCHAR2 stays text
    with pytest.raises(ValueError, match="named 'blocks'"):
        recorded.rows_as("v_database_block_corruption_11g.txt", ["file#", "block#", "blocks",
                         "corruption_change#", "blocks"])  # fmt: skip


# -- the inspection report's words for the oracle.* checks -------------------------------------


def test_the_inspection_report_words_every_oracle_check_in_both_languages(
    tmp_path: Path, env: Environment, state: StandinState, catalogue: Catalogue
) -> None:
    from drills.reports import render_report
    from drills.reports.inspection import words

    names = [name for name, _, _ in oracle_checks()]
    for lang in ("zh", "en"):
        w = words(lang)
        assert [n for n in names if n not in w["standards"] or n not in w["advice"]] == []
    state.use("his-pri", "v$database", "primary_19c")  # a 19c primary, flashback off
    state.use("his-pri", "dba_tablespace_usage_metrics", "full")
    step = {
        "action": "observe",
        "target": "primary",
        "within": "50ms",
        "on_failure": "continue",
    }
    steps = [
        step | {"id": "flashback", "verify": [{"check": "oracle.flashback_on"}]},
        step | {"id": "space", "verify": [{"check": "oracle.tablespace_usage"}]},
        step | {"id": "role", "verify": [{"check": "oracle.is_primary"}]},
    ]
    record, store = run(tmp_path, env, StandinConnector(state, env), catalogue, steps,
                        kind="inspection")  # fmt: skip
    assert record.status == "failed", record.reason
    sealed = store.sealed(record.id)
    zh = render_report(sealed, fmt="md", lang="zh").decode()
    en = render_report(sealed, fmt="md", lang="en").decode()
    assert "数据库服务器" in zh and "Database servers" in en
    zh, en = (html.unescape(t.replace("\\_", "_")) for t in (zh, en))  # Markdown's escapes
    assert "闪回数据库（FLASHBACK_ON）：NO" in zh and "闪回数据库已开启（YES）" in zh
    assert "表空间使用率 ≤ 85%，临时表空间 ≤ 90%" in zh
    assert "角色：PRIMARY，READ WRITE" in zh
    assert "ALTER DATABASE FLASHBACK ON" in zh  # the finding's suggested handling
    assert "FLASHBACK_ON: NO" in en and "tablespaces <= 85% used, temporary <= 90%" in en
    assert "Add data files or enable autoextend" in en


# -- the table comparison through a node's wallet -----------------------------------------------


def wallet_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, password: bool
) -> tuple[Environment, Path, str]:
    """his-oracle with every node behind a TCPS listener: a wallet (an encrypted ewallet.pem)
    and its password under a variable whose name says nothing of secrets; with or without the
    user's password."""
    wallet = tmp_path / "wallet"
    wallet.mkdir()
    (wallet / "ewallet.pem").write_text(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nstand-in\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    planted = "Planted-Wallet-Pw!4417"
    monkeypatch.setenv("HIS_ORA_TLS", planted)
    monkeypatch.setenv("HIS_ORACLE_PASSWORD", PASSWORD)
    data = load_environment_file(HIS_ORACLE).model_dump()
    for name in NODES:
        section = data["nodes"][name]["oracle"]
        section.update(wallet_dir=str(wallet), wallet_password_env="HIS_ORA_TLS")
        if not password:
            section.update(password_env=None, password_file=None)
    return Environment.model_validate(data), wallet, planted


RECONCILE = {
    "id": "compare",
    "action": "oracle.reconcile",
    "target": "primary",
    "with": {"source": "primary", "tables": ["HIS.PATIENT"]},
}


def test_the_table_comparison_logs_in_through_the_nodes_wallet(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    state: StandinState,
    catalogue: Catalogue,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env, wallet, planted = wallet_env(tmp_path, monkeypatch, password=True)
    connector = StandinConnector(state, env)
    with caplog.at_level("DEBUG"):
        record, store = run(tmp_path, env, connector, catalogue, [RECONCILE])
    # What was passed to oracledb.connect for the comparison: the wallet and the password, as a
    # plain user (no SYSDG), to the node's own connect string.
    # (Role discovery connects to every node first, as SYSDG where the node says so.)
    connects = connector.database.connects
    compared = [a for a in connects if "mode" not in a and a["dsn"].endswith("/his_pri")]
    assert len(compared) == 2, connects  # the source and the target
    for arguments in connects:  # every session of the run goes through the wallet
        assert arguments["wallet_location"] == arguments["config_dir"] == str(wallet)
        assert arguments["wallet_password"] == planted
        assert arguments["password"] == PASSWORD and arguments["user"] == "c##drctl"
    # The login went through; the stand-in does not answer the comparison's own SQL, so the step
    # fails at its first statement, not at the login.
    step = record.steps[0]
    assert step.status == "failed"
    assert "ORA-01017" not in (step.error or "") and "DPY-6005" not in (step.error or "")
    journal = store.journal_path(record.id).read_text()
    stored = store.sealed(record.id).record.model_dump_json()
    for text in (journal, stored, caplog.text):
        assert planted not in text and PASSWORD not in text


def test_without_the_wallet_the_tcps_listener_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: StandinState, catalogue: Catalogue
) -> None:
    """The wallet is what lets the session through the TCPS listener: with its ewallet.pem
    gone, every node is unreachable and the run names why; nothing runs."""
    env, wallet, _ = wallet_env(tmp_path, monkeypatch, password=True)
    (wallet / "ewallet.pem").unlink()
    connector = StandinConnector(state, env)
    record, _ = run(tmp_path, env, connector, catalogue, [RECONCILE])
    assert record.status == "aborted" and "roles could not be resolved" in (record.reason or "")
    assert connector.database.statements == []
    from drills.engines.oracle.compare import session_opener

    targets = Targets(env, dict(ROLES), connector)
    try:
        with pytest.raises(ConnectionFailed, match="asked for a client certificate"):
            session_opener(targets, "source", "his-pri", env.nodes["his-pri"])()
    finally:
        targets.close()


def test_a_wallet_without_a_password_is_refused_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: StandinState, catalogue: Catalogue
) -> None:
    """Thin mode logs in with a password even through a wallet: the driver refuses (DPY-4001)
    before any network, and the message says which setting is missing."""
    from drills.engines.oracle.compare import session_opener

    env, _, planted = wallet_env(tmp_path, monkeypatch, password=False)
    targets = Targets(env, dict(ROLES), StandinConnector(state, env))
    try:
        opener = session_opener(targets, "source", "his-pri", env.nodes["his-pri"])
        with pytest.raises(AuthenticationFailed) as refused:
            opener()
    finally:
        targets.close()
    message = refused.value.message
    assert "DPY-4001" in message and "password_env or password_file" in message
    assert planted not in message


# -- Oracle Database Free (docker) -------------------------------------------------------------

ORACLE_IMAGE = "gvenzl/oracle-free:23-slim-faststart"


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


@pytest.fixture(scope="module")
def oracle_free() -> Iterator[tuple[int, str]]:
    """Oracle Database Free on a loopback port: (port, SYSTEM's password)."""
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    import oracledb

    name = f"drctl-oracle-checks-{uuid.uuid4().hex[:8]}"
    password = "Ora" + uuid.uuid4().hex[:12]
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "-p", "127.0.0.1::1521",
         "-e", f"ORACLE_PASSWORD={password}", ORACLE_IMAGE],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    try:
        line = subprocess.run(
            ["docker", "port", name, "1521/tcp"],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.splitlines()[0]  # fmt: skip
        port = int(line.rsplit(":", 1)[1])
        deadline = time.monotonic() + 600
        while True:
            try:
                oracledb.connect(
                    user="system", password=password, dsn=f"127.0.0.1:{port}/FREEPDB1"
                ).close()
                break
            except oracledb.Error:
                assert time.monotonic() < deadline, "Oracle Free did not open within 10 min"
                time.sleep(5)
        yield port, password
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120)


def free_env(port: int) -> Environment:
    return Environment.model_validate(
        {
            "name": "oracle-free",
            "nodes": {
                "free": {
                    "role": "primary",
                    "host": "127.0.0.1",
                    "port": port,
                    "oracle": {
                        "service": "FREEPDB1",
                        "user": "system",
                        "password_env": "DRCTL_FREE_PASSWORD",
                        "db_unique_name": "FREE",
                        "primary_service": "FREEPDB1",  # one instance: always the primary
                    },
                }
            },
        }
    )


@pytest.mark.docker
def test_oracle_free_answers_the_checks(
    oracle_free: tuple[int, str], monkeypatch: pytest.MonkeyPatch, catalogue: Catalogue
) -> None:
    port, password = oracle_free
    monkeypatch.setenv("DRCTL_FREE_PASSWORD", password)
    env = free_env(port)
    targets = Targets(env, {"primary": "free"})
    try:
        assert oracle.server_role(targets, "primary") == "primary"
        results = {
            name: run_check(name, "primary", {}, targets, Clock(), catalogue)
            for name, _, _ in oracle_checks()
            if name != "oracle.database_role"
        }
    finally:
        targets.close()
    errors = {n: r.detail for n, r in results.items() if r.verdict == "error"}
    assert errors == {}, errors  # every query is valid SQL on a real release
    assert results["oracle.is_primary"].held and results["oracle.takes_writes"].held
    assert results["oracle.archive_gap"].held  # no standby: no gap
    assert not results["oracle.transport_lag"].held  # no standby: no rows on a primary


@pytest.mark.docker
def test_oracle_free_takes_the_canary(
    oracle_free: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, password = oracle_free
    monkeypatch.setenv("DRCTL_FREE_PASSWORD", password)
    env = free_env(port)
    instruments = OracleInstruments()
    instruments.prepare(env, ["free"])
    instruments.prepare(env, ["free"])  # the tables exist: made once
    writer = instruments.canary(env, ["free"], f"run-{uuid.uuid4().hex[:6]}", Clock(), 0.01)
    writer.start()
    try:
        wait_for(lambda: len(writer.log.acks) >= 10, 30)
    finally:
        writer.stop()
    assert {w.node for w in writer.log.acks} == {"free"}
    present, checked_on = instruments.surviving(env, ["free"], writer.run_id)
    assert checked_on == "free" and {w.seq for w in writer.log.acks} <= present
