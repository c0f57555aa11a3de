"""The drill record: what one run did, built from its journal alone.

Pure functions and models, no I/O. ``build_record(events)`` is the only way a record is made, so
a finished run and a run killed half-way are described by the same code; the second simply has no
``run_ended`` event and is marked ``interrupted``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drills.model.check import CheckResult
from drills.model.playbook import Objective

RECORD_SCHEMA = "drctl.record/1"
RunStatus = Literal["passed", "failed", "aborted", "interrupted", "running"]
StepStatus = Literal["passed", "failed", "skipped", "overridden"]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class StepOffsets(Model):
    started: float
    returned: float | None = None
    converged: float | None = None
    ended: float


class StepRecord(Model):
    id: str
    phase: Literal["main", "rollback"] = "main"
    title: dict[str, str] | None = None
    action: str
    target: str
    node: str
    status: StepStatus
    attempts: int
    started_at: str
    returned_at: str | None = None
    converged_at: str | None = None
    ended_at: str
    offsets: StepOffsets
    duration_seconds: float
    output: str = ""
    data: dict[str, Any] = Field(
        default_factory=dict, description="What the action measured or produced, as values."
    )
    error: str | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    milestone: str | None = None
    override: str | None = None
    reason: str = ""


class Milestone(Model):
    name: str
    at: str
    offset: float
    step: str | None = None


class ObjectiveResult(Model):
    name: str
    target_seconds: float
    measured_seconds: float | None
    met: bool
    basis: str
    source: str = ""
    note: str = ""


class WriteOutage(Model):
    seconds: float | None
    last_write_at: str | None = None
    last_write_node: str | None = None
    first_write_at: str | None = None
    first_write_node: str | None = None
    attempts: int = 0
    failures: int = 0
    note: str = ""


class CanaryResult(Model):
    written: int
    acknowledged: int
    lost: int
    lost_seqs: list[int] = Field(default_factory=list)
    checked_on: str | None = None
    rpo_seconds: float | None
    last_acknowledged_at: str | None = None
    newest_surviving_at: str | None = None
    note: str = ""


LossAccounting = Literal["exact", "bound", "lower_bound"]
MAX_LISTED_TRANSACTIONS = 5000  # lost transactions listed one by one; the count is never cut


class LostTransaction(Model):
    """One transaction the old primary committed that the new primary never had."""

    xid: int
    committed_at: str | None = Field(default=None, description="UTC, from its COMMIT record.")
    lsn: str = Field(description="Where its COMMIT record is in the old primary's WAL.")
    tables: list[str] = Field(
        default_factory=list,
        description="Tables its WAL records past the switch point touched (indexes and TOAST "
        "are named by their table), resolved through the new primary's catalogue.",
    )


class WalSegmentCopy(Model):
    """A WAL segment of the old primary kept as evidence, copied before it was rewound."""

    name: str
    path: str = Field(description="Where the copy is, on drctl's machine.")
    size: int
    sha256: str


class LostTransactions(Model):
    """What a failover lost, and how it was counted.

    ``exact``: every COMMIT in the old primary's WAL past the switch point (where the new
    primary's timeline forked), read with pg_waldump before the old primary was rewound; the
    RPO is the time from the last commit that survived to the last commit of the old primary,
    both read from that WAL. ``lower_bound``: that WAL could not be read (``note`` says why),
    and the figures are the canary's, which only samples the writes: at least that many.
    ``bound`` (Oracle, ``drills.engines.oracle.loss``): the count is not known (no redo of the
    old primary is read), the window of possible loss is at most ``rpo_seconds`` (the standby's
    transport lag at failover), ``count`` is the canary's (at least that many), and
    ``what_is_exact`` says which figure is which.
    """

    loss_accounting: LossAccounting
    count: int | None = Field(
        description="exact: the transactions lost; lower_bound: at least this many (canary)."
    )
    transactions: list[LostTransaction] = Field(
        default_factory=list,
        description=f"Each lost transaction (the first {MAX_LISTED_TRANSACTIONS}).",
    )
    tables: dict[str, int] = Field(
        default_factory=dict, description="Lost transactions per table they touched."
    )
    node: str | None = Field(default=None, description="The old primary.")
    timeline: int | None = Field(default=None, description="The old primary's timeline.")
    new_timeline: int | None = None
    switch_lsn: str | None = Field(
        default=None, description="Where the new primary's timeline forked from the old one."
    )
    end_lsn: str | None = Field(default=None, description="The end of the old primary's WAL.")
    last_surviving_commit_at: str | None = None
    last_lost_commit_at: str | None = None
    rpo_seconds: float | None = None
    wal_segments: list[WalSegmentCopy] = Field(default_factory=list)
    note: str = ""
    engine: str = Field(default="postgres", description="The engine that accounted for it.")
    switch_scn: int | None = Field(
        default=None,
        description="Oracle: the SCN at which the standby became primary (exact).",
    )
    what_is_exact: str = Field(
        default="", description="What in this accounting is exact, a bound, or not known."
    )
    readings: dict[str, Any] = Field(
        default_factory=dict,
        description="Oracle: what was read to bound the loss (the standby's V$DATAGUARD_STATS "
        "before the failover, STANDBY_BECAME_PRIMARY_SCN, the old primary's last redo SCN).",
    )


class Measurements(Model):
    write_outage_seconds: float | None = None
    service_outage_seconds: float | None = None
    lost_writes: int | None = Field(
        default=None,
        description="Writes lost: the exact count of lost transactions when the old primary's "
        "WAL was read (lost_transactions), else the canary's (a lower bound).",
    )
    rpo_seconds: float | None = None
    write_probe: WriteOutage | None = None
    service_probe: WriteOutage | None = None
    canary: CanaryResult | None = Field(
        default=None, description="The canary writer's own figures: a sample of the writes."
    )
    lost_transactions: LostTransactions | None = None


def _joined(*sentences: str) -> str:
    return "; ".join(s for s in sentences if s)


def merge_measurements(base: Measurements, updates: Iterable[dict[str, Any]]) -> Measurements:
    """The run's measurements: what its instruments took (``base``), with what its steps
    measured merged over them (each a step's data key ``measurements``, holding Measurements
    fields; later steps win, unknown keys are ignored), then the loss figures reconciled.

    When a step counted the lost transactions from the old primary's WAL (``exact``), that
    count and its RPO are the run's ``lost_writes`` and ``rpo_seconds``; the canary keeps its
    own figures as a sample. A canary that lost more acknowledged writes than the WAL showed
    contradicts the count, which is then not trusted. When the WAL could not be read
    (``lower_bound``), the canary's figures are given, labelled as a lower bound.
    """
    data = base.model_dump()
    for update in updates:
        data.update({k: v for k, v in update.items() if k in Measurements.model_fields})
    merged = Measurements.model_validate(data)
    lost = merged.lost_transactions
    if lost is None:
        return merged
    canary = merged.canary
    canary_lost = canary.lost if canary is not None and canary.rpo_seconds is not None else None
    canary_rpo = canary.rpo_seconds if canary is not None else None
    if lost.loss_accounting == "bound" and lost.rpo_seconds is not None:
        # Oracle: the window is bounded, the count is the canary's (at least). A canary that
        # lost a write the bound rules out (its lag is read to the second) contradicts it.
        window = lost.rpo_seconds
        contradicted = bool(canary_lost) and (
            window == 0 or (canary_rpo is not None and canary_rpo > window + 1.0)
        )
        if not contradicted:
            note = lost.note
            if canary_lost is not None:
                note = _joined(
                    note,
                    f"the canary's figures are a lower bound: at least {canary_lost} writes lost, "
                    f"RPO at least {canary_rpo:g}s",
                )
            return merged.model_copy(
                update={
                    "lost_transactions": lost.model_copy(
                        update={"count": canary_lost, "note": note}
                    ),
                    "lost_writes": canary_lost,
                    "rpo_seconds": window,
                }
            )
        note = _joined(
            lost.note,
            f"the canary lost {canary_lost} acknowledged writes over {canary_rpo:g}s, more than "
            f"the window of at most {window:g}s the transport lag allowed: that bound is not "
            "trusted",
        )
    elif lost.loss_accounting == "exact" and lost.count is not None:
        if canary_lost is None or canary_lost <= lost.count:
            return merged.model_copy(
                update={"lost_writes": lost.count, "rpo_seconds": lost.rpo_seconds}
            )
        note = _joined(
            lost.note,
            f"the canary lost {canary_lost} acknowledged writes, more than the {lost.count} "
            "transactions found in the WAL: that count is not trusted",
        )
    else:
        note = lost.note
    if canary_lost is None:
        note = _joined(note, "no canary figure either: the loss is unknown")
    else:
        note = _joined(
            note,
            f"the canary's figures are a lower bound: at least {canary_lost} writes lost, "
            f"RPO at least {canary_rpo:g}s",
        )
    bound = lost.model_copy(
        update={
            "loss_accounting": "lower_bound",
            "count": canary_lost,
            "rpo_seconds": canary_rpo,
            "note": note,
        }
    )
    return merged.model_copy(
        update={"lost_transactions": bound, "lost_writes": canary_lost, "rpo_seconds": canary_rpo}
    )


class Record(Model):
    schema_: str = Field(default=RECORD_SCHEMA, alias="schema")
    id: str
    status: RunStatus
    reason: str
    mode: str
    rolled_back: bool = False
    playbook: dict[str, Any]
    environment: dict[str, Any]
    roles: dict[str, str] = Field(default_factory=dict)
    request: dict[str, Any] = Field(default_factory=dict)
    orchestrator: dict[str, Any] = Field(default_factory=dict)
    started_at: str
    ended_at: str | None
    duration_seconds: float | None
    preconditions: list[CheckResult] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    milestones: list[Milestone] = Field(default_factory=list)
    objectives: list[ObjectiveResult] = Field(default_factory=list)
    measurements: Measurements = Field(default_factory=Measurements)
    overrides_used: list[str] = Field(default_factory=list)
    approval: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)
    interruptions: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Each time the run was stopped by a signal: which, where, the state it left "
        "(nodes down, roles unfilled) and the commands that come next.",
    )
    resumptions: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Each time an interrupted run was continued (drctl resume) or undone (drctl "
        "abort): by whom, the roles then, the checks asked, and from which step.",
    )
    left: dict[str, Any] | None = Field(
        default=None,
        description="What a run that changed something and did not pass (failed, aborted) "
        "left, observed as it ended: each node's role, the nodes down, the roles of the pair "
        "nobody fills, whether each standby streams (state), the commands to run next (next), "
        "and the sentence that says it (also among the notes).",
    )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


def evaluate_objectives(
    objectives: dict[str, Objective], milestones: list[Milestone], measurements: Measurements
) -> list[ObjectiveResult]:
    """Each objective: its target, what was measured, and whether it was met.

    Durations come from monotonic offsets. An objective whose milestones were not both reached,
    or whose measurement was not taken, is not met, and says why.
    """
    stamped = {m.name: m for m in milestones}
    results = []
    for name, objective in objectives.items():
        measured: float | None
        note = ""
        if objective.measure is not None:
            basis = f"measured: {objective.measure}"
            lost = measurements.lost_transactions if objective.measure == "rpo" else None
            if lost is not None:
                measured = measurements.rpo_seconds
                if lost.loss_accounting == "exact":
                    basis += f" ({lost.count} transactions lost, read from the old primary's WAL)"
                elif lost.loss_accounting == "bound" and measured is not None:
                    basis += (
                        f" (a bound: at most {measured:g}s of the old primary's redo had not "
                        "reached the standby at failover"
                        + (f"; at least {lost.count} canary writes lost" if lost.count else "")
                        + ")"
                    )
                    if measured > objective.target:
                        note = (
                            f"up to {measured:g}s of the old primary's commits may never have "
                            "reached the standby (its transport lag at failover): a loss within "
                            f"{objective.target:g}s cannot be shown"
                        )
                elif lost.count is not None:
                    basis += f" (a lower bound: at least {lost.count} canary writes lost)"
                if lost.loss_accounting == "lower_bound":
                    note = (
                        "the window of possible loss could not be bounded: only a lower bound "
                        "was measured, so the objective cannot be shown met"
                        if lost.engine == "oracle"
                        else "the old primary's WAL could not be read: only a lower bound was "
                        "measured, so the objective cannot be shown met"
                    )
            elif objective.measure == "rpo":
                measured = measurements.rpo_seconds
                if measurements.lost_writes:
                    basis += f" ({measurements.lost_writes} acknowledged canary writes lost)"
            elif objective.measure == "service_outage":
                measured = measurements.service_outage_seconds
            else:
                measured = measurements.write_outage_seconds
            if measured is None and not note:
                note = f"{objective.measure} was not measured in this run"
        else:
            assert objective.from_ is not None and objective.to is not None
            basis = f"{objective.from_} → {objective.to}"
            start, end = stamped.get(objective.from_), stamped.get(objective.to)
            if start is None or end is None:
                missing = [n for n, m in ((objective.from_, start), (objective.to, end)) if not m]
                measured = None
                note = f"milestone {', '.join(missing)} was not reached"
            else:
                measured = round(end.offset - start.offset, 3)
        met = measured is not None and measured <= objective.target
        if objective.measure == "rpo":
            lost = measurements.lost_transactions
            if objective.target == 0 and (measurements.lost_writes or (lost and lost.count)):
                met = False  # rpo 0: any transaction lost misses it, whatever the seconds say
            if lost is not None and lost.loss_accounting == "lower_bound":
                met = False
        results.append(
            ObjectiveResult(
                name=name,
                target_seconds=objective.target,
                measured_seconds=measured,
                met=met,
                basis=basis,
                source=objective.source,
                note=note,
            )
        )
    return results


def build_record(events: list[dict[str, Any]], *, alive: bool = False) -> Record:
    """The record of a run from its journal events (see ``drills.records.journal``)."""
    if not events or events[0].get("event") != "run_started":
        raise ValueError("a journal starts with a run_started event")
    head = events[0]
    steps: list[StepRecord] = []
    preconditions: list[CheckResult] = []
    milestones: list[Milestone] = []
    measurements = Measurements()
    roles: dict[str, str] = {}
    notes: list[str] = list(head.get("notes", []))
    end: dict[str, Any] | None = None
    approval: dict[str, Any] | None = None
    interruptions: list[dict[str, Any]] = []
    resumptions: list[dict[str, Any]] = []
    left: dict[str, Any] | None = None
    in_progress: str | None = None  # the step started and not finished (journals since resume)
    last_at = head["at"]
    for event in events[1:]:
        last_at = event.get("at", last_at)
        kind = event.get("event")
        if kind == "step_started":
            in_progress = str(event.get("step"))
        elif kind == "interrupted":
            interruptions.append({k: v for k, v in event.items() if k != "event"})
        elif kind == "left":
            left = {k: v for k, v in event.items() if k != "event"}
        elif kind == "run_resumed":
            resumptions.append({k: v for k, v in event.items() if k != "event"})
            end = None  # the run goes on: its earlier end (interrupted) is not its end
        elif kind == "roles":
            roles = event["roles"]
            notes += event.get("notes", [])
        elif kind == "preconditions":
            # Asked once before an approval and again after it: the record keeps both.
            preconditions += [CheckResult.model_validate(c) for c in event["checks"]]
        elif kind == "step":
            steps.append(StepRecord.model_validate(event["step"]))
            in_progress = None
        elif kind == "milestone":
            milestones.append(Milestone.model_validate(event["milestone"]))
        elif kind == "measurements":
            measurements = Measurements.model_validate(event["measurements"])
        elif kind == "approval":
            approval = event["approval"]
        elif kind == "note":
            notes.append(event["text"])
        elif kind == "run_ended":
            end = event
    objectives = evaluate_objectives(
        {k: Objective.model_validate(v) for k, v in head["objectives"].items()},
        milestones,
        measurements,
    )
    overrides_used = [s.override for s in steps if s.status == "overridden" and s.override]
    if end is not None:
        status: RunStatus = end["status"]
        reason = end["reason"]
        ended_at: str | None = end["at"]
        duration: float | None = end["offset"]
        rolled_back = bool(end.get("rolled_back", False))
    else:
        status = "running" if alive else "interrupted"
        done = ", ".join(s.id for s in steps) or "none"
        during = f" during step {in_progress}, whose outcome is unknown" if in_progress else ""
        reason = (
            "the run is still going"
            if alive
            else f"the run stopped without ending (killed or crashed){during}; steps "
            f"finished: {done}"
        )
        ended_at, duration, rolled_back = (None if alive else last_at), None, False
    return Record(
        id=head["run_id"],
        status=status,
        reason=reason,
        mode=head["mode"],
        rolled_back=rolled_back,
        playbook=head["playbook"],
        environment=head["environment"],
        roles=roles,
        request=head.get("request", {}),
        orchestrator=head.get("orchestrator", {}),
        started_at=head["at"],
        ended_at=ended_at,
        duration_seconds=duration,
        preconditions=preconditions,
        steps=steps,
        milestones=milestones,
        objectives=objectives,
        measurements=measurements,
        overrides_used=overrides_used,
        approval=approval,
        notes=notes,
        interruptions=interruptions,
        resumptions=resumptions,
        left=left,
    )
