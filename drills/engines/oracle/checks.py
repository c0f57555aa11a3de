"""The Oracle engine's checks, as (name, parameters, function): role and readiness, Data Guard,
backups, and inspection items. Their functions are in ``verify.oracle*``."""

from __future__ import annotations

from pydantic import BaseModel

from drills.engine.catalogue import CheckFn
from verify import oracle, oracle_dataguard, oracle_inspection, oracle_sessions


def oracle_checks() -> list[tuple[str, type[BaseModel], CheckFn]]:
    dg, space, activity = oracle_dataguard, oracle_inspection, oracle_sessions
    return [
        # role and readiness (V$DATABASE), fencing and writes
        ("oracle.is_primary", oracle.NoParams, oracle.is_primary),
        ("oracle.is_standby", oracle.NoParams, oracle.is_standby),
        ("oracle.database_role", oracle.RoleParams, oracle.database_role),
        ("oracle.switchover_status", oracle.SwitchoverParams, oracle.switchover_status),
        ("oracle.protection", oracle.ProtectionParams, oracle.protection),
        ("oracle.flashback_on", oracle.FlashbackParams, oracle.flashback_on),
        ("oracle.force_logging", oracle.OracleParams, oracle.force_logging),
        ("oracle.rejects_writes", oracle.NoParams, oracle.rejects_writes),
        ("oracle.takes_writes", oracle.NoParams, oracle.takes_writes),
        # Data Guard transport and apply, backups, corruption
        ("oracle.transport_lag", dg.LagParams, dg.transport_lag),
        ("oracle.apply_lag", dg.LagParams, dg.apply_lag),
        ("oracle.archive_gap", oracle.OracleParams, dg.archive_gap),
        ("oracle.apply_running", dg.ApplyParams, dg.apply_running),
        ("oracle.rman_backup", dg.RmanParams, dg.rman_backup),
        ("oracle.block_corruption", oracle.OracleParams, dg.block_corruption),
        # inspection: space, archiving, the alert log, objects, jobs
        ("oracle.tablespace_usage", space.TablespaceParams, space.tablespace_usage),
        ("oracle.recovery_area", space.RecoveryAreaParams, space.recovery_area),
        ("oracle.archive_destinations", oracle.OracleParams, space.archive_destinations),
        ("oracle.alert_log_errors", space.AlertLogParams, space.alert_log_errors),
        ("oracle.invalid_objects", space.InvalidObjectsParams, space.invalid_objects),
        ("oracle.asm_diskgroups", space.AsmParams, space.asm_diskgroups),
        ("oracle.failed_jobs", space.FailedJobsParams, space.failed_jobs),
        # inspection: the instance's activity
        ("oracle.resource_limits", activity.ResourceParams, activity.resource_limits),
        ("oracle.long_running_sql", activity.LongSqlParams, activity.long_running_sql),
        ("oracle.blocking_sessions", activity.BlockingParams, activity.blocking_sessions),
        ("oracle.redo_switch_rate", activity.RedoSwitchParams, activity.redo_switch_rate),
        ("oracle.expiring_accounts", activity.ExpiringParams, activity.expiring_accounts),
    ]
