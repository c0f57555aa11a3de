"""The Oracle engine's tool actions and checks, gathered for its ``register``: the broker
(DGMGRL), SQL*Plus, RMAN and Data Pump modules each add theirs. Kept apart from
``drills.engines.oracle.tools`` (what those modules share), so no module imports its importer."""

from __future__ import annotations

from drills.engine.catalogue import ActionSpec, Catalogue, CheckSpec
from drills.engines.oracle.broker import broker_actions, broker_checks
from drills.engines.oracle.datapump import datapump_actions, datapump_checks
from drills.engines.oracle.instance import instance_actions, instance_checks
from drills.engines.oracle.restore import restore_actions
from drills.engines.oracle.rman import rman_actions


def tool_actions() -> list[ActionSpec]:
    """Every action that runs Oracle's tools on a node's host (broker, SQL*Plus, RMAN, Data
    Pump), for the engine's ``register``."""
    return [
        *broker_actions(),
        *instance_actions(),
        *rman_actions(),
        *restore_actions(),
        *datapump_actions(),
    ]


def tool_checks() -> list[CheckSpec]:
    """The checks that ask a tool on the host (named for the tool: dgmgrl.*, sqlplus.*)."""
    return [*broker_checks(), *instance_checks(), *datapump_checks()]


def register_tools(catalogue: Catalogue) -> None:
    """Add the tool actions and checks to a catalogue (one line in the engine's register)."""
    catalogue.add_actions(*tool_actions())
    catalogue.add_checks(*tool_checks())
