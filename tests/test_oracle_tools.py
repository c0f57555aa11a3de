"""The Oracle tool parsers, on outputs copied from Oracle's documentation and public posts.

Every fixture in ``tests/fixtures/oracle/`` starts with a header (``# source:``, ``# release:``,
``# command:``, and ``# copied:`` or ``# adapted:``) that ends at ``# ---``; the tool's output
follows. The header is part of the test: a fixture without a source, or one that claims to be
copied while saying nothing about where from, fails ``test_every_fixture_names_its_source``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.engines.oracle import parsers as p

FIXTURES = Path(__file__).parent / "fixtures" / "oracle"


def output(name: str) -> str:
    """The tool's output of a fixture, without its header."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    _head, sep, body = text.partition("# ---\n")
    assert sep, f"{name} has no '# ---' line ending its header"
    return body


def header(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8").partition("# ---\n")[0]


def test_every_fixture_names_its_source() -> None:
    names = sorted(f.name for f in FIXTURES.glob("*.txt"))
    assert len(names) >= 25
    for name in names:
        head = header(name)
        assert head.startswith("# source: "), name
        assert "# release: " in head, name
        assert "# command: " in head, name
        assert ("# copied: " in head) or ("# adapted: " in head), name
        source = head.split("# release: ")[0]
        assert "http" in source or "index id" in source, name
        assert output(name).strip(), name


# -- error codes ---------------------------------------------------------------------------------


def test_error_codes_in_an_rman_stack() -> None:
    errors = p.error_codes(output("rman_error_stack_backup.txt"))
    assert [e.code for e in errors] == [
        "RMAN-00571",
        "RMAN-00569",
        "RMAN-00571",
        "RMAN-03009",
        "ORA-27192",
        "ORA-19511",
    ]
    assert errors[3].message.startswith("failure of backup command on CH4 channel")
    run = p.parse_rman(output("rman_error_stack_backup.txt"))
    assert run.failed
    assert [e.code for e in run.stack] == ["RMAN-03009", "ORA-27192", "ORA-19511"]


def test_login_refused_from_sqlplus() -> None:
    text = output("sqlplus_login_denied_19c.txt")
    refused = p.login_refused(text)
    assert refused is not None and refused.code == "ORA-01017"
    assert refused.message == "invalid username/password; logon denied"
    assert p.parse_sqlplus(text).login_refused == refused


def test_shutdown_abort_said_so() -> None:
    run = p.parse_sqlplus(output("sqlplus_shutdown_abort_19c.txt"))
    assert run.instance_shut_down and not run.errors


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("9 seconds (computed 5 seconds ago)", 9.0),
        ("0 seconds (computed 1 second ago)", 0.0),
        ("37 minutes 56 seconds (computed 0 seconds ago)", 2276.0),
        ("1 day 2 hours", 93600.0),
        ("(unknown)", None),
    ],
)
def test_broker_durations(text: str, seconds: float | None) -> None:
    assert p.broker_seconds(text) == seconds


def test_dataguard_stats_intervals() -> None:
    assert p.interval_seconds("+00 00:00:09") == 9.0
    assert p.interval_seconds("+00 00:00:00.000") == 0.0
    assert p.interval_seconds("+01 02:03:04") == 93784.0
    assert p.interval_seconds("15") is None


# -- DGMGRL: SHOW CONFIGURATION ------------------------------------------------------------------


def test_show_configuration_success() -> None:
    show = p.parse_show_configuration(output("dgmgrl_show_configuration_success_19c.txt"))
    assert show.name == "test_dg" and show.protection_mode == "MaxAvailability"
    assert show.ok and show.status == "SUCCESS"
    assert [(m.name, m.role) for m in show.members] == [
        ("dgtest3", "primary"),
        ("dgtest", "physical_standby"),
        ("dgtest2", "physical_standby"),
    ]
    assert show.primary == "dgtest3"
    assert show.fast_start_failover == "Disabled"
    assert not show.errors


def test_show_configuration_error_names_the_member() -> None:
    show = p.parse_show_configuration(output("dgmgrl_show_configuration_error_19c.txt"))
    assert show.status == "ERROR" and not show.ok
    primary = show.member("dgtest3")
    assert primary is not None
    assert [e.code for e in primary.errors] == ["ORA-12514"]
    standby = show.member("dgtest2")
    assert standby is not None and not standby.errors


def test_show_configuration_after_failover_needs_reinstate() -> None:
    show = p.parse_show_configuration(output("dgmgrl_show_configuration_reinstate_19c.txt"))
    assert show.status == "WARNING"
    assert show.primary == "adg_fra34x"
    old = show.member("adg_fra22s")
    assert old is not None
    assert old.disabled and old.needs_reinstate and old.role == "physical_standby"
    new = show.member("adg_fra34x")
    assert new is not None and [w.code for w in new.warnings] == ["ORA-16857"]


def test_show_configuration_11g_databases_and_fsfo_target() -> None:
    show = p.parse_show_configuration(output("dgmgrl_show_configuration_fsfo_11g.txt"))
    assert [(m.name, m.role, m.fast_start_target) for m in show.members] == [
        ("dg2", "primary", False),
        ("dg1", "physical_standby", True),
    ]
    assert show.fast_start_failover == "ENABLED" and show.ok


# -- DGMGRL: VALIDATE DATABASE -------------------------------------------------------------------


def test_validate_ready_with_apply_lag() -> None:
    v = p.parse_validate_database(output("dgmgrl_validate_apply_lag_19c.txt"))
    assert v.database_role == "Physical standby database" and v.primary == "orcl"
    assert v.ready_for_switchover is True and v.ready_for_failover is True
    assert v.primary_running is True
    assert v.apply_state == "Running"
    assert v.apply_lag_seconds == 9.0
    assert v.flashback == {"orcl": "On", "orcl_yny1zh": "Off"}
    assert not v.errors and not v.warnings


def test_validate_verbose_transport_and_gap() -> None:
    v = p.parse_validate_database(output("dgmgrl_validate_verbose_19c.txt"))
    assert v.ready_for_switchover is True
    assert v.apply_lag_seconds == 0.0 and v.transport_lag_seconds == 0.0
    assert v.gap_status == "No Gap"
    assert v.flashback == {"graz": "On", "salzburg": "On"}


def test_validate_primary_not_running() -> None:
    v = p.parse_validate_database(output("dgmgrl_validate_primary_not_running_26ai.txt"))
    assert v.ready_for_switchover is False
    assert v.ready_for_failover is True and v.primary_running is False
    assert v.failover_line == "Yes (Primary Not Running)"
    assert v.warnings == ("primary database was not reachable",)
    assert v.flashback == {"North_Sales": "Unknown", "South_Sales": "On"}


def test_validate_member_not_enabled() -> None:
    v = p.parse_validate_database(output("dgmgrl_validate_not_enabled_19c.txt"))
    assert v.ready_for_switchover is None and v.ready_for_failover is None
    assert [e.code for e in v.errors] == ["ORA-16541"]


# -- DGMGRL: role changes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "new_primary"),
    [
        ("dgmgrl_switchover_success_19c.txt", "orcl_yny1zh"),
        ("dgmgrl_switchover_success_11g.txt", "dg2"),
    ],
)
def test_switchover_succeeded(name: str, new_primary: str) -> None:
    change = p.parse_role_change(output(name), "switchover")
    assert change.succeeded and change.new_primary == new_primary and not change.errors


def test_switchover_refused_names_the_error_and_the_primary() -> None:
    change = p.parse_role_change(output("dgmgrl_switchover_failed_11g.txt"), "switchover")
    assert not change.succeeded
    assert change.still_primary == "dg2"
    assert [e.code for e in change.errors] == ["ORA-16558"]


def test_failover_succeeded() -> None:
    change = p.parse_role_change(output("dgmgrl_failover_success_19c.txt"), "failover")
    assert change.succeeded and change.new_primary == "adg_fra34x"


def test_reinstate_succeeded() -> None:
    change = p.parse_role_change(output("dgmgrl_reinstate_success_19c.txt"), "reinstate")
    assert change.succeeded and change.database == "cdb001"


def test_no_closing_line_is_no_success() -> None:
    text = output("sqlplus_login_denied_19c.txt")
    operations: tuple[p.Operation, ...] = ("switchover", "failover", "reinstate")
    for operation in operations:
        change = p.parse_role_change(text, operation)
        assert not change.succeeded
        assert [e.code for e in change.errors] == ["ORA-01017"]


# -- RMAN ----------------------------------------------------------------------------------------


def test_validate_clean_datafile() -> None:
    check = p.parse_backup_validate(output("rman_validate_datafile_ok_21c.txt"))
    assert check.clean and check.finished
    (d,) = check.datafiles
    assert (d.file, d.status, d.marked_corrupt, d.blocks_examined, d.high_scn) == (
        3,
        "OK",
        0,
        75529,
        2698233,
    )
    assert d.name == "/opt/oracle/oradata/CDB1/sysaux01.dbf"
    assert d.blocks_failing == {"Data": 0, "Index": 0, "Other": 0}
    assert check.findings() == []


def test_validate_failed_datafile_is_named_with_its_blocks() -> None:
    check = p.parse_backup_validate(output("rman_validate_datafile_failed.txt"))
    assert not check.clean
    (bad,) = check.corrupt_datafiles
    assert bad.file == 41 and bad.status == "FAILED" and bad.failing == 2
    (finding,) = check.findings()
    assert "datafile 41" in finding and "blog01.dbf" in finding and "Other 2" in finding


def test_blocks_marked_corrupt_fail_the_validation() -> None:
    check = p.parse_backup_validate(output("rman_validate_marked_corrupt_rac.txt"))
    (bad,) = check.corrupt_datafiles
    assert bad.file == 16 and bad.status == "OK" and bad.marked_corrupt == 4253
    assert not check.clean
    assert "4253 block(s) marked corrupt" in check.findings()[0]


def test_validate_archived_logs() -> None:
    check = p.parse_backup_validate(output("rman_backup_validate_archivelog.txt"))
    (log,) = check.archived_logs
    assert (log.thread, log.sequence, log.status, log.blocks_examined) == (1, 45, "OK", 4082)
    assert not check.corrupt_logs and check.finished
    assert not check.datafiles and not check.clean  # no datafile was checked


def test_restore_validate_reads_pieces() -> None:
    run = p.parse_rman(output("rman_restore_validate_21c.txt"))
    assert not run.failed and run.finished == ("restore",)
    assert run.pieces == (
        "/opt/oracle/recovery_area/CDB1/backupset/2021_12_16/"
        "o1_mf_nnndf_TAG20211216T075421_jvow5fos_.bkp",
    )
    assert run.elapsed == ("00:00:15",)


def test_restore_and_recover() -> None:
    run = p.parse_rman(output("rman_restore_recover_12c.txt"))
    assert run.finished == ("restore", "recover") and not run.failed
    assert run.elapsed[-1] == "00:00:01"


def test_restore_preview_summary() -> None:
    preview = p.parse_restore_preview(output("rman_restore_preview_summary_11g.txt"))
    assert [b.key for b in preview.backups] == [214, 213, 210, 211, 212]
    first = preview.backups[0]
    assert (first.type, first.level, first.status, first.device) == ("B", "F", "A", "DISK")
    assert first.completed == "13.04.2012 18:46:40" and first.tag == "FULL_DATABASE_BEFORE_UPGRADE"
    assert preview.media_recovery_start_scn == 8639788
    assert preview.recovery_beyond_scn == 8639822


# -- Data Pump -----------------------------------------------------------------------------------


def test_expdp_success() -> None:
    log = p.parse_datapump_log(output("expdp_schema_success_11g.txt"))
    assert log.succeeded and log.error_count == 0
    assert (log.job_owner, log.job_name) == ("SYSTEM", "SYS_EXPORT_SCHEMA_01")
    assert len(log.tables) == 8
    assert log.rows_of("HR", "EMPLOYEES") == 110
    employees = next(t for t in log.tables if t.table == "EMPLOYEES")
    assert employees.size == "17.19 KB" and employees.size_bytes == int(17.19 * 1024)
    assert log.rows_of("HR", "LOG_TABLE") == 0
    assert log.dump_files == ("C:\\MYDATA\\MYBACKUPS\\HRDB.DMP",)


def test_expdp_with_an_error_names_it() -> None:
    log = p.parse_datapump_log(output("expdp_schema_with_error_11g.txt"))
    assert log.outcome == "completed_with_errors" and log.error_count == 1
    assert [e.code for e in log.errors] == ["ORA-39165"]
    assert log.rows_of("HR", "COUNTRIES") == 25


def test_impdp_errors_and_rows() -> None:
    exists = p.parse_datapump_log(output("impdp_schema_user_exists_19c.txt"))
    assert exists.outcome == "completed_with_errors" and exists.error_count == 1
    assert [e.code for e in exists.errors] == ["ORA-31684"]
    rows = p.parse_datapump_log(output("impdp_schema_rows_adb.txt"))
    assert rows.rows_of("SOE", "ORDER_ITEMS") == 4991509
    assert all(t.direction == "imported" for t in rows.tables) and len(rows.tables) == 11
    assert [e.code for e in rows.errors] == ["ORA-39082"]


def test_impdp_log_with_timestamps() -> None:
    log = p.parse_datapump_log(output("impdp_logtime_23ai.txt"))
    assert log.outcome == "completed_with_errors" and log.error_count == 1
    assert log.job_name == "SYS_IMPORT_SCHEMA_01"
    assert [e.code for e in log.errors] == ["ORA-31685"]


def test_results_are_plain_data_for_records() -> None:
    import json

    for data in (
        p.parse_show_configuration(output("dgmgrl_show_configuration_error_19c.txt")).as_dict(),
        p.parse_validate_database(output("dgmgrl_validate_apply_lag_19c.txt")).as_dict(),
        p.parse_backup_validate(output("rman_validate_datafile_failed.txt")).as_dict(),
        p.parse_datapump_log(output("expdp_schema_success_11g.txt")).as_dict(),
        p.parse_restore_preview(output("rman_restore_preview_summary_11g.txt")).as_dict(),
    ):
        assert json.loads(json.dumps(data)) == data
