"""Oracle checks: the role and readiness of each database, Data Guard's transport and apply,
RMAN's backup jobs and block corruption. Inspection items are in ``verify.oracle_inspection``.

Every check reads dynamic performance views through the node's session (``probe.sql(role)``,
``drills.executors.oracle.OracleSession``). A view that this release does not have (or that the
user may not read) answers ORA-00942: the check then observes "view not available in this
release" and holds or not as its ``view_missing_holds`` parameter says (default: not), so an
inspection on an older release says what it could not see instead of failing on it. A
dictionary view (DBA_*) on a mounted standby answers ORA-01219, observed the same way.

Which node is what (``server_role``): ``V$DATABASE.DATABASE_ROLE`` PRIMARY, open READ WRITE, is
``primary``; PHYSICAL, SNAPSHOT or LOGICAL STANDBY is ``standby``; a PRIMARY that is not open read
write (mounted after a failover, waiting to be reinstated) takes no writes, and is ``down`` to the
role decision. A node that cannot be reached raises ``ConnectionFailed``: the runner counts it
down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drills.model.errors import CommandFailed, ConnectionFailed, DrillError, InputError
from verify.result import Observation, Probe

TIMEOUT = 10.0  # seconds a check's query may run
MISSING_VIEW = "ORA-00942"  # table or view does not exist (or may not be read)
NOT_AVAILABLE = "view not available in this release"
NOT_OPEN_CODE = "ORA-01219"  # database not open: queries allowed on fixed tables or views only
NOT_OPEN = "database not open: view not readable"
LISTED = 5  # rows named in an observation
STANDBY_ROLES = ("PHYSICAL STANDBY", "SNAPSHOT STANDBY", "LOGICAL STANDBY")
Row = tuple[Any, ...]


class OracleParams(BaseModel):
    """The base of every Oracle check's parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    view_missing_holds: bool = Field(
        default=False,
        description="Whether the check holds when its view is not in this release (ORA-00942).",
    )


def oracle_codes(exc: DrillError) -> list[str]:
    """The ORA- codes an error's message carries."""
    return re.findall(r"\bORA-\d{5}\b", exc.message)


@dataclass(frozen=True)
class Unreadable:
    """Why a check's view could not be read: ORA-00942 (not in this release, or not granted),
    or ORA-01219 (a dictionary view on a database that is only mounted)."""

    code: str
    message: str

    @property
    def observed(self) -> str:
        return NOT_AVAILABLE if self.code == MISSING_VIEW else NOT_OPEN


def rows_of(probe: Probe, role: str, sql: str, binds: Any = None) -> list[Row] | Unreadable:
    """The rows of a query on the role's database, or why its view could not be read."""
    try:
        rows: list[Row] = probe.sql(role).query(sql, binds, timeout=TIMEOUT)
    except CommandFailed as exc:
        codes = oracle_codes(exc)
        for code in (MISSING_VIEW, NOT_OPEN_CODE):
            if code in codes:
                return Unreadable(code, exc.message)
        raise
    return rows


def not_available(
    view: str, expected: str, params: OracleParams, why: Unreadable | None = None
) -> Observation:
    """What a check observes when its view could not be read: held as ``view_missing_holds``."""
    code = why.code if why is not None else MISSING_VIEW
    detail = (
        f"{view} answered ORA-00942: not in this release, or not granted to the user"
        if code == MISSING_VIEW
        else f"{view} answered {code}: the database is only mounted (a standby); dictionary "
        "views need an open database"
    )
    observed = why.observed if why is not None else NOT_AVAILABLE
    return Observation(observed, expected, params.view_missing_holds, detail)


def text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def number(value: Any) -> float:
    """A NUMBER or a VARCHAR2 holding one (``LIMIT_VALUE`` is ``'  170'``); 0 for NULL."""
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return 0.0


# -- role and readiness (V$DATABASE) -----------------------------------------------------------

DATABASE_SQL = (
    "SELECT database_role, open_mode, switchover_status, protection_mode, protection_level,"
    " flashback_on, force_logging, db_unique_name FROM v$database"
)
DATABASE_COLUMNS = (
    "database_role",
    "open_mode",
    "switchover_status",
    "protection_mode",
    "protection_level",
    "flashback_on",
    "force_logging",
    "db_unique_name",
)


def database(probe: Probe, role: str) -> dict[str, str]:
    """The role's row of ``V$DATABASE``, its values trimmed (raises if unreachable)."""
    rows = probe.sql(role).query(DATABASE_SQL, timeout=5)
    if not rows:
        name, _ = probe.node(role)
        raise CommandFailed(f"node {name}: v$database returned no row", returncode=1, host=name)
    return {key: text(value) for key, value in zip(DATABASE_COLUMNS, rows[0], strict=False)}


def role_of(database_role: str, open_mode: str) -> str:
    """'primary', 'standby' or 'down' from V$DATABASE's role and open mode."""
    if database_role == "PRIMARY":
        return "primary" if open_mode == "READ WRITE" else "down"
    if database_role in STANDBY_ROLES:
        return "standby"
    return "down"


def server_role(probe: Probe, role: str) -> str:
    """'primary', 'standby' or 'down', as V$DATABASE says; unreachable raises ConnectionFailed."""
    row = probe.sql(role).query("SELECT database_role, open_mode FROM v$database", timeout=3)
    if not row:
        return "down"
    return role_of(text(row[0][0]), text(row[0][1]))


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _role_observation(probe: Probe, role: str, wanted: str) -> Observation:
    try:
        db = database(probe, role)
    except ConnectionFailed as exc:
        return Observation("unreachable", wanted, False, exc.message)
    seen = role_of(db["database_role"], db["open_mode"])
    observed = {"database_role": db["database_role"], "open_mode": db["open_mode"], "role": seen}
    detail = f"{db['database_role']}, {db['open_mode']}"
    return Observation(observed, wanted, seen == wanted, detail)


def is_primary(probe: Probe, role: str, params: NoParams) -> Observation:
    """The database is the primary, open read write (V$DATABASE)."""
    return _role_observation(probe, role, "primary")


def is_standby(probe: Probe, role: str, params: NoParams) -> Observation:
    """The database is a standby: physical, snapshot or logical (V$DATABASE)."""
    return _role_observation(probe, role, "standby")


class RoleParams(OracleParams):
    database_role: Literal["PRIMARY", "PHYSICAL STANDBY", "SNAPSHOT STANDBY", "LOGICAL STANDBY"] = (
        Field(description="The DATABASE_ROLE expected.")
    )
    open_modes: list[str] = Field(
        default_factory=list,
        description="OPEN_MODE values accepted (e.g. READ ONLY WITH APPLY, MOUNTED); empty: any.",
    )


def database_role(probe: Probe, role: str, params: RoleParams) -> Observation:
    """The database's role and open mode are the ones expected (V$DATABASE)."""
    db = database(probe, role)
    modes = [m.upper() for m in params.open_modes]
    held = db["database_role"] == params.database_role and (not modes or db["open_mode"] in modes)
    expected = params.database_role + (f", open {' or '.join(modes)}" if modes else "")
    observed = {"database_role": db["database_role"], "open_mode": db["open_mode"]}
    return Observation(observed, expected, held, f"{db['database_role']}, {db['open_mode']}")


class SwitchoverParams(OracleParams):
    allowed: list[str] = Field(
        default_factory=lambda: ["TO PRIMARY", "TO STANDBY", "SESSIONS ACTIVE"],
        description="SWITCHOVER_STATUS values that mean a switchover may start.",
    )


def switchover_status(probe: Probe, role: str, params: SwitchoverParams) -> Observation:
    """V$DATABASE.SWITCHOVER_STATUS says a switchover may start (TO PRIMARY/TO STANDBY...)."""
    db = database(probe, role)
    allowed = [a.upper() for a in params.allowed]
    status = db["switchover_status"]
    return Observation(status, " or ".join(allowed), status in allowed, f"{status}")


class ProtectionParams(OracleParams):
    mode: Literal["MAXIMUM PROTECTION", "MAXIMUM AVAILABILITY", "MAXIMUM PERFORMANCE"] | None = (
        Field(default=None, description="The PROTECTION_MODE expected; none: any.")
    )
    level_matches: bool = Field(
        default=True,
        description="PROTECTION_LEVEL must equal PROTECTION_MODE (a lower level means the "
        "configuration is not protected as configured, e.g. RESYNCHRONIZATION).",
    )


def protection(probe: Probe, role: str, params: ProtectionParams) -> Observation:
    """Protection mode and level (V$DATABASE): the mode configured, and the level it reaches."""
    db = database(probe, role)
    mode, level = db["protection_mode"], db["protection_level"]
    held = (params.mode is None or mode == params.mode) and (
        not params.level_matches or level == mode
    )
    parts: list[str] = [params.mode or "any mode"]
    if params.level_matches:
        parts.append("level = mode")
    observed = {"protection_mode": mode, "protection_level": level}
    return Observation(observed, ", ".join(parts), held, f"mode {mode}, level {level}")


class FlashbackParams(OracleParams):
    accept_restore_point_only: bool = Field(
        default=False, description="Whether RESTORE POINT ONLY counts as on."
    )


def flashback_on(probe: Probe, role: str, params: FlashbackParams) -> Observation:
    """Flashback Database is on (V$DATABASE.FLASHBACK_ON): a failed primary can be reinstated."""
    value = database(probe, role)["flashback_on"]
    accepted = ["YES", "RESTORE POINT ONLY"] if params.accept_restore_point_only else ["YES"]
    return Observation(value, " or ".join(accepted), value in accepted, value)


def force_logging(probe: Probe, role: str, params: OracleParams) -> Observation:
    """Force logging is on (V$DATABASE.FORCE_LOGGING): no NOLOGGING change escapes the standby."""
    value = database(probe, role)["force_logging"]
    return Observation(value, "YES", value == "YES", value)


# -- writes --------------------------------------------------------------------------------------


def rejects_writes(probe: Probe, role: str, params: NoParams) -> Observation:
    """Fencing: the database cannot take writes (unreachable, a standby, or not open read write)."""
    try:
        db = database(probe, role)
    except ConnectionFailed as exc:
        return Observation("unreachable", "cannot take writes", True, exc.message)
    writable = db["database_role"] == "PRIMARY" and db["open_mode"] == "READ WRITE"
    observed = f"{db['database_role']}, {db['open_mode']}"
    return Observation(observed, "cannot take writes", not writable, observed)


HEARTBEAT_TABLE = "drctl_heartbeat"
HEARTBEAT_SQL = (
    "MERGE INTO drctl_heartbeat h USING (SELECT :node AS node FROM dual) s ON (h.node = s.node)"
    " WHEN MATCHED THEN UPDATE SET h.at = SYSTIMESTAMP"
    " WHEN NOT MATCHED THEN INSERT (node, at) VALUES (s.node, SYSTIMESTAMP)"
)
HEARTBEAT_DDL = (
    "BEGIN EXECUTE IMMEDIATE 'CREATE TABLE drctl_heartbeat (node VARCHAR2(128) PRIMARY KEY,"
    " at TIMESTAMP WITH TIME ZONE NOT NULL)'; EXCEPTION WHEN OTHERS THEN"
    " IF SQLCODE != -955 THEN RAISE; END IF; END;"
)


def takes_writes(probe: Probe, role: str, params: NoParams) -> Observation:
    """A real write, committed: a heartbeat row in drctl_heartbeat (made if missing), in the
    user's own schema (without the SYSDG privilege the node's checks may connect with)."""
    name, _ = probe.node(role)
    session = probe.sql(role)
    writer = getattr(session, "writer", None)
    sql = writer() if callable(writer) else session
    try:
        try:
            sql.query(HEARTBEAT_SQL, {"node": name}, timeout=5)
        except CommandFailed as exc:
            if MISSING_VIEW not in oracle_codes(exc):
                raise
            sql.query(HEARTBEAT_DDL, timeout=10)
            sql.query(HEARTBEAT_SQL, {"node": name}, timeout=5)
    except DrillError as exc:
        return Observation("write failed", "a committed write", False, exc.message)
    return Observation("committed", "a committed write", True, f"heartbeat of {name} committed")


def oracle_access(probe: Probe, role: str) -> tuple[str, Any]:
    """The node's name and its ``oracle:`` section (an InputError if it has none)."""
    name, node = probe.node(role)
    access = getattr(node, "oracle", None)
    if access is None:
        raise InputError(f"node {name} (role {role}) has no oracle section", host=name)
    return name, access
