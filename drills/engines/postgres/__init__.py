"""The PostgreSQL engine: its actions (server, fencing, lost-transaction accounting, backup,
restore, migration), its checks (role, replication, fencing, inspection, reconciliation) and its
role observer, registered into a catalogue by ``register``."""

from __future__ import annotations

from pydantic import BaseModel

from drills.engine.catalogue import Catalogue, CheckFn, Equivalent, check_spec
from verify import inspection, postgres, reconcile
from verify.result import Observation, Probe

ENGINE = "postgres"


def pg_log_errors(probe: Probe, role: str, params: inspection.PgLogParams) -> Observation:
    """Errors in the server log since the last inspection (ERROR, FATAL, PANIC lines)."""
    from drills.engine.core import previous_inspection

    return inspection.log_errors(probe, role, params, previous_inspection(probe))


def register(catalogue: Catalogue) -> None:
    from drills.engines.postgres.actions import postgres_actions
    from drills.engines.postgres.backup import backup_actions
    from drills.engines.postgres.canary import PostgresInstruments
    from drills.engines.postgres.fence import fence_actions, fenced
    from drills.engines.postgres.migrate import migration_actions
    from drills.engines.postgres.walloss import walloss_actions

    catalogue.add_actions(
        *postgres_actions(),
        *fence_actions(),
        *walloss_actions(),
        *backup_actions(),
        *migration_actions(),
    )
    checks: list[tuple[str, type[BaseModel], CheckFn]] = [
        ("pg.is_primary", postgres.NoParams, postgres.is_primary),
        ("pg.is_standby", postgres.NoParams, postgres.is_standby),
        ("pg.streaming", postgres.StreamingParams, postgres.streaming),
        ("pg.replay_lag", postgres.LagParams, postgres.replay_lag),
        ("pg.down", postgres.NoParams, postgres.down),
        ("pg.rejects_writes", postgres.NoParams, postgres.rejects_writes),
        ("pg.fenced", postgres.NoParams, fenced),
        ("pg.takes_writes", postgres.NoParams, postgres.takes_writes),
        (
            "pg.replayed_shutdown_checkpoint",
            postgres.ReplayedParams,
            postgres.replayed_shutdown_checkpoint,
        ),
        ("pg.tables_match", reconcile.TablesMatchParams, reconcile.tables_match),
        ("pg.disk_space", inspection.DiskParams, inspection.disk_space),
        ("pg.wal_space", inspection.WalParams, inspection.wal_space),
        ("pg.connections", inspection.ConnectionsParams, inspection.connections),
        ("pg.long_sessions", inspection.LongSessionsParams, inspection.long_sessions),
        ("pg.idle_in_transaction", inspection.IdleParams, inspection.idle_in_transaction),
        ("pg.backup_age", inspection.BackupAgeParams, inspection.backup_age),
        ("pg.settings", inspection.SettingsParams, inspection.settings),
        ("pg.xid_age", inspection.XidAgeParams, inspection.xid_age),
        ("pg.replication_slots", inspection.SlotsParams, inspection.replication_slots),
        ("pg.log_errors", inspection.PgLogParams, pg_log_errors),
    ]
    catalogue.add_checks(*(check_spec(n, p, f, ENGINE) for n, p, f in checks))
    catalogue.observe_roles_with(ENGINE, postgres.server_role)
    catalogue.measure_with(ENGINE, PostgresInstruments())
    equate_neutral(catalogue)


def equate_neutral(catalogue: Catalogue) -> None:
    """What PostgreSQL runs for the engine-neutral actions and checks (``drills.engine.neutral``):
    each is the action or check of the same meaning, with the same role and parameters."""
    for neutral, own in (
        ("db.crash", "pg.kill"),
        ("db.fence", "pg.fence"),
        ("db.failover", "pg.promote"),
        ("db.rejoin", "pg.rejoin_as_standby"),
        ("db.count_lost_transactions", "pg.count_lost_transactions"),
        ("db.is_primary", "pg.is_primary"),
        ("db.is_standby", "pg.is_standby"),
        ("db.takes_writes", "pg.takes_writes"),
        ("db.rejects_writes", "pg.rejects_writes"),
        ("db.fenced", "pg.fenced"),
        ("db.replicating", "pg.streaming"),
    ):
        catalogue.equate(ENGINE, neutral, Equivalent(own))
    catalogue.equate(
        ENGINE,
        "db.record_lag",
        Equivalent(
            None,
            why="nothing to read before the failover: pg.count_lost_transactions counts every "
            "lost transaction from the old primary's WAL afterwards",
        ),
    )
