"""The drill flow's human hook: pause the flow run for a typed acknowledgement.

``acknowledgement_from_ui`` is the ``human`` hook the flow gives the runner
(``drills.engine.human``). It pauses the flow run with the ``AckForm`` (the Prefect UI renders it;
``resume_flow_run`` from code, or ``drctl ack``, fills it through the API), and at the same time
watches for ``drctl ack``'s file (``$DRCTL_HOME/acks/<run_id>/<step_id>.json``), written when the
command cannot reach this run's Prefect API (the ephemeral API of another process): the watcher
resumes the flow run itself, in this process. Whichever comes first wins; the answer says which
channel it was.

The moment received is the flow run input's own creation time on the Prefect server (for the
file, the time ``drctl ack`` wrote in it), not the moment the pause noticed it (up to a poll
interval later).
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from typing import TYPE_CHECKING, Literal
from uuid import UUID

from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import Field

from drills.engine.human import FILE_POLL, AckParams, HumanAnswer, read_ack_file

if TYPE_CHECKING:
    from drills.engine.runner import RunRequest
    from drills.model.playbook import Step


class AckForm(RunInput):
    """The form the Prefect UI shows on a run that waits for an engineer."""

    engineer: str = Field(min_length=1, description="Who acknowledges: the engineer on call.")
    note: str = Field(default="", description="Optional: what you see, where you are.")
    via: Literal["prefect-ui", "drctl-ack", "file"] = Field(
        default="prefect-ui", description="How the acknowledgement came (drctl ack sets it)."
    )


class FileWatcher(threading.Thread):
    """Resumes the paused flow run when ``drctl ack`` leaves its file."""

    def __init__(self, run_id: str, step_id: str, flow_run_id: UUID) -> None:
        super().__init__(name=f"drctl-ack-file-{step_id}", daemon=True)
        self.run_id, self.step_id, self.flow_run_id = run_id, step_id, flow_run_id
        self.answer: HumanAnswer | None = None
        self._done = threading.Event()
        # Prefect's settings (which API) live in context variables: take this thread's along.
        self._context = contextvars.copy_context()

    def run(self) -> None:
        self._context.run(self._watch)

    def _watch(self) -> None:
        while not self._done.wait(FILE_POLL):
            found = read_ack_file(self.run_id, self.step_id)
            if found is None:
                continue
            try:
                resume_flow_run(
                    self.flow_run_id,
                    run_input={"engineer": found.engineer, "note": found.note, "via": "file"},
                )
            except Exception:
                continue  # not paused yet, or resumed by another channel meanwhile: try again
            self.answer = found
            return

    def stop(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join(timeout=10)


def acknowledgement_from_ui(request: RunRequest, run_id: str, step: Step) -> HumanAnswer | None:
    """Pause the flow run for the acknowledgement form; None when nobody answered in time."""
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    flow_run_id = context.flow_run.id
    prompt = AckParams.model_validate(step.with_).prompt
    get_run_logger().warning(
        "run %s waits for an engineer (step %s: %s): resume flow run %s with the form "
        "(engineer, note), or run `drctl ack %s --by NAME`; within %gs",
        run_id,
        step.id,
        prompt,
        flow_run_id,
        run_id,
        step.timeout,
    )
    watcher = FileWatcher(run_id, step.id, flow_run_id)
    watcher.start()
    try:
        form = pause_flow_run(
            wait_for_input=AckForm,
            timeout=max(1, math.ceil(step.timeout)),
            poll_interval=1,
            key=f"ack-{step.id}",
        )
    except FlowPauseTimeout:
        form = None
    finally:
        watcher.stop()
    if form is None:
        return None
    if form.via == "file" and watcher.answer is not None:
        return watcher.answer
    return HumanAnswer(
        engineer=form.engineer,
        note=form.note,
        channel=form.via,
        received_at=_received_at(flow_run_id, form),
    )


def _received_at(flow_run_id: UUID, form: AckForm) -> float:
    """When the Prefect server took the form in (its flow run input's creation time)."""
    from prefect.client.orchestration import get_client

    try:
        key = form.metadata.key
        with get_client(sync_client=True) as client:
            found = client.filter_flow_run_input(
                flow_run_id, key_prefix=key, limit=1, exclude_keys=set()
            )
        if found and found[0].created is not None:
            return found[0].created.timestamp()
    except Exception:
        pass
    return time.time()
