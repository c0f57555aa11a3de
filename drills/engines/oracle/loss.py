"""What an Oracle Data Guard failover may have lost, and what of it is known exactly:
``oracle.record_lag_before_failover`` and ``oracle.account_for_loss`` (what ``db.count_lost_
transactions`` runs on Oracle).

On PostgreSQL every lost transaction is counted from the old primary's WAL
(``drills.engines.postgres.walloss``). The Oracle counterpart would read the old primary's redo
with LogMiner past the SCN at which the standby became primary, before it is reinstated (the
reinstatement flashes that redo away); drctl does not. What it reads instead, and how exact each
part is:

- **exact**: the SCN at which the standby became primary (``V$DATABASE.STANDBY_BECAME_PRIMARY_
  SCN`` on the new primary, after the failover): every change the old primary made after it is
  lost. A DGMGRL ``FAILOVER`` (not ``IMMEDIATE``, the only one ``oracle.dg_failover`` runs) first
  applies all the redo the standby received, so the apply lag adds no loss, only failover time.
- **a bound**: the window of possible loss, in time. Before the failover, with the old primary
  fenced (it generates no more redo), the standby's ``V$DATAGUARD_STATS`` gives its transport
  lag (redo generated and not received, as of the last datum from the primary) and
  ``DATUM_TIME`` (when that datum came). Whatever the old primary committed and the standby
  never received lies within ``transport lag + (TIME_COMPUTED - DATUM_TIME)`` of its end: the
  second term is Oracle's own "potential data loss from the last datum time" (``V$DATAGUARD_
  STATS``), and covers redo made after the last datum, up to when the primary stopped. Both are
  computed by the standby to the second. That bound is the RPO, labelled a bound.
- **not known**: how many transactions were lost and which; the canary's lost rows are a lower
  bound of it (merged by ``drills.model.record.merge_measurements``).
- **a cross-check**: the old primary's last redo SCN (``V$THREAD.LAST_REDO_CHANGE#``, from its
  control file, read with SQL*Plus on its host when its instance is open or mounted; with
  ``mount: true`` a down instance is started MOUNT for it, as the reinstatement would). Redo past
  the SCN at which the standby became primary means changes were lost (committed or not); with a
  bound of 0 that contradicts the bound, which is then not trusted.

When the window cannot be bounded (no reading before the failover, a NULL transport lag, no
DATUM_TIME, the old primary still open read write after the failover, a contradiction), the
accounting is ``lower_bound``: the canary's figures, labelled as such, and why.

The readings before the failover are kept in the run's state of the standby's node
(``drills.engines.postgres.runstate``, key ``oracle_loss_before``, with the run's id so that a
reading of an earlier run is never taken for this one's). The parsing and the decision are pure
functions (``parse_stats``, ``parse_redo``, ``window_of``, ``decide``), tested on the recorded
outputs of ``tests/fixtures/oracle/views/``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from drills.engine.catalogue import ActionResult, ActionSpec, Params
from drills.engine.targets import Targets
from drills.engines.oracle import parsers
from drills.engines.oracle.tools import (
    ENGINE,
    describe_sqlplus,
    instance_state,
    oracle_node,
    sql_checked,
    sqlplus,
    tool_failed,
)
from drills.engines.postgres.runstate import load_state, update_state
from drills.model.durations import Duration
from drills.model.errors import DrillError
from drills.model.record import LossAccounting, LostTransactions
from verify.oracle_dataguard import STATS_SQL, STATS_TIME_FORMAT, interval_seconds

STATE_KEY = "oracle_loss_before"
DATABASE_SQL = "SELECT database_role, open_mode, current_scn, protection_level FROM v$database"
BECAME_SQL = "SELECT standby_became_primary_scn, database_role FROM v$database"
# One line per redo thread, tagged so that SQL*Plus's other lines are never taken for it.
REDO_SQL = (
    "SELECT 'drctl-redo '||t.thread#||' '||t.last_redo_change#||' '||"
    "TO_CHAR(t.last_redo_time,'YYYY-MM-DD\"T\"HH24:MI:SS')||' '||d.current_scn||' '||"
    "REPLACE(d.open_mode,' ','_')||' '||REPLACE(d.database_role,' ','_') "
    "FROM v$thread t, v$database d;"
)
QUIET = "SET HEADING OFF FEEDBACK OFF PAGESIZE 0 LINESIZE 300"
NOT_COUNTED = (
    "not known: how many transactions were lost and which (no redo of the old primary is read: "
    "LogMiner on its redo before it is reinstated would count them)"
)
CANARY_LOWER = "a lower bound: the canary's lost rows"


# -- V$DATAGUARD_STATS ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lag:
    """One lag metric of V$DATAGUARD_STATS as the standby computed it."""

    metric: str
    value: str
    seconds: float | None
    time_computed: str
    datum_time: str

    @property
    def datum_age(self) -> float | None:
        """Seconds from the last datum from the primary to the computation (None: no
        DATUM_TIME, or a time that does not read)."""
        at, then = _stats_time(self.time_computed), _stats_time(self.datum_time)
        if at is None or then is None:
            return None
        return max(0.0, (at - then).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "datum_age_seconds": self.datum_age}


def _stats_time(value: str) -> datetime | None:
    try:
        return datetime.strptime(value.strip(), STATS_TIME_FORMAT)
    except ValueError:
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def parse_stats(rows: list[tuple[Any, ...]]) -> dict[str, Lag]:
    """The lag metrics of V$DATAGUARD_STATS rows (name, value, unit, time_computed,
    datum_time), by lower-case name ('transport lag', 'apply lag'); other metrics are kept too."""
    found: dict[str, Lag] = {}
    for row in rows:
        name, value, _unit, computed, datum = (_text(v) for v in (*row, None, None, None)[:5])
        found[name.lower()] = Lag(name.lower(), value, interval_seconds(value), computed, datum)
    return found


@dataclass(frozen=True)
class Window:
    """The window of possible loss: at most ``seconds``, or not bounded (``why``)."""

    seconds: float | None
    why: str = ""
    transport: float | None = None
    datum_age: float | None = None


def window_of(transport: Lag | None) -> Window:
    """The bound a transport lag reading gives, taken with the old primary fenced: the lag plus
    the age of the last datum from the primary (redo made after it was never seen)."""
    if transport is None:
        return Window(None, "V$DATAGUARD_STATS had no transport lag row (not a standby?)")
    if transport.seconds is None:
        return Window(
            None,
            f"its transport lag was not computed ({transport.value or 'NULL'}), as while it "
            "waits for a gap",
        )
    age = transport.datum_age
    if age is None:
        return Window(
            None,
            "V$DATAGUARD_STATS gave no DATUM_TIME, so whether the standby still heard from the "
            "primary is not known",
            transport.seconds,
        )
    return Window(round(transport.seconds + age, 3), "", transport.seconds, age)


# -- the old primary's redo, through SQL*Plus ----------------------------------------------------


@dataclass(frozen=True)
class Redo:
    """The old primary's last redo as its control file has it, and what it is now."""

    last_scn: int | None
    last_time: str | None
    current_scn: int | None
    open_mode: str
    database_role: str
    threads: int


_REDO = re.compile(r"drctl-redo (\d+) (\d*) (\S*) (\d*) (\S+) (\S+)")


def parse_redo(output: str) -> Redo | None:
    """The tagged lines of ``REDO_SQL`` (one per thread): the highest last redo SCN."""
    found = _REDO.findall(output)
    if not found:
        return None
    scns = [int(scn) for _, scn, _, _, _, _ in found if scn]
    last = max(scns) if scns else None
    at = next((when for _, scn, when, _, _, _ in found if scn and int(scn) == last), None)
    current = found[0][3]
    return Redo(
        last_scn=last,
        last_time=at or None,
        current_scn=int(current) if current and int(current) > 0 else None,
        open_mode=found[0][4].replace("_", " "),
        database_role=found[0][5].replace("_", " "),
        threads=len(found),
    )


# -- the decision --------------------------------------------------------------------------------


@dataclass
class Decision:
    lost: LostTransactions
    sentence: str


@dataclass
class After:
    """What was read after the failover."""

    new_primary: str
    old_primary: str
    became_scn: int | None = None
    became_why: str = ""
    redo: Redo | None = None
    redo_why: str = ""
    notes: list[str] = field(default_factory=list)


def _seconds(value: float) -> str:
    return f"{value:g}"


def decide(before: dict[str, Any] | None, after: After) -> Decision:
    """The accounting from the readings before the failover (``before``, as
    ``record_lag_run`` keeps them; None: none in this run) and after it."""
    old, new = after.old_primary, after.new_primary
    exact: list[str] = []
    if after.became_scn is not None:
        exact.append(
            f"exact: the SCN at which {new} became primary, {after.became_scn} "
            "(V$DATABASE.STANDBY_BECAME_PRIMARY_SCN): everything the old primary changed after "
            "it is lost"
        )
    exact.append(NOT_COUNTED)
    note = list(after.notes)
    if after.became_why:
        note.append(after.became_why)
    if after.redo_why:
        note.append(after.redo_why)
    transport = apply = None
    if before is not None:
        lags = parse_stats_dicts(before.get("lags", {}))
        transport, apply = lags.get("transport lag"), lags.get("apply lag")
    if before is None:
        window = Window(
            None,
            "the standby's lag was not read before the failover (no "
            "oracle.record_lag_before_failover step ran in this run)",
        )
    elif before.get("unreadable"):
        window = Window(None, f"the standby's lag could not be read: {before['unreadable']}")
    else:
        window = window_of(transport)
    redo = after.redo
    if (
        window.seconds is not None
        and redo is not None
        and redo.database_role == "PRIMARY"
        and redo.open_mode == "READ WRITE"
    ):
        window = Window(
            None,
            f"the old primary {old} was still open read write after the failover: it may have "
            "gone on committing after the lag was read",
        )
    past = (
        redo is not None
        and redo.last_scn is not None
        and after.became_scn is not None
        and redo.last_scn > after.became_scn
    )
    if past and redo is not None and redo.last_scn is not None:
        clause = (
            f"the old primary's last redo SCN {redo.last_scn} is past the SCN {after.became_scn} "
            f"at which {new} became primary: changes were lost (committed or not)"
        )
        if window.seconds == 0:
            window = Window(None, f"{clause}, although the transport lag showed no window")
        else:
            note.append(clause)
    elif redo is not None and redo.last_scn is not None and after.became_scn is not None:
        note.append(
            f"the old primary's last redo SCN {redo.last_scn} (its control file) is not past the "
            f"SCN {after.became_scn} at which {new} became primary"
        )
    if window.seconds is not None:
        assert window.transport is not None and window.datum_age is not None
        exact.append(
            f"a bound: the window of possible loss is at most {_seconds(window.seconds)}s "
            f"(transport lag {_seconds(window.transport)}s, last datum from the primary "
            f"{_seconds(window.datum_age)}s before the lag was computed, as V$DATAGUARD_STATS "
            "gives them, to the second)"
        )
        accounting: LossAccounting = "bound"
    else:
        exact.append(f"not bounded: {window.why}")
        accounting = "lower_bound"
    exact.append(CANARY_LOWER)
    readings: dict[str, Any] = {
        "before_failover": before,
        "after_failover": {
            "new_primary": new,
            "standby_became_primary_scn": after.became_scn,
            "old_primary": old,
            "old_primary_redo": asdict(redo) if redo is not None else None,
        },
        "window_seconds": window.seconds,
    }
    if apply is not None and apply.seconds:
        note.append(
            f"the apply lag was {_seconds(apply.seconds)}s: a complete failover applies it "
            "first, so it lengthens the failover and loses nothing"
        )
    lost = LostTransactions(
        loss_accounting=accounting,
        count=None,
        node=old,
        engine=ENGINE,
        switch_scn=after.became_scn,
        rpo_seconds=window.seconds,
        what_is_exact="; ".join(exact),
        readings=readings,
        note="; ".join(note),
    )
    if window.seconds is not None:
        sentence = (
            f"{old} may have lost what it committed in at most {_seconds(window.seconds)}s "
            f"before it stopped (the transport lag of {new} at failover, with the age of its "
            f"last datum); {new} became primary at SCN {after.became_scn or '?'}; the lost "
            "transactions are not counted on Oracle"
        )
    else:
        sentence = (
            f"the loss of {old} is not bounded ({window.why}): the canary's figures are a "
            "lower bound"
        )
    return Decision(lost, sentence)


# -- oracle.record_lag_before_failover -----------------------------------------------------------


def read_before(targets: Targets, role: str, timeout: float) -> dict[str, Any]:
    """The standby's lags and SCN now (never raises: what could not be read says why)."""
    name, _ = targets.node(role)
    reading: dict[str, Any] = {
        "run_id": targets.run_id,
        "node": name,
        "read_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "lags": {},
    }
    session = targets.sql(role)
    try:
        rows = session.query(STATS_SQL, timeout=timeout)
    except DrillError as exc:
        reading["unreadable"] = f"v$dataguard_stats: {exc.message}"
        return reading
    reading["lags"] = {k: v.as_dict() for k, v in parse_stats(rows).items()}
    try:
        found = session.query(DATABASE_SQL, timeout=timeout)
    except DrillError as exc:
        reading["database_unreadable"] = exc.message
        return reading
    if found:
        role_now, mode, scn, level = found[0]
        reading.update(
            database_role=_text(role_now),
            open_mode=_text(mode),
            applied_scn=int(scn) if scn else None,
            protection_level=_text(level),
        )
    return reading


def record_lag_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    reading = read_before(targets, role, min(timeout, 30.0))
    name = reading["node"]
    update_state(targets.env.name, name, **{STATE_KEY: reading})
    if reading.get("unreadable"):
        return ActionResult(
            f"the lag of {name} could not be read ({reading['unreadable']}): the loss will not "
            "be bounded",
            {"lag_before_failover": reading},
        )
    window = window_of(parse_stats_dicts(reading["lags"]).get("transport lag"))
    shown = (
        f"at most {_seconds(window.seconds)}s of redo may be lost"
        if window.seconds is not None
        else f"the loss cannot be bounded: {window.why}"
    )
    lags = ", ".join(
        f"{k} {v['value'] or 'NULL'} (computed {v['time_computed'] or '?'}, datum "
        f"{v['datum_time'] or '?'})"
        for k, v in reading["lags"].items()
        if k in ("transport lag", "apply lag")
    )
    scn = reading.get("applied_scn")
    return ActionResult(
        f"{name}: {lags or 'no lag rows'}; applied SCN {scn if scn else '?'}: {shown}",
        {"lag_before_failover": reading},
    )


def parse_stats_dicts(lags: dict[str, dict[str, Any]]) -> dict[str, Lag]:
    return {k: Lag(**{f: v[f] for f in Lag.__dataclass_fields__}) for k, v in lags.items()}


def record_lag_describe(targets: Targets, role: str, params: Params) -> list[str]:
    name, _ = targets.node(role)
    return [
        f"SQL on {name}: {STATS_SQL}",
        f"SQL on {name}: {DATABASE_SQL}",
        f"kept in the run's state of {name} for oracle.account_for_loss",
    ]


# -- oracle.account_for_loss ---------------------------------------------------------------------


class AccountParams(Params):
    source: str = Field(
        description="Role of the new primary: its STANDBY_BECAME_PRIMARY_SCN is read, and the "
        "lag its node had before the failover (oracle.record_lag_before_failover)."
    )
    mount: bool = Field(
        default=False,
        description="Start the old primary MOUNT (SQL*Plus STARTUP MOUNT on its host) if its "
        "instance is down, to read its last redo SCN from its control file; it takes no writes "
        "mounted, and its reinstatement mounts it anyway.",
    )
    startup_timeout: Duration = Field(default=300.0, description="For that STARTUP MOUNT.")


def _before(targets: Targets, source: str) -> dict[str, Any] | None:
    name, _ = targets.node(source)
    entry = load_state(targets.env.name, name).get(STATE_KEY)
    if not isinstance(entry, dict) or entry.get("run_id") != targets.run_id:
        return None  # none, or an earlier run's: never this run's reading
    return entry


def _became(targets: Targets, source: str, after: After) -> None:
    try:
        rows = targets.sql(source).query(BECAME_SQL, timeout=30)
    except DrillError as exc:
        after.became_why = f"the SCN at which it became primary could not be read: {exc.message}"
        return
    scn = rows[0][0] if rows else None
    if scn:
        after.became_scn = int(scn)
    else:
        after.became_why = (
            f"{after.new_primary} gives no STANDBY_BECAME_PRIMARY_SCN "
            f"({_text(rows[0][1]) if rows else 'no row'})"
        )


def _redo(targets: Targets, role: str, params: AccountParams, after: After) -> None:
    old = oracle_node(targets, role)
    try:
        state = instance_state(old, timeout=60)
        if state == "down" and params.mount:
            started = sqlplus(old, "STARTUP MOUNT", timeout=params.startup_timeout)
            sql_checked(started, "STARTUP MOUNT")
            after.notes.append(f"{old.name} was started MOUNT to read its control file")
            state = "MOUNTED"
        if state == "down":
            after.redo_why = f"the instance of {old.name} is down: its last redo SCN was not read"
            return
        run = sqlplus(old, QUIET, REDO_SQL, timeout=60)
    except DrillError as exc:
        after.redo_why = f"{old.name} could not be queried on its host: {exc.message}"
        return
    redo = parse_redo(run.output)
    if redo is None:
        errors = parsers.parse_sqlplus(run.output).errors
        failed = tool_failed(run, "SELECT ... FROM v$thread, v$database", errors, {})
        after.redo_why = f"its last redo SCN could not be read: {failed.message}"
        return
    after.redo = redo


def account_run(targets: Targets, role: str, params: AccountParams, timeout: float) -> ActionResult:
    old, _ = targets.node(role)
    new, _ = targets.node(params.source)
    after = After(new_primary=new, old_primary=old)
    _became(targets, params.source, after)
    _redo(targets, role, params, after)
    decision = decide(_before(targets, params.source), after)
    data: dict[str, Any] = {
        "measurements": {"lost_transactions": decision.lost.model_dump()},
        "loss_accounting": decision.lost.loss_accounting,
    }
    return ActionResult(decision.sentence, data)


def account_describe(targets: Targets, role: str, params: AccountParams) -> list[str]:
    new, _ = targets.node(params.source)
    old, _ = targets.node(role)
    return [
        f"SQL on {new}: {BECAME_SQL}",
        f"the lag {new} had before the failover (oracle.record_lag_before_failover, this run)",
        *(
            [f"if {old} is down:", *describe_sqlplus(targets, role, "STARTUP MOUNT")]
            if params.mount
            else []
        ),
        *describe_sqlplus(targets, role, QUIET, REDO_SQL),
    ]


def loss_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            "oracle.record_lag_before_failover",
            Params,
            record_lag_run,
            record_lag_describe,
            False,
            "Read the standby's transport and apply lag (V$DATAGUARD_STATS, with TIME_COMPUTED "
            "and DATUM_TIME) and applied SCN before the failover, for oracle.account_for_loss.",
            ENGINE,
        ),
        ActionSpec(
            "oracle.account_for_loss",
            AccountParams,
            account_run,
            account_describe,
            False,
            "Account for what the failover may have lost: the SCN at which the standby became "
            "primary (exact), the window of possible loss bounded by its transport lag at "
            "failover (a bound), the canary's lost rows (a lower bound); the count is not known "
            "without LogMiner.",
            ENGINE,
        ),
    ]
