"""The PostgreSQL engine: its actions (server, backup, restore, migration), its checks (role,
replication, fencing, inspection, reconciliation) and its role observer, registered into a
catalogue by ``register``."""

from __future__ import annotations

from pydantic import BaseModel

from drills.engine.catalogue import Catalogue, CheckFn, check_spec
from verify import inspection, postgres, reconcile

ENGINE = "postgres"


def register(catalogue: Catalogue) -> None:
    from drills.engines.postgres.actions import postgres_actions
    from drills.engines.postgres.backup import backup_actions
    from drills.engines.postgres.canary import PostgresInstruments
    from drills.engines.postgres.migrate import migration_actions

    catalogue.add_actions(*postgres_actions(), *backup_actions(), *migration_actions())
    checks: list[tuple[str, type[BaseModel], CheckFn]] = [
        ("pg.is_primary", postgres.NoParams, postgres.is_primary),
        ("pg.is_standby", postgres.NoParams, postgres.is_standby),
        ("pg.streaming", postgres.StreamingParams, postgres.streaming),
        ("pg.replay_lag", postgres.LagParams, postgres.replay_lag),
        ("pg.down", postgres.NoParams, postgres.down),
        ("pg.rejects_writes", postgres.NoParams, postgres.rejects_writes),
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
    ]
    catalogue.add_checks(*(check_spec(n, p, f, ENGINE) for n, p, f in checks))
    catalogue.observe_roles_with(ENGINE, postgres.server_role)
    catalogue.measure_with(ENGINE, PostgresInstruments())
