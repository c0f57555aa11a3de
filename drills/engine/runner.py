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
   for a run that changed something and did not pass, observe and say what it left (which node
   is down, which role nobody fills, whether the standby streams, what to run next); journal
   ``run_ended``; write the record.

This module holds the order and the gates (roles, preconditions, approval, the failure policy
between steps); the parts of a run are modules of their own: ``drills.engine.journaling`` (what
it writes into its journal), ``drills.engine.stepping`` (one step: action, retries, checks) and
``drills.engine.ending`` (measuring, judging, what it left, sealing).

A step's action may measure something the background writers cannot: it returns it in its data
under the key ``measurements`` (a dict of ``Measurements`` fields, e.g. ``lost_transactions``
counted from the old primary's WAL), and the runner merges it over the writers' measurements
before the objectives are evaluated (``drills.model.record.merge_measurements``).

Each decision is one sentence, logged once and kept in the record's ``reason``.

``invoke`` wraps each step (``drills.engine.stepping``): the Prefect flow passes one that makes
each step a task run named after the step; tests and the benchmark's baseline call steps
directly. ``gate`` wraps the asking of the preconditions in the same way (named
``preconditions``, and ``preconditions_after_approval`` when they are asked again after an
approval).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import drills
from drills.engine.catalogue import Catalogue, default_catalogue
from drills.engine.checking import run_check
from drills.engine.ending import RunEnding
from drills.engine.human import HumanHook
from drills.engine.instruments import Instruments, start_instruments
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
    objectives_with_targets,
    rollback_plan,
)
from drills.engine.roles import discover_roles
from drills.engine.stepping import OUTPUT_EXCERPT, Invoker, StepFn, step_identity
from drills.engine.stopping import STOP, StopRequested
from drills.engine.targets import Connector, Targets
from drills.home import subdir
from drills.model.approval import Approval, refusal
from drills.model.check import CheckResult
from drills.model.clock import Clock, Stamp
from drills.model.environment import Environment
from drills.model.errors import DrillError
from drills.model.playbook import Mode, Step
from drills.model.record import Milestone, Record, StepRecord
from drills.model.redact import register_environment
from drills.model.request import RunRequest
from drills.records.journal import Journal
from drills.records.lock import EnvironmentLock
from drills.records.room import ensure_room
from drills.records.store import RecordStore

# Re-exported: callers (the flows, the tests, bench/) import them from here.
__all__ = [
    "OUTPUT_EXCERPT",
    "Invoker",
    "RunRequest",
    "Runner",
    "StepFn",
    "check_request",
    "objectives_with_targets",
    "run_playbook",
    "step_identity",
]

log = logging.getLogger("drctl")
PRECONDITION_WITHIN = 3.0


Approver = Callable[["RunRequest", str], Approval | None]
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


class Runner(RunEnding):
    """A run (see the module docstring); its parts: ``drills.engine.journaling`` (what it
    writes), ``drills.engine.stepping`` (its steps), ``drills.engine.ending`` (its end)."""

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
        check_request(self.loaded, self.env, request, self.catalogue)
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
        self.left: dict[str, Any] | None = None  # what a failed run left (ending._left_behind)

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


def run_playbook(request: RunRequest, **kwargs: Any) -> Record:
    return Runner(request, **kwargs).run()
