"""What Oracle's command-line tools print, read into typed results. Pure functions: no I/O.

DGMGRL (the Data Guard broker), RMAN and Data Pump (expdp/impdp) talk to people, not programs:
their output is text meant for a terminal. Each parser here reads the lines a tool prints for one
command and returns a frozen dataclass; anything it cannot recognise is left out rather than
guessed, and every ORA-/RMAN-/DGM-/TNS-/SP2-/UDE-/UDI- code in the text is kept
(:func:`error_codes`), so a result can always say *which* error the tool reported.

The parsers are tested on outputs copied from Oracle's documentation and from public posts that
show real runs (``tests/fixtures/oracle/*.txt``; each file names its source and release). Tools
are run with ``NLS_LANG=AMERICAN_AMERICA.AL32UTF8`` (:mod:`drills.engines.oracle.tools`), so the
English messages these parsers look for are the ones printed.

    show = parse_show_configuration(text)      # ConfigurationStatus: status, members, roles
    ready = parse_validate_database(text)      # Validation: ready for switchover / failover, lag
    change = parse_role_change(text, "switchover")  # RoleChange: succeeded, new primary, errors
    check = parse_backup_validate(text)        # BlockCheck: datafiles, archived logs, corruption
    preview = parse_restore_preview(text)      # RestorePreview: backups, SCNs
    log = parse_datapump_log(text)             # DataPumpLog: job state, errors, rows per table
"""

from drills.engines.oracle.parse_broker import (
    ConfigurationStatus,
    Member,
    Operation,
    Role,
    RoleChange,
    Validation,
    broker_role,
    parse_role_change,
    parse_show_configuration,
    parse_validate_database,
)
from drills.engines.oracle.parse_common import (
    LOGIN_REFUSED,
    OracleError,
    SqlplusRun,
    broker_seconds,
    error_codes,
    first_error,
    interval_seconds,
    login_refused,
    parse_sqlplus,
    plain,
)
from drills.engines.oracle.parse_datapump import DataPumpLog, TableRows, parse_datapump_log
from drills.engines.oracle.parse_rman import (
    ArchivedLogCheck,
    BackupSetSummary,
    BlockCheck,
    DatafileCheck,
    RestorePreview,
    RmanRun,
    parse_backup_validate,
    parse_restore_preview,
    parse_rman,
    rman_failed,
)

__all__ = [
    "LOGIN_REFUSED",
    "ArchivedLogCheck",
    "BackupSetSummary",
    "BlockCheck",
    "ConfigurationStatus",
    "DataPumpLog",
    "DatafileCheck",
    "Member",
    "Operation",
    "OracleError",
    "RestorePreview",
    "RmanRun",
    "Role",
    "RoleChange",
    "SqlplusRun",
    "TableRows",
    "Validation",
    "broker_role",
    "broker_seconds",
    "error_codes",
    "first_error",
    "interval_seconds",
    "login_refused",
    "parse_backup_validate",
    "parse_datapump_log",
    "parse_restore_preview",
    "parse_rman",
    "parse_role_change",
    "parse_show_configuration",
    "parse_sqlplus",
    "parse_validate_database",
    "plain",
    "rman_failed",
]
