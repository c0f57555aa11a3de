"""The catalogue of checks a playbook may name, and the one way they are run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from drills.model.clock import Clock
from drills.model.errors import DrillError
from verify import http, inspection, postgres, reconcile
from verify.result import CheckResult, Observation, Probe

CheckFn = Callable[[Probe, str, Any], Observation]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    params: type[BaseModel]
    fn: CheckFn
    description: str


def _spec(name: str, params: type[BaseModel], fn: CheckFn) -> CheckSpec:
    doc = (fn.__doc__ or name).strip().splitlines()[0]
    return CheckSpec(name, params, fn, doc)


CHECKS: dict[str, CheckSpec] = {
    spec.name: spec
    for spec in [
        _spec("pg.is_primary", postgres.NoParams, postgres.is_primary),
        _spec("pg.is_standby", postgres.NoParams, postgres.is_standby),
        _spec("pg.streaming", postgres.StreamingParams, postgres.streaming),
        _spec("pg.replay_lag", postgres.LagParams, postgres.replay_lag),
        _spec("pg.down", postgres.NoParams, postgres.down),
        _spec("pg.rejects_writes", postgres.NoParams, postgres.rejects_writes),
        _spec("pg.takes_writes", postgres.NoParams, postgres.takes_writes),
        _spec("pg.tables_match", reconcile.TablesMatchParams, reconcile.tables_match),
        _spec("http.answers", http.HttpParams, http.answers),
        _spec("his.registration_roundtrip", http.RegistrationParams, http.registration_roundtrip),
        _spec(
            "pg.replayed_shutdown_checkpoint",
            postgres.ReplayedParams,
            postgres.replayed_shutdown_checkpoint,
        ),
        _spec("pg.disk_space", inspection.DiskParams, inspection.disk_space),
        _spec("pg.wal_space", inspection.WalParams, inspection.wal_space),
        _spec("pg.connections", inspection.ConnectionsParams, inspection.connections),
        _spec("pg.long_sessions", inspection.LongSessionsParams, inspection.long_sessions),
        _spec("pg.idle_in_transaction", inspection.IdleParams, inspection.idle_in_transaction),
        _spec("pg.backup_age", inspection.BackupAgeParams, inspection.backup_age),
        _spec("pg.settings", inspection.SettingsParams, inspection.settings),
    ]
}


def run_check(
    name: str, role: str, params: dict[str, Any], probe: Probe, clock: Clock
) -> CheckResult:
    """Ask one check; an error while asking is a verdict, never an exception."""
    spec = CHECKS[name]
    node_name = "?"
    try:
        node_name, _ = probe.node(role)
        observation = spec.fn(probe, role, spec.params.model_validate(params))
        verdict = "held" if observation.held else "deviated"
        observed, expected, detail = observation.observed, observation.expected, observation.detail
    except DrillError as exc:
        verdict, observed, expected, detail = "error", None, spec.description, str(exc)
    stamp = clock.now()
    return CheckResult(
        check=name,
        target=role,
        node=node_name,
        observed=observed,
        expected=expected,
        verdict=verdict,
        detail=detail,
        at=stamp.at,
        offset=stamp.offset,
    )
