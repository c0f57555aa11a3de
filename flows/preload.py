"""What a served flow run needs, loaded once: ``drctl serve``'s fork server imports this module.

Prefect starts each served flow run in a new Python process, which imports Prefect, the drill
flow and every engine before its first step (about two seconds here). ``drctl serve`` starts them
from a fork server instead (``flows.deployments.warm_flow_runs``): a process that imported this
module, once, and forks a copy of itself per flow run. Importing it imports the flow and builds
the catalogue of actions and checks; it starts no thread and opens no connection, so a fork of it
is safe.
"""

from __future__ import annotations

import flows.drill  # noqa: F401  (the flow, Prefect, the runner)
from drills.engine.catalogue import default_catalogue

default_catalogue()
