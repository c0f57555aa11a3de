"""A drill without Prefect: the runner called directly, with the flow's listeners.

``drctl run`` comes here when no Prefect server answers (none is configured, or the configured one
is down: it may be in the site that failed). Nothing waits for a Prefect API to start: this module
does not import Prefect. The run is the same run (the runner, its journal, lock and record, the
terminal's progress, notifications, and the steps' log lines on the ``drctl`` logger), and its
record says which orchestrator watched it: ``orchestrator.prefect_api`` is ``"none"`` and
``watched_by`` names drctl.

Without Prefect there is no paused flow run to answer: an approval must be given up front (the
CLI's options), and an acknowledgement comes through ``drctl ack``'s file.
"""

from __future__ import annotations

import getpass
import logging
from typing import Any

from drills.engine.listeners import LogListener, Progress
from drills.engine.loader import LoadedPlaybook
from drills.engine.runner import Runner
from drills.model.environment import Environment
from drills.model.playbook import Step
from drills.model.redact import redact
from drills.model.request import RunRequest
from drills.ops.notify import configured_notifier

WATCHED_BY = "drctl, in process (no Prefect API)"


def run_direct(
    request: RunRequest,
    progress: Progress | None = None,
    orchestrator: dict[str, Any] | None = None,
    *,
    loaded: LoadedPlaybook | None = None,
    env: Environment | None = None,
) -> str:
    """Run the drill in this process, without Prefect; return the record id."""
    runner: Runner | None = None

    def describe(step: Step) -> list[str]:
        if runner is None or runner.targets is None or step.action not in runner.catalogue.actions:
            return []
        spec = runner.catalogue.action(step.action)
        params = spec.params.model_validate(step.with_)
        return [redact(line) for line in spec.describe(runner.targets, step.target, params)]

    listeners = [p for p in (progress, configured_notifier()) if p is not None]
    listeners.append(LogListener(logging.getLogger("drctl"), describe))
    runner = Runner(
        request,
        progress=listeners,
        orchestrator={
            "prefect_api": "none",
            "watched_by": WATCHED_BY,
            "started_by": "drctl (in process)",
            "os_user": getpass.getuser(),
            **(orchestrator or {}),
        },
        loaded=loaded,
        env=env,
    )
    return runner.run().id
