"""Going on after an interruption: ``drctl resume RUN`` continues the run, ``drctl abort RUN``
undoes it. Either is the same run (same id, same journal, the lock it kept), never a new one.

Both refuse, changing nothing, a run that is sealed, still going, or ended; a run whose
playbook file changed since it began; an environment whose lock does not name the run (a
live run holds it, or ``drctl unlock`` released it); and, as a run does, a records directory
with no room for the journal and the record (``drills.records.room``). Then:

**resume**

1. reads the run's journal: the steps finished, the step in progress, the roles it was bound to
   (a run keeps its roles: the old primary of a switchover is its ``primary`` to the end);
2. takes a fresh snapshot of the roles (refusing a split brain);
3. asks the step in progress again, if the interrupted run left one: when it changes something
   and its checks hold now, its effect is there and it is taken as done (its record says so);
   else it runs again. Then it verifies that the checks of the last step that passed still
   hold, or, with no step done, the preconditions;
4. journals ``run_resumed`` (who, the roles observed, the checks asked, from which step) and
   continues from the next step, with the playbook's failure policies; the rollback, if one
   comes, covers the steps begun before the interruption too.

The background probes (canary, write and service probes) stopped with the interrupted process;
they are not restarted, since figures taken from the resumption on would understate the loss and
the outage: what they measure is not measured in a resumed run, and the record says so.

**abort** runs the rollback steps of the steps begun (``rollback_plan``), each verified by its
checks, and seals the record ``aborted`` (``failed`` when a rollback step failed), releasing the
lock. Past a step that changes something and does not roll back on failure (a promotion) the
playbook has no way back, and abort refuses: resume, or check by hand and ``drctl unlock``.

Offsets after the resumption continue the run's clock: they are placed by the wall clock since
the run began (the interrupted process's monotonic clock is gone), never before the last offset
journaled.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from drills.engine.catalogue import Catalogue
from drills.engine.checking import run_check
from drills.engine.interruption import (
    RunPosition,
    changes_something,
    left_state,
    no_way_back,
    position_of,
    state_of,
    state_sentence,
)
from drills.engine.listeners import Progress
from drills.engine.loader import load_playbook, resolve_environment
from drills.engine.policy import rollback_plan
from drills.engine.roles import RoleMap, decide_roles, observe_roles
from drills.engine.runner import Runner
from drills.engine.stepping import step_identity
from drills.engine.targets import Connector, Targets
from drills.home import subdir
from drills.model.check import CheckResult
from drills.model.clock import Clock
from drills.model.errors import InputError, RefusedError
from drills.model.playbook import Step
from drills.model.record import Milestone, Record, StepOffsets, StepRecord
from drills.model.request import RunRequest
from drills.records.journal import Journal, read_journal
from drills.records.lock import EnvironmentLock
from drills.records.room import ensure_room
from drills.records.store import RecordStore

How = Literal["resume", "abort"]


def continued_clock(started_at: str, last_offset: float) -> Clock:
    """The run's clock, going on: offsets by the wall clock since the run began."""
    clock = Clock()
    started_wall = datetime.fromisoformat(started_at.replace("Z", "+00:00")).timestamp()
    elapsed = max(time.time() - started_wall, last_offset)
    clock.started_wall = started_wall
    clock.started_mono = time.monotonic() - elapsed
    return clock


def interrupted_run(store: RecordStore, run_id: str, how: How) -> tuple[str, list[dict[str, Any]]]:
    """The full id and the journal events of a run that may be continued; refuses any other."""
    run_id = store.resolve(run_id)
    if store.backend.get(run_id) is not None:
        raise RefusedError(
            f"run {run_id} is sealed ({store.load(run_id).status}): a sealed record is never "
            f"continued; nothing to {how}"
        )
    events = read_journal(store.journal_path(run_id))
    if not events or events[0].get("event") != "run_started":
        raise InputError(f"run {run_id}: its journal does not begin with run_started")
    record = store.load(run_id)
    if record.status == "running":
        raise RefusedError(f"run {run_id} is still going (its process holds the lock)")
    if record.status != "interrupted":
        raise RefusedError(
            f"run {run_id} ended ({record.status}: {record.reason}); only an interrupted run "
            f"can be {'resumed' if how == 'resume' else 'aborted'}"
        )
    return run_id, events


class ContinuedRun(Runner):
    """The runner of an interrupted run, going on (``how``: resume or abort)."""

    def __init__(
        self,
        run_id: str,
        how: How,
        *,
        operator: str | None = None,
        progress: Progress | list[Progress] | None = None,
        store: RecordStore | None = None,
        connector: Connector | None = None,
        catalogue: Catalogue | None = None,
    ) -> None:
        store = store or RecordStore(subdir("records"), subdir("locks"))
        run_id, events = interrupted_run(store, run_id, how)
        head = events[0]
        request = RunRequest.model_validate(head["request"])
        path = Path(str(head["playbook"].get("path") or request.playbook))
        loaded = load_playbook(path)
        if loaded.sha256 != head["playbook"].get("sha256"):
            raise RefusedError(
                f"playbook {path} changed since run {run_id} began (sha256 "
                f"{str(head['playbook'].get('sha256'))[:12]}…, now {loaded.sha256[:12]}…): the run "
                f"cannot go on with other steps; put it back, or check by hand and `drctl unlock "
                f"{head['environment']['name']}`"
            )
        super().__init__(
            request,
            progress=progress,
            store=store,
            connector=connector,
            catalogue=catalogue,
            loaded=loaded,
            env=resolve_environment(request.environment),
        )
        self.how: How = how
        self.events = events
        self.run_id = run_id
        self.operator = operator or getpass.getuser()
        self.position: RunPosition = position_of(events)
        self.clock = continued_clock(head["at"], float(events[-1].get("offset") or 0.0))
        self.milestones = [
            Milestone.model_validate(e["milestone"])
            for e in events
            if e.get("event") == "milestone"
        ]
        roles = [e for e in events if e.get("event") == "roles"]
        self.bound: dict[str, str] = dict(roles[-1]["roles"]) if roles else {}

    # -- deciding, before anything is written ----------------------------------------------

    def run(self) -> Record:
        # As a run: a full or read-only records disk refuses it here, before anything changes
        # (the lock and the journal stay as the interrupted run left them).
        ensure_room(self.store.dir)
        lock = EnvironmentLock(subdir("locks"), self.env.name)
        lock.take_over(self.run_id, time.time())
        try:
            self.targets = Targets(self.env, self.bound, self.connector)
            self.targets.run_id = self.run_id
            plan = self._plan_resume() if self.how == "resume" else self._plan_abort()
        except BaseException:
            if self.targets is not None:
                self.targets.close()
            lock.give_back()  # refused: the lock is as the interrupted run left it
            raise
        self.journal = Journal.reopen(self.store.journal_path(self.run_id))
        body = self._resume if self.how == "resume" else self._abort
        return self.guarded(lock, lambda: body(plan))

    def _observed(self) -> dict[str, str]:
        assert self.targets is not None
        observed = observe_roles(self.targets, self.catalogue)
        pair = [n for n, node in self.env.nodes.items() if node.role in ("primary", "standby")]
        primaries = [n for n in pair if observed.get(n) == "primary"]
        if len(primaries) > 1:
            raise RefusedError(
                f"nodes {', '.join(primaries)} all accept writes (split brain): run "
                f"{self.run_id} cannot {self.how}; fence one of them by hand, then `drctl unlock "
                f"{self.env.name}`"
            )
        return observed

    def _ask(self, step: Step) -> list[CheckResult]:
        assert self.targets is not None
        return [
            run_check(
                c.check, c.target or step.target, c.with_, self.targets, self.clock, self.catalogue
            )
            for c in step.verify
        ]

    def _refuse(self, why: str) -> RefusedError:
        what_else = f"check the environment by hand, then `drctl unlock {self.env.name}`"
        if (
            self.how == "resume"
            and no_way_back(self.playbook, self.position.started, self.catalogue) is None
            and not self.position.rolling_back
        ):
            what_else = f"`drctl abort {self.run_id}` rolls it back; or {what_else}"
        return RefusedError(f"run {self.run_id} cannot {self.how}: {why}; {what_else}")

    def _plan_resume(self) -> dict[str, Any]:
        position = self.position
        if position.rolling_back:
            raise RefusedError(
                f"run {self.run_id} was rolling back when it stopped: `drctl abort "
                f"{self.run_id}` finishes the rollback"
            )
        observed = self._observed()
        if not self.bound:  # stopped before its roles were resolved: resolve them now
            assert self.targets is not None
            self.bound = decide_roles(self.env, self.playbook.roles, observed).roles
            self.targets.roles = self.bound
        steps = {s.id: s for s in self.playbook.steps}
        done: StepRecord | None = None
        asked: list[dict[str, Any]] = []
        if position.in_progress in steps:
            step = steps[position.in_progress]
            if changes_something(step, self.catalogue) and step.verify:
                checks = self._ask(step)
                asked.append({"step": step.id, "checks": [c.model_dump() for c in checks]})
                if all(c.held for c in checks):
                    done = self._taken_as_done(step, checks)
        last = done or next(
            (r for r in reversed(self._finished_records()) if r.status == "passed"), None
        )
        if done is None and last is not None and steps[last.id].verify:
            checks = self._ask(steps[last.id])
            asked.append({"step": last.id, "checks": [c.model_dump() for c in checks]})
            failed = [c for c in checks if not c.held]
            if failed:
                raise self._refuse(
                    f"the checks of step {last.id}, the last that passed, no longer hold ("
                    + "; ".join(
                        f"{c.check} on {c.node}: observed {c.observed!r}, expected {c.expected}"
                        for c in failed
                    )
                    + f"); {state_sentence(state_of(self.env, observed))}"
                )
        elif last is None and done is None:
            checks = self._ask_preconditions()
            asked.append({"step": "preconditions", "checks": [c.model_dump() for c in checks]})
            failed = [c for c in checks if not c.held]
            if failed:
                first = failed[0]
                raise self._refuse(
                    f"no step finished, and precondition {first.check} on {first.node} does not "
                    f"hold (observed {first.observed!r}, expected {first.expected})"
                )
        finished = set(position.finished) | ({done.id} if done else set())
        todo = [s for s in self.playbook.steps if s.id not in finished]
        return {"observed": observed, "asked": asked, "done": done, "todo": todo}

    def _plan_abort(self) -> dict[str, Any]:
        position = self.position
        blocked = None
        if not position.rolling_back:
            blocked = no_way_back(self.playbook, position.started, self.catalogue)
        if blocked is not None:
            raise RefusedError(
                f"run {self.run_id} cannot be aborted: step {blocked.id} began, and past it the "
                f"playbook has no way back (it changes something and its failure does not roll "
                f"back); `drctl resume {self.run_id}` continues it, or check the environment by "
                f"hand, then `drctl unlock {self.env.name}`"
            )
        undo = [
            s
            for s in rollback_plan(self.playbook.rollback, position.started)
            if s.id not in position.rolled_back
        ]
        return {"observed": self._observed(), "undo": undo}

    def _finished_records(self) -> list[StepRecord]:
        return [
            StepRecord.model_validate(e["step"])
            for e in self.events
            if e.get("event") == "step" and e["step"].get("phase", "main") == "main"
        ]

    def _taken_as_done(self, step: Step, checks: list[CheckResult]) -> StepRecord:
        """The record of the step in progress at the interruption whose checks hold now."""
        began = next(
            e
            for e in reversed(self.events)
            if e.get("event") == "step_started" and e.get("step") == step.id
        )
        now = self.clock.now()
        assert self.targets is not None
        return StepRecord(
            **step_identity(step, "main", self.targets.roles.get(step.target, "?")),
            status="passed",
            attempts=1,
            started_at=str(began["at"]),
            ended_at=now.at,
            offsets=StepOffsets(started=float(began["offset"]), ended=now.offset),
            duration_seconds=round(now.offset - float(began["offset"]), 6),
            checks=checks,
            milestone=step.milestone,
            reason="the run was interrupted during this step; when it was resumed its checks "
            "held, so the step is taken as done (its action's output was lost with the process)",
        )

    # -- going on ----------------------------------------------------------------------------

    def _resumed_event(self, plan: dict[str, Any], **fields: Any) -> None:
        assert self.journal is not None
        if self.journal.cut:
            self._event("note", text=f"a torn last line ({self.journal.cut} bytes) was cut")
        self._event(
            "run_resumed",
            how=self.how,
            by=self.operator,
            pid=os.getpid(),
            host=socket.gethostname(),
            roles=self.bound,
            observed=plan["observed"],
            **fields,
        )
        self.progress.started(self.run_id, self.loaded, self.env)
        self.progress.roles(RoleMap(self.bound, plan["observed"], []))

    def _resume(self, plan: dict[str, Any]) -> Record:
        todo: list[Step] = plan["todo"]
        done: StepRecord | None = plan["done"]
        self._resumed_event(
            plan,
            asked=plan["asked"],
            taken_as_done=done.id if done else None,
            from_step=todo[0].id if todo else None,
        )
        self._event(
            "note",
            text="the background probes (canary, write and service probes) stopped with the "
            "interrupted process and are not restarted: what they measure is not measured in "
            "a resumed run",
        )
        if done is not None:
            self._event("step", step=done.model_dump())
            step = next(s for s in self.playbook.steps if s.id == done.id)
            for name, when in self._milestones_of(step, done):
                self._mark(name, when, step.id)
            self.progress.step_ended(done)
        self._reach_hosts()
        started = set(self.position.started) | ({done.id} if done else set())
        failures = list(self.position.failures)
        return self._finish(*self._steps(todo, started=started, failures=failures))

    def _abort(self, plan: dict[str, Any]) -> Record:
        undo: list[Step] = plan["undo"]
        self._resumed_event(plan, rollback=[s.id for s in undo])
        self._reach_hosts()
        results = [self._run_step(step, "rollback") for step in undo]
        failed = [r for r in results if r.status == "failed"]
        left = self._left_behind()  # journaled as the record's ``left`` (drills.engine.ending)
        after = state_sentence(
            left["state"] if left else left_state(self.env, self.connector, self.catalogue)
        )
        if failed:
            why = "; ".join(f"{r.id}: {r.reason or r.error}" for r in failed)
            reason = f"aborted by {self.operator}, but the rollback failed ({why}); {after}"
            return self._end("failed", self._decide(reason), rolled_back=True, say_left=False)
        did = (
            f"rolled back: {', '.join(r.id for r in results)} (each verified by its checks)"
            if results
            else "nothing to roll back"
        )
        reason = f"aborted by {self.operator} after the interruption; {did}; {after}"
        return self._end("aborted", self._decide(reason), rolled_back=bool(results), say_left=False)


def resume_run(run_id: str, **kwargs: Any) -> Record:
    """Continue an interrupted run (see the module docstring); refusals raise RefusedError."""
    return ContinuedRun(run_id, "resume", **kwargs).run()


def abort_run(run_id: str, **kwargs: Any) -> Record:
    """Roll back an interrupted run and seal it aborted (see the module docstring)."""
    return ContinuedRun(run_id, "abort", **kwargs).run()


__all__ = ["ContinuedRun", "abort_run", "resume_run"]
