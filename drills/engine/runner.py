"""The runner: one playbook against one environment, every step timed, verified and journaled.

The order of a run:

1. refuse what must not run (protected environment, unknown override, busy environment);
2. journal ``run_started``, then snapshot who is primary now (``roles``);
3. preconditions gate the run: if one does not hold, nothing is changed and the run is aborted
   (a precondition's ``modes`` say in which run modes it is asked, as a step's do);
4. start the canary writer and the write probe, if the playbook measures them;
5. each step: the action (with retries), then its checks polled until they hold or the deadline
   passes; a failure applies the step's policy (abort, continue, rollback);
6. rollback steps, in reverse order, when a step's policy asks for it; a rolled-back run fails;
7. stop the writers and measure; merge what steps measured (below); evaluate the objectives;
   journal ``run_ended``; write the record.

A step's action may measure something the background writers cannot: it returns it in its data
under the key ``measurements`` (a dict of ``Measurements`` fields, e.g. ``lost_transactions``
counted from the old primary's WAL), and the runner merges it over the writers' measurements
before the objectives are evaluated (``drills.model.record.merge_measurements``).

Each decision is one sentence, logged once and kept in the record's ``reason``.

``invoke`` wraps each step: the Prefect flow passes one that makes each step a task run named after
the step; tests and the benchmark's baseline call steps directly. ``gate`` wraps the asking of the
preconditions in the same way (named ``preconditions``, and ``preconditions_after_approval`` when
they are asked again after an approval).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import drills
from drills.engine.catalogue import Catalogue, default_catalogue
from drills.engine.checking import run_check
from drills.engine.human import HUMAN_ACTIONS, HumanHook, run_human_step
from drills.engine.instruments import Instruments, start_instruments, stop_instruments
from drills.engine.interruption import interruption_event, position_of
from drills.engine.listeners import Fanout, Progress
from drills.engine.loader import (
    LoadedPlaybook,
    load_playbook,
    resolve_environment,
    resolve_playbook,
)
from drills.engine.policy import (
    after_failure,
    check_request,
    missed_sentence,
    objectives_with_targets,
    rollback_plan,
)
from drills.engine.roles import discover_roles
from drills.engine.stopping import STOP, WAITING_ACTIONS, StopRequested
from drills.engine.targets import Connector, Targets
from drills.home import subdir
from drills.model.approval import Approval, refusal
from drills.model.check import CheckResult
from drills.model.clock import Clock, Stamp
from drills.model.environment import Environment
from drills.model.errors import DrillError
from drills.model.playbook import Mode, Step
from drills.model.record import (
    Milestone,
    Record,
    StepOffsets,
    StepRecord,
    build_record,
    evaluate_objectives,
    merge_measurements,
)
from drills.model.redact import redact_data, redact_model, register_environment
from drills.model.request import RunRequest
from drills.records.journal import Journal, JournalMove, JournalMoved
from drills.records.lock import EnvironmentLock
from drills.records.room import ensure_room
from drills.records.store import RecordStore

__all__ = ["RunRequest", "Runner", "check_request", "run_playbook"]

log = logging.getLogger("drctl")
OUTPUT_EXCERPT = 2000
PRECONDITION_WITHIN = 3.0


StepFn = Callable[[], StepRecord]
Approver = Callable[["RunRequest", str], Approval | None]
Invoker = Callable[[str, StepFn], StepRecord]
Gate = Callable[[str, Callable[[], list[CheckResult]]], list[CheckResult]]


def direct(step_id: str, fn: StepFn) -> StepRecord:
    return fn()


def direct_gate(name: str, fn: Callable[[], list[CheckResult]]) -> list[CheckResult]:
    return fn()


def new_run_id(playbook: str, environment: str, now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{playbook}-{environment}-{secrets.token_hex(2)}"


def environment_snapshot(env: Environment) -> dict[str, Any]:
    """What the record keeps of the environment: names and addresses, never secrets."""
    return {
        "name": env.name,
        "protected": env.protected,
        "nodes": {
            name: {
                "configured_role": node.role,
                "host": node.host,
                "port": node.port,
                "executor": node.executor,
            }
            for name, node in env.nodes.items()
        },
    }


class Runner:
    def __init__(
        self,
        request: RunRequest,
        *,
        invoke: Invoker = direct,
        gate: Gate = direct_gate,
        progress: Progress | list[Progress] | None = None,
        orchestrator: dict[str, Any] | None = None,
        store: RecordStore | None = None,
        interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit),
        approver: Approver | None = None,
        human: HumanHook | None = None,
        connector: Connector | None = None,
        catalogue: Catalogue | None = None,
        loaded: LoadedPlaybook | None = None,
        env: Environment | None = None,
    ) -> None:
        """``connector`` makes the executors of the nodes (default: the live ones; tests pass
        fakes); ``loaded``/``env`` may be given instead of being resolved from the request."""
        self.request = request
        self.catalogue = catalogue or default_catalogue()
        self.connector = connector
        self.loaded = loaded or load_playbook(resolve_playbook(request.playbook))
        self.playbook = self.loaded.playbook
        self.env = env or resolve_environment(request.environment)
        register_environment(self.env)  # its passwords are masked in journal, record and logs
        check_request(self.loaded, self.env, request)
        self.objectives = objectives_with_targets(self.playbook.objectives, request.objectives)
        self.invoke = invoke
        self.gate = gate
        self.interrupts = interrupts
        self.approver = approver
        self.human = human  # asks a person (drills.engine.human); None: drctl ack's file only
        self.progress = Fanout(
            progress if isinstance(progress, list) else [progress] if progress else []
        )
        self.orchestrator = orchestrator or {}
        self.store = store or RecordStore(subdir("records"), subdir("locks"))
        self.clock = Clock()
        self.run_id = new_run_id(self.playbook.name, self.env.name, self.clock.started_wall)
        self.milestones: list[Milestone] = []
        self.journal: Journal | None = None
        self.targets: Targets | None = None
        self.writers = Instruments()
        self.interrupted_note = ""  # kept in the lock when the run is interrupted

    # -- journal -----------------------------------------------------------------------------

    def event(self, kind: str, **fields: Any) -> None:
        """Append one event to the run's journal (redacted)."""
        self._event(kind, **fields)

    def _event(self, kind: str, **fields: Any) -> JournalMove | None:
        stamp = self.clock.now()
        event = {"event": kind, "at": stamp.at, "offset": stamp.offset, **fields}
        return self._append(redact_data(event))

    def _append(self, *events: dict[str, Any], again: bool = True) -> JournalMove | None:
        """Append events (together); when the journal could not take them and moved to a
        fallback place (``drills.records.journal``), say so and (``again``) append them there.
        The move, if any."""
        assert self.journal is not None
        try:
            self.journal.append_many(list(events))
        except JournalMoved as moved:
            sentence = moved.move.sentence()
            log.info(sentence)  # for the Prefect run's logs; the operator reads it on stderr now
            print(f"drctl: {sentence}", file=sys.stderr, flush=True)
            self._event("note", text=sentence)
            if again:
                self._append(*events)
            return moved.move
        return None

    def _journal_step(self, step: Step, record: StepRecord, moves_before: int) -> StepRecord:
        """Journal a step's record with its milestones, in one write. A step during which the
        journal could not be written (it moved) has failed, whatever its checks said: its
        failure policy runs (rollback), as for any failed step, since a run must not go on
        changing a site while the proof of what it did is at risk. Its record says where the
        journal is now."""
        assert self.journal is not None
        if len(self.journal.moves) == moves_before:
            events, marks = self._step_events(step, record)
            if self._append(*events, again=False) is None:
                self.milestones += marks
                return record
        why = self.journal.moves[-1].sentence()
        reason = f"{record.reason}; {why}" if record.status == "failed" and record.reason else why
        record = record.model_copy(update={"status": "failed", "reason": reason})
        events, marks = self._step_events(step, record)
        self._append(*events)
        self.milestones += marks
        return record

    def _step_events(
        self, step: Step, record: StepRecord
    ) -> tuple[list[dict[str, Any]], list[Milestone]]:
        """A step's journal events: its record, then the milestones it marks (redacted)."""
        stamp = self.clock.now()
        marks = [
            Milestone(name=name, at=when.at, offset=when.offset, step=step.id)
            for name, when in self._milestones_of(step, record)
        ]
        events = [
            {"event": "step", "at": stamp.at, "offset": stamp.offset, "step": record.model_dump()}
        ]
        events += [
            {
                "event": "milestone",
                "at": stamp.at,
                "offset": stamp.offset,
                "milestone": m.model_dump(),
            }
            for m in marks
        ]
        return [redact_data(e) for e in events], marks

    def _decide(self, sentence: str) -> str:
        log.info(sentence)
        return sentence

    def _mark(self, name: str, stamp: Stamp, step: str | None) -> None:
        milestone = Milestone(name=name, at=stamp.at, offset=stamp.offset, step=step)
        self.milestones.append(milestone)
        self._event("milestone", milestone=milestone.model_dump())

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> Record:
        ensure_room(self.store.dir)  # a full or read-only records disk refuses the run here
        lock = EnvironmentLock(subdir("locks"), self.env.name)
        lock.acquire(self.run_id, self.clock.started_wall)
        self.journal = Journal(self.store.journal_path(self.run_id))
        return self.guarded(lock, self._run)

    def guarded(self, lock: EnvironmentLock, body: Callable[[], Record]) -> Record:
        """Run ``body`` (the run, or its continuation) and end it whatever happens. A stop
        request ends it as interrupted (``drills.engine.stopping``), keeping the lock; so does
        one of ``interrupts``, which is raised again after (Prefect's TerminationSignal)."""
        interrupted = False
        try:
            with STOP.region("protected", "the run"):
                return body()
        except StopRequested as exc:
            interrupted = True
            return self._interrupted(exc)
        except self.interrupts as exc:
            interrupted = True
            self._interrupted(exc)
            raise
        except BaseException as exc:
            log.exception("drctl internal error")
            self._event("note", text="".join(traceback.format_exception_only(exc)).strip())
            self._end("failed", self._decide(f"drctl internal error: {exc!r}"))
            raise
        finally:
            self.writers.stop()
            if self.targets is not None:
                self.targets.close()
            if self.journal is not None:
                self.journal.close()
            if interrupted:
                lock.keep(self.interrupted_note or "interrupted")
            else:
                lock.release()

    def _run(self) -> Record:
        self._start()
        self.targets = Targets(self.env, {}, self.connector)
        self.targets.run_id = self.run_id
        try:
            role_map = discover_roles(self.targets, self.playbook.roles, self.catalogue)
        except DrillError as exc:
            return self._end("aborted", self._decide(f"roles could not be resolved: {exc}"))
        self._event("roles", roles=role_map.roles, observed=role_map.observed, notes=role_map.notes)
        self.progress.roles(role_map)
        self.targets.roles = role_map.roles
        self._reach_hosts()
        gate = self._preconditions("preconditions")
        if gate is not None:
            return self._end("aborted", gate)
        if self.env.protected and self.request.mode == "real":
            gate = self._approval()
            if gate is None:
                # The world may have moved while the run waited: ask again.
                gate = self._preconditions("preconditions_after_approval")
            if gate is not None:
                return self._end("aborted", gate)
        try:
            self.writers = start_instruments(
                self.playbook.measurements,
                self.targets,
                self.run_id,
                self.clock,
                self.catalogue,
            )
        except DrillError as exc:
            return self._end(
                "aborted",
                self._decide(f"the measurements could not start: {exc}; nothing was changed"),
            )
        return self._finish(*self._steps())

    def _finish(
        self, status: Literal["passed", "failed", "aborted"], reason: str, rolled_back: bool
    ) -> Record:
        """Stop the writers, measure, judge the objectives, end the run."""
        measurements = merge_measurements(
            stop_instruments(
                self.writers, self.playbook.measurements, self.env, self.run_id, self.clock
            ),
            self._step_measurements(),
        )
        self._event("measurements", measurements=measurements.model_dump())
        objectives = evaluate_objectives(self.objectives, self.milestones, measurements)
        if status == "passed":
            missed = [o for o in objectives if not o.met]
            if missed:
                status = "failed"
                reason = self._decide(missed_sentence(missed))
        return self._end(status, reason, rolled_back=rolled_back)

    def _interrupted(self, exc: BaseException) -> Record:
        """End the run as interrupted: where it stopped, the state it left, what comes next."""
        assert self.journal is not None
        with STOP.region("shielded", "the record"):
            self.interrupted_note, fields, reason = interruption_event(
                exc,
                position_of(self.journal.events()),
                self.run_id,
                self.env,
                self.playbook,
                self.connector,
                self.catalogue,
            )
            self._event("interrupted", **fields)
            return self._end("interrupted", self._decide(reason))

    def _start(self) -> None:
        pb = self.playbook
        self._event(
            "run_started",
            run_id=self.run_id,
            mode=self.request.mode,
            playbook={
                "name": pb.name,
                "version": pb.version,
                "kind": pb.kind.value,
                "title": pb.title.model_dump(),
                "sha256": self.loaded.sha256,
                "path": self.loaded.path,
            },
            environment=environment_snapshot(self.env),
            request=self.request.model_dump(mode="json"),
            objectives={k: v.model_dump(by_alias=True) for k, v in self.objectives.items()},
            orchestrator={
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "drctl": drills.__version__,
                **self.orchestrator,
            },
        )
        self._mark("run_started", Stamp(self.clock.now().at, 0.0), None)
        self.progress.started(self.run_id, self.loaded, self.env)

    def _reach_hosts(self) -> None:
        """Log in to the hosts of the nodes the playbook acts on before the first step, so no
        step's time includes a login. A host that cannot be reached is left to the step or
        check that needs it, which says so with its error."""
        assert self.targets is not None
        for name in dict.fromkeys(self.targets.roles.values()):
            try:
                self.targets.host_of(name).connect()
            except DrillError as exc:
                log.info("host of %s not reached before the steps: %s", name, exc)

    def _preconditions(self, name: str) -> str | None:
        results = self.gate(name, self._ask_preconditions)
        self._event("preconditions", checks=[r.model_dump() for r in results])
        self.progress.preconditions(results)
        moved = self.journal.moved if self.journal is not None else None
        if moved is not None:
            return self._decide(
                f"{moved.sentence()}; the run stopped before its first step: nothing was changed"
            )
        failed = [r for r in results if not r.held]
        if failed:
            first = failed[0]
            return self._decide(
                f"precondition {first.check} on {first.node} did not hold "
                f"(observed {first.observed!r}, expected {first.expected}"
                f"{'; ' + first.detail if first.detail else ''}); nothing was changed"
            )
        return None

    def _ask_preconditions(self) -> list[CheckResult]:
        """The preconditions' checks, asked again for up to PRECONDITION_WITHIN until all hold."""
        assert self.targets is not None
        deadline = time.monotonic() + PRECONDITION_WITHIN
        where = "while the preconditions were asked; nothing was changed"
        with STOP.waiting(where):  # they only read: a stop ends them at once
            while True:
                results = [
                    run_check(
                        c.check, c.target or "", c.with_, self.targets, self.clock, self.catalogue
                    )
                    for c in self.playbook.preconditions
                    if Mode(self.request.mode) in c.modes
                ]
                if all(r.held for r in results) or time.monotonic() > deadline:
                    return results
                STOP.pause(0.1, where)

    def _approval(self) -> str | None:
        """Get and judge the approval; a sentence saying why not, or None to go on."""
        approval = self.request.approval
        if approval is None and self.approver is not None:
            self.progress.approval_needed(self.run_id, self.env.name, self.playbook.name)
            with STOP.waiting("while the run waited for an approval; nothing was changed"):
                approval = self.approver(self.request, self.run_id)
            if approval is None:
                return self._decide(
                    f"no approval came within {self.request.approval_timeout}s; nothing was changed"
                )
        if approval is None:
            return self._decide(
                f"environment {self.env.name!r} is protected: a real run needs an approval "
                "(approver, ticket, the environment's name typed back, reason); nothing was "
                "changed"
            )
        self._event("approval", approval=approval.model_dump())
        why_not = refusal(approval, self.env.name)
        if why_not:
            return self._decide(f"{why_not}; nothing was changed")
        self._decide(
            f"approved by {approval.approver} ({approval.via}, ticket {approval.ticket}): "
            f"{approval.reason}"
        )
        return None

    def _steps(
        self,
        todo: list[Step] | None = None,
        started: set[str] | None = None,
        failures: list[StepRecord] | None = None,
    ) -> tuple[Literal["passed", "failed", "aborted"], str, bool]:
        """The steps (``todo``: those left, for a resumed run, which passes what its steps
        so far began and failed), each after asking whether a stop was requested."""
        started = set() if started is None else started
        failures = [] if failures is None else failures
        previous = None
        for step in self.playbook.steps if todo is None else todo:
            STOP.check(f"after step {previous}, before step {step.id}" if previous else "")
            previous = step.id
            record = self._run_step(step, "main")
            if record.status != "skipped":
                started.add(step.id)
            if record.status != "failed":
                continue
            failures.append(record)
            why = record.reason or record.error or "failed"
            decision = after_failure(step, why)
            self._decide(decision.sentence)
            if decision.then == "continue":
                continue
            if decision.then == "rollback":
                for undo in rollback_plan(self.playbook.rollback, started):
                    self._run_step(undo, "rollback")
                return "failed", f"step {step.id} failed ({why}); the drill was rolled back", True
            return "aborted", decision.sentence, False
        if failures:
            ids = ", ".join(f.id for f in failures)
            return "failed", self._decide(f"steps {ids} failed; the others ran"), False
        return "passed", self._decide("every step passed its checks"), False

    def _run_step(self, step: Step, phase: Literal["main", "rollback"]) -> StepRecord:
        assert self.targets is not None and self.journal is not None
        moves_before = len(self.journal.moves)
        node = self.targets.roles.get(step.target, "?")
        self.progress.step_started(step, node, phase)
        if Mode(self.request.mode) not in step.modes:
            now = self.clock.now()
            only = " and ".join(m.value for m in step.modes)
            record = StepRecord(
                **_step_identity(step, phase, node),
                status="skipped",
                attempts=0,
                started_at=now.at,
                ended_at=now.at,
                offsets=StepOffsets(started=now.offset, ended=now.offset),
                duration_seconds=0.0,
                reason=f"runs only in {only} mode",
            )
        else:
            # A run killed during the step leaves this: its journal says which step was going.
            self._event("step_started", step=step.id, phase=phase)
            if len(self.journal.moves) == moves_before:
                record = redact_model(
                    self.invoke(step.id, lambda: self._execute(step, phase, node))
                )
            else:  # the journal failed as the step began: it is not run, and it has failed
                record = _not_run(step, phase, node, self.clock.now())
        record = self._journal_step(step, record, moves_before)  # its milestones too
        self.progress.step_ended(record)
        return record

    def _milestones_of(self, step: Step, record: StepRecord) -> list[tuple[str, Stamp]]:
        if step.milestone is None or record.status == "skipped":
            return []
        moment = record.data.get("milestone_moment")  # a human step knows when it happened
        if isinstance(moment, dict) and record.status == "passed":
            return [(step.milestone, Stamp(str(moment["at"]), float(moment["offset"])))]
        if step.milestone_at == "started":
            return [(step.milestone, Stamp(record.started_at, record.offsets.started))]
        if record.status == "failed":
            return []
        at = getattr(record, f"{step.milestone_at}_at") or record.ended_at
        offset = getattr(record.offsets, step.milestone_at)
        return [(step.milestone, Stamp(at, record.offsets.ended if offset is None else offset))]

    def _execute(self, step: Step, phase: Literal["main", "rollback"], node: str) -> StepRecord:
        """One step: the action with its retries, then its checks until they hold."""
        assert self.targets is not None
        if step.action in HUMAN_ACTIONS:
            with STOP.waiting(f"while step {step.id} waited for a person; it did not finish"):
                return run_human_step(self, step, phase, node)
        spec = self.catalogue.action(step.action)
        params = spec.params.model_validate(step.with_)
        started = self.clock.now()
        attempts, output, error = 0, "", None
        data: dict[str, Any] = {}
        while True:
            attempts += 1
            try:
                if step.action in WAITING_ACTIONS:  # it only waits: a stop ends it at once
                    with STOP.waiting(f"while step {step.id} waited; it did not finish"):
                        result = spec.run(self.targets, step.target, params, step.timeout)
                else:
                    result = spec.run(self.targets, step.target, params, step.timeout)
                output, data = result.output, result.data
                error = None
                break
            except DrillError as exc:
                error = str(exc) if exc.host else f"{node}: {exc}"
                # An action that found a fault may say what it measured (scratch.ActionFailed).
                data = dict(getattr(exc, "data", None) or {})
                if attempts > step.retries:
                    break
                STOP.pause(step.retry_delay, f"while step {step.id} waited to retry ({error})")
        returned = self.clock.now()
        checks: list[CheckResult] = []
        converged: Stamp | None = None
        if error is None:
            # The first poll follows the action at once; each next one starts `poll` after the
            # previous one started (not after it ended), so the time a check takes is not added
            # to every interval, and one that takes longer than `poll` is asked again at once.
            deadline = time.monotonic() + step.within
            while True:
                polled = time.monotonic()
                checks = [
                    run_check(
                        c.check,
                        c.target or step.target,
                        c.with_,
                        self.targets,
                        self.clock,
                        self.catalogue,
                    )
                    for c in step.verify
                ]
                if all(c.held for c in checks):
                    converged = self.clock.now() if step.verify else returned
                    break
                now = time.monotonic()
                if now >= deadline:
                    break
                # The last poll is at the deadline itself, not up to `poll` before it.
                pause = min(polled + step.poll, deadline) - now
                if pause > 0:
                    time.sleep(pause)
        ended = self.clock.now()
        status: Literal["passed", "failed", "overridden"] = "passed"
        reason = ""
        if error is not None:
            status, reason = "failed", f"action failed after {attempts} attempt(s): {error}"
        elif converged is None:
            bad = next(c for c in checks if not c.held)
            reason = (
                f"{bad.check} on {bad.node} did not hold within {step.within:g}s "
                f"(observed {bad.observed!r}, expected {bad.expected})"
            )
            status = "failed"
            if step.override and step.override in self.request.overrides:
                status = "overridden"
                reason = self._decide(
                    f"{reason}; went on under override {step.override}, given by "
                    f"{self.request.operator}"
                )
        return StepRecord(
            **_step_identity(step, phase, node),
            status=status,
            attempts=attempts,
            started_at=started.at,
            returned_at=returned.at,
            converged_at=converged.at if converged else None,
            ended_at=ended.at,
            offsets=StepOffsets(
                started=started.offset,
                returned=returned.offset,
                converged=converged.offset if converged else None,
                ended=ended.offset,
            ),
            duration_seconds=round(ended.offset - started.offset, 6),
            output=output[-OUTPUT_EXCERPT:],
            data=data,
            error=error,
            checks=checks,
            milestone=step.milestone,
            override=step.override if status == "overridden" else None,
            reason=reason,
        )

    # -- the end -----------------------------------------------------------------------------

    def _step_measurements(self) -> list[dict[str, Any]]:
        """What the run's steps measured (their data's ``measurements``), in step order."""
        found = []
        assert self.journal is not None
        for event in self.journal.events():
            step = event.get("step") if event.get("event") == "step" else None
            measured = step.get("data", {}).get("measurements") if isinstance(step, dict) else None
            if isinstance(measured, dict):
                found.append(measured)
        return found

    def _end(self, status: str, reason: str, *, rolled_back: bool = False) -> Record:
        self._event("run_ended", status=status, reason=reason, rolled_back=rolled_back)
        assert self.journal is not None
        record = build_record(self.journal.events())  # wherever the journal is now
        if status != "interrupted":  # an interrupted run stays in its journal: resume, abort
            self.store.write(record)
        self.progress.finished(record)
        return record


def _not_run(step: Step, phase: str, node: str, now: Stamp) -> StepRecord:
    """A step not run because the journal failed as it began (its reason says so after)."""
    return StepRecord(
        **_step_identity(step, phase, node),
        status="failed",
        attempts=0,
        started_at=now.at,
        ended_at=now.at,
        offsets=StepOffsets(started=now.offset, ended=now.offset),
        duration_seconds=0.0,
        reason="not run",
    )


def _step_identity(step: Step, phase: str, node: str) -> dict[str, Any]:
    """The fields of a step record that say which step it is, whatever became of it."""
    return {
        "id": step.id,
        "phase": phase,
        "title": step.title.model_dump() if step.title else None,
        "action": step.action,
        "target": step.target,
        "node": node,
    }


def run_playbook(request: RunRequest, **kwargs: Any) -> Record:
    return Runner(request, **kwargs).run()
