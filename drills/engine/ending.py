"""How a run ends: measured, judged, said, journaled and sealed.

- ``_finish``: the background writers are stopped and what they measured is merged with what
  the steps measured; the objectives are judged (a run whose steps passed but which missed an
  objective has failed);
- ``_interrupted``: a run stopped by a signal says where it stopped, the state it left and what
  to run next (``drills.engine.interruption``); it is not sealed (``drctl resume``/``abort``);
- ``_left_behind``: a run that changed something and did not pass (failed, or aborted after a
  step began) says what it left: which node is down, which role of the pair nobody fills,
  whether the standby streams; in its journal (``left``) and its record (``Record.left``).
  When the pair is not whole (one primary, the other streaming from it) its reason says so,
  with what to run next, and so does the terminal; when it is whole, a note says so;
- ``_end``: ``run_ended`` is journaled and the record, built from the journal, sealed.
"""

from __future__ import annotations

from typing import Any, Literal

from drills.engine.instruments import Instruments, stop_instruments
from drills.engine.interruption import (
    STREAMING_WITHIN,
    after_run_commands,
    changes_something,
    commands_sentence,
    interruption_event,
    left_state,
    pair_of,
    position_of,
    state_sentence,
    whole,
)
from drills.engine.loader import LoadedPlaybook
from drills.engine.policy import missed_sentence
from drills.engine.stepping import StepExecution
from drills.engine.stopping import STOP
from drills.engine.targets import Connector
from drills.model.environment import Environment
from drills.model.playbook import Objective, Playbook
from drills.model.record import Record, build_record, evaluate_objectives, merge_measurements
from drills.records.store import RecordStore

ENDS_TO_EXPLAIN = ("failed", "aborted")  # a run that ended so may have left the pair broken


class RunEnding(StepExecution):
    """The end of a run (a part of ``drills.engine.runner.Runner``)."""

    env: Environment
    loaded: LoadedPlaybook
    playbook: Playbook
    objectives: dict[str, Objective]
    writers: Instruments
    store: RecordStore
    connector: Connector | None
    interrupted_note: str
    left: dict[str, Any] | None

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

    def _changed_something(self) -> bool:
        """Whether a step that changes something began (or a rollback step ran)."""
        assert self.journal is not None
        position = position_of(self.journal.events())
        began = [s for s in self.playbook.steps if s.id in position.started]
        return bool(position.rolled_back) or any(
            changes_something(s, self.catalogue) for s in began
        )

    def _left_behind(self) -> dict[str, Any] | None:
        """For a run that changed something in an environment with a primary/standby pair:
        the state it left, observed now (``left``: the state, whether the pair is whole, what
        to run next and the sentence that says it), journaled once. A pair left whole (one
        primary, the other streaming from it) is a note; one that is not is said in the
        run's reason too (``_end``), with the commands to run next. None for a run that
        changed nothing."""
        if self.left is not None:
            return self.left
        if not pair_of(self.env) or not self._changed_something():
            return None
        with STOP.region("shielded", "the record"):
            state = left_state(
                self.env, self.connector, self.catalogue, streaming_within=STREAMING_WITHIN
            )
            is_whole = whole(state)
            commands = [] if is_whole else after_run_commands(self.env, self.playbook, state)
            said = state_sentence(state)
            sentence = f"what the run left: {said}" + (
                f"; {commands_sentence(commands)}" if commands else ""
            )
            self.left = {"state": state, "whole": is_whole, "next": commands, "sentence": sentence}
            self._event("left", **self.left)
            if is_whole:
                self._event("note", text=self._decide(sentence))
        return self.left

    def _end(
        self, status: str, reason: str, *, rolled_back: bool = False, say_left: bool = True
    ) -> Record:
        """Journal the end and seal the record. A run that ended failed or aborted after it
        changed something says what it left (``_left_behind``): in its reason when the pair
        is not whole, unless ``say_left`` is False (its reason says it already)."""
        if status in ENDS_TO_EXPLAIN:
            left = self._left_behind()
            if left is not None and not left["whole"] and say_left:
                reason = self._decide(f"{reason}; {left['sentence']}")
        self._event("run_ended", status=status, reason=reason, rolled_back=rolled_back)
        assert self.journal is not None
        record = build_record(self.journal.events())  # wherever the journal is now
        if status != "interrupted":  # an interrupted run stays in its journal: resume, abort
            self.store.write(record)
        self.progress.finished(record)
        return record
