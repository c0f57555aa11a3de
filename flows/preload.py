"""What a flow run needs, loaded before Prefect's engine runs it; and a worker's flow run.

Prefect starts each flow run in a new Python process, which imports Prefect, the drill flow and
every engine before its first step. Importing this module imports the flow and builds the
catalogue of actions and checks; it starts no thread and opens no connection, so a fork of it is
safe. Two things use it:

- ``drctl serve`` starts its flow runs from a fork server that imported this module once
  (``flows.deployments.warm_flow_runs``), so a run finds all that loaded already;
- a work pool made with drctl's template (``flows.deployments.process_pool_template``) starts
  each of its runs as ``python -m flows.preload``: Prefect's engine (``python -m prefect.engine``,
  run in this same process once the check below is done), with the flow loaded first.

The check: Prefect's server takes a run whose parameters name one the deployment's form does not
have (a mistyped ``tiket``, from the API or the UI's JSON), and Prefect's engine then crashes the
run with a traceback before any code of the flow runs. Here such a run ends Failed before
anything is done, its message (and its log) naming the unknown parameter and the known ones.
"""

from __future__ import annotations

import logging
import os
import runpy
import sys
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import flows.drill  # noqa: F401  (the flow, Prefect, the runner)
from drills.engine.catalogue import default_catalogue
from flows.form import UnknownParameters, form_fields, unknown_parameters

default_catalogue()


def refuse_unknown_parameters(client: Any, flow_run_id: UUID) -> str | None:
    """End the flow run Failed, before anything is done, when its parameters name one its
    deployment's form does not have; the message, or None when the run may go on."""
    from prefect.client.schemas.actions import LogCreate
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Failed

    flow_run = client.read_flow_run(flow_run_id)
    if flow_run.deployment_id is None:
        return None
    schema = client.read_deployment(flow_run.deployment_id).parameter_openapi_schema
    unknown = unknown_parameters(flow_run.parameters or {}, schema)
    if not unknown:
        return None
    message = str(UnknownParameters(unknown, form_fields(schema)))
    answer = client.set_flow_run_state(flow_run_id, Failed(message=message))
    if answer.status != SetStateStatus.ACCEPT:
        return None  # the server would not have it (cancelled meanwhile?): Prefect's engine decides
    client.create_logs(
        [
            LogCreate(
                name="drctl",
                level=logging.ERROR,
                message=message,
                timestamp=datetime.now(UTC),
                flow_run_id=flow_run_id,
            )
        ]
    )
    return message


def main() -> None:
    """``python -m flows.preload [FLOW_RUN_ID]``: as ``python -m prefect.engine``, after the
    check of the run's parameters (the id comes as Prefect's engine takes it)."""
    from prefect.client.orchestration import get_client

    flow_run_id = UUID(sys.argv[1] if len(sys.argv) > 1 else os.environ["PREFECT__FLOW_RUN_ID"])
    with get_client(sync_client=True) as client:
        refused = refuse_unknown_parameters(client, flow_run_id)
    if refused is not None:
        print(f"drctl: flow run {flow_run_id}: {refused}", file=sys.stderr, flush=True)
        return
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
