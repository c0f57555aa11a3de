"""What a run writes into its journal as it goes: events, step records and milestones.

Every event is stamped by the run's clock and redacted before it is written. A step's record and
the milestones it marks are written together, in one append (one fsync). When the journal
cannot be written where it is, it moves to a fallback place (``drills.records.journal``): the
run says so, on stderr and in the journal, and writes the event again there; a step during which
that happened has failed, whatever its checks said (``_journal_step``).

Each decision of the run is one sentence (``_decide``), logged once and kept in the record.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from drills.model.clock import Clock, Stamp
from drills.model.playbook import Step
from drills.model.record import Milestone, StepRecord
from drills.model.redact import redact_data
from drills.records.journal import Journal, JournalMove, JournalMoved

log = logging.getLogger("drctl")


class RunJournaling:
    """The run's writing into its journal (a part of ``drills.engine.runner.Runner``)."""

    clock: Clock
    journal: Journal | None
    milestones: list[Milestone]

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

    def _decide(self, sentence: str) -> str:
        log.info(sentence)
        return sentence

    def _mark(self, name: str, stamp: Stamp, step: str | None) -> None:
        milestone = Milestone(name=name, at=stamp.at, offset=stamp.offset, step=step)
        self.milestones.append(milestone)
        self._event("milestone", milestone=milestone.model_dump())

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
