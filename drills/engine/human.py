"""Human steps: the moments a person makes, not a machine.

Two actions a playbook may name (``playbooks/his-emergency-activation.yaml``):

- ``incident.declared`` stamps the milestone ``incident_declared`` at the moment the incident was
  declared: the wall time the run request carries (``incident_declared_at``, from ``drctl
  incident declare``, the Prefect UI's run form, or a ``dr.incident.declared`` event's time), or
  the run's start when it carries none. The record says which, in the step and in a note.
- ``human.acknowledge`` waits for an engineer. The runner asks the hook it was given (the Prefect
  flow pauses the flow run with a typed form; ``flows.human``); without one it waits for a
  file-based acknowledgement only. The moment the acknowledgement was *received* is the step's
  ``returned_at`` and its milestone (``engineer_acknowledged``). ``drctl ack RUN`` gives it: it
  resumes the paused flow run through the Prefect API, or, when the run's API cannot be reached
  from the command (the ephemeral API of another process), writes
  ``$DRCTL_HOME/acks/<run_id>/<step_id>.json``, which the waiting run picks up.

Timing is the runner's clock, as everywhere: only the declaration, which happens before the run's
monotonic clock exists, is placed by a wall-clock difference (and the record says so).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from drills.engine.catalogue import ActionSpec
from drills.home import subdir
from drills.model.clock import Clock, Stamp, utc_iso
from drills.model.record import StepOffsets, StepRecord
from drills.model.request import RunRequest

if TYPE_CHECKING:
    from drills.engine.targets import Targets
    from drills.model.playbook import Step

ACKNOWLEDGE = "human.acknowledge"
DECLARED = "incident.declared"
HUMAN_ACTIONS = frozenset({ACKNOWLEDGE, DECLARED})
FILE_POLL = 0.5
Channel = Literal["prefect-ui", "drctl-ack", "file"]


class AckParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(
        default="acknowledge the incident: you are the engineer on it",
        description="What the person is asked (shown in the log and the form's description).",
    )


class DeclaredParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class HumanAnswer:
    """An acknowledgement as the run received it."""

    engineer: str
    note: str
    channel: Channel
    received_at: float  # epoch seconds (wall): when the acknowledgement reached drctl or Prefect


HumanHook = Callable[[RunRequest, str, "Step"], HumanAnswer | None]


class HumanContext(Protocol):
    """What a human step needs of the run that asks (the runner is one)."""

    clock: Clock
    request: RunRequest
    run_id: str
    human: HumanHook | None

    def event(self, kind: str, **fields: Any) -> None: ...


# -- the file channel ------------------------------------------------------------------------------


def ack_path(run_id: str, step_id: str) -> Path:
    return subdir("acks") / run_id / f"{step_id}.json"


def write_ack_file(run_id: str, step_id: str, engineer: str, note: str = "") -> Path:
    """Written by ``drctl ack`` (atomically: the waiting run never reads half a file)."""
    path = ack_path(run_id, step_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    body = {
        "engineer": engineer,
        "note": note,
        "at": now,
        "at_iso": utc_iso(now),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


def read_ack_file(run_id: str, step_id: str) -> HumanAnswer | None:
    """The file-based acknowledgement, once one is there and readable."""
    path = ack_path(run_id, step_id)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return HumanAnswer(
            engineer=str(body["engineer"]),
            note=str(body.get("note") or ""),
            channel="file",
            received_at=float(body["at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def file_acknowledgement(request: RunRequest, run_id: str, step: Step) -> HumanAnswer | None:
    """The hook when no orchestrator can ask a person: wait for ``drctl ack``'s file."""
    deadline = time.monotonic() + step.timeout
    while True:
        answer = read_ack_file(run_id, step.id)
        if answer is not None or time.monotonic() >= deadline:
            return answer
        time.sleep(FILE_POLL)


# -- the steps -------------------------------------------------------------------------------------


def run_human_step(
    runner: HumanContext, step: Step, phase: Literal["main", "rollback"], node: str
) -> StepRecord:
    """A human step, for ``Runner._execute``."""
    if step.action == DECLARED:
        return _declared(runner, step, phase, node)
    return _acknowledge(runner, step, phase, node)


def _identity(step: Step, phase: str, node: str) -> dict[str, Any]:
    return {
        "id": step.id,
        "phase": phase,
        "title": step.title.model_dump() if step.title else None,
        "action": step.action,
        "target": step.target,
        "node": node,
        "milestone": step.milestone,
    }


def _declared(
    runner: HumanContext, step: Step, phase: Literal["main", "rollback"], node: str
) -> StepRecord:
    clock = runner.clock
    started = clock.now()
    request = runner.request
    declared = request.incident_declared_at
    by = f" by {request.declared_by}" if request.declared_by else ""
    if declared is None:
        moment = Stamp(utc_iso(clock.started_wall), 0.0)
        source = "run start"
        sentence = (
            "the run request carries no declaration time: incident_declared is the run's start "
            f"({moment.at})"
        )
    else:
        epoch = declared.astimezone(UTC).timestamp()
        # The declaration happened before the run's monotonic clock existed: its offset is the
        # one measured on the wall clock (declared minus the run's start), negative when it came
        # first. Every other offset in the record is monotonic; this one is said to be wall.
        moment = Stamp(utc_iso(epoch), round(epoch - clock.started_wall, 6))
        source = "run request"
        when = (
            f"{-moment.offset:.3f}s before the run started"
            if moment.offset < 0
            else f"{moment.offset:.3f}s after the run started"
        )
        sentence = (
            f"incident declared at {moment.at}{by} (from the run request), {when}; its offset "
            f"({moment.offset:g}s) is a wall-clock difference, not the monotonic clock"
        )
    runner.event("note", text=sentence)
    ended = clock.now()
    return StepRecord(
        **_identity(step, phase, node),
        status="passed",
        attempts=1,
        started_at=started.at,
        returned_at=started.at,
        ended_at=ended.at,
        offsets=StepOffsets(started=started.offset, returned=started.offset, ended=ended.offset),
        duration_seconds=round(ended.offset - started.offset, 6),
        output=sentence,
        data={
            "declared_at": moment.at,
            "declared_offset": moment.offset,
            "source": source,
            "declared_by": request.declared_by,
            # The runner stamps the step's milestone here rather than at the step's own times.
            "milestone_moment": {"at": moment.at, "offset": moment.offset},
        },
    )


def _acknowledge(
    runner: HumanContext, step: Step, phase: Literal["main", "rollback"], node: str
) -> StepRecord:
    clock = runner.clock
    params = AckParams.model_validate(step.with_)
    started = clock.now()
    runner.event(
        "human_waiting",
        step=step.id,
        action=step.action,
        prompt=params.prompt,
        timeout=step.timeout,
        ack_file=str(ack_path(runner.run_id, step.id)),
    )
    hook = runner.human or file_acknowledgement
    answer = hook(runner.request, runner.run_id, step)
    if answer is None:
        ended = clock.now()
        reason = (
            f"nobody acknowledged within {step.timeout:g}s (the Prefect UI's form on the paused "
            f"flow run, or `drctl ack {runner.run_id}`)"
        )
        return StepRecord(
            **_identity(step, phase, node),
            status="failed",
            attempts=1,
            started_at=started.at,
            ended_at=ended.at,
            offsets=StepOffsets(started=started.offset, ended=ended.offset),
            duration_seconds=round(ended.offset - started.offset, 6),
            reason=reason,
            error="timed out waiting for a person",
        )
    now_wall, now = time.time(), clock.now()
    # The answer was received a moment ago (at most one poll interval): step back on the run's
    # clock by that much wall time. An answer given before the step asked (a file left early)
    # counts from when the step asked, and says so.
    lag = max(0.0, now_wall - answer.received_at)
    offset = round(now.offset - lag, 6)
    at = utc_iso(answer.received_at)
    output = f"acknowledged by {answer.engineer} via {answer.channel} at {at}"
    if offset < started.offset:
        output += f"; given before the step asked, so counted from {started.at}"
        offset, at = started.offset, started.at
    if answer.note:
        output += f": {answer.note}"
    ended = clock.now()
    return StepRecord(
        **_identity(step, phase, node),
        status="passed",
        attempts=1,
        started_at=started.at,
        returned_at=at,
        ended_at=ended.at,
        offsets=StepOffsets(started=started.offset, returned=offset, ended=ended.offset),
        duration_seconds=round(ended.offset - started.offset, 6),
        output=output,
        data={
            "engineer": answer.engineer,
            "note": answer.note,
            "channel": answer.channel,
            "received_at": utc_iso(answer.received_at),
            "waited_seconds": round(offset - started.offset, 3),
        },
    )


# -- the catalogue (registered by drills.engine.core) ---------------------------------------------


def _not_here(targets: Targets, role: str, params: Any, timeout: float) -> Any:
    from drills.model.errors import DrillError

    raise DrillError("a human step is run by the runner, not as an action")


def _describe_ack(targets: Targets, role: str, params: AckParams) -> list[str]:
    return [
        f"wait for a person: {params.prompt} (the Prefect UI's form on the paused flow run, "
        "or `drctl ack RUN --by NAME`)"
    ]


def _describe_declared(targets: Targets, role: str, params: DeclaredParams) -> list[str]:
    return [
        "stamp incident_declared: the run request's incident_declared_at "
        "(drctl incident declare, the UI's run form, a dr.incident.declared event), "
        "else the run's start"
    ]


def human_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            ACKNOWLEDGE,
            AckParams,
            _not_here,
            _describe_ack,
            False,
            "Wait for an engineer to acknowledge (Prefect UI form or drctl ack); the moment "
            "it is received is the step's returned_at.",
        ),
        ActionSpec(
            DECLARED,
            DeclaredParams,
            _not_here,
            _describe_declared,
            False,
            "Stamp the moment the incident was declared (the run request's "
            "incident_declared_at, else the run's start).",
        ),
    ]
