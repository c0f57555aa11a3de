"""The state of a run, per node: what earlier steps made, for the steps after them.

Steps of one run find what earlier steps made (the backup taken, the dump, the scratch server
started, the database frozen) in one small JSON file per node::

    $DRCTL_HOME/scratch/<environment>/<node>/state.json

It is the ORCHESTRATOR's file: the run's state, not the node's, so it stays where drctl runs and
is read and written in-process, whatever host the node is on. One drill runs at a time per
environment (its lock), so the file belongs to the run in progress. The rollback finds it there
too, and a run that crashed leaves it for the next run, which stops and removes the scratch
server it names before it makes a new one.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drills.home import drctl_home
from drills.model.errors import InputError

if TYPE_CHECKING:
    from drills.engine.targets import Targets

STATE_FILE = "state.json"


def state_dir(environment: str, node: str) -> Path:
    return drctl_home() / "scratch" / environment / node


def load_state(environment: str, node: str) -> dict[str, Any]:
    path = state_dir(environment, node) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the drill state {path}: {exc}", host=node) from exc
    return data if isinstance(data, dict) else {}


def save_state(environment: str, node: str, state: dict[str, Any]) -> None:
    directory = state_dir(environment, node)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    tmp = directory / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def update_state(environment: str, node: str, **entries: Any) -> dict[str, Any]:
    """Set (or, with None, remove) entries of a node's state; the file goes when it is empty."""
    state = load_state(environment, node)
    for key, value in entries.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    if state:
        save_state(environment, node, state)
    else:
        remove_state(environment, node)
    return state


def remove_state(environment: str, node: str) -> None:
    directory = state_dir(environment, node)
    with contextlib.suppress(FileNotFoundError):
        (directory / STATE_FILE).unlink()
    for path in (directory, directory.parent, directory.parent.parent):  # only empty ones
        with contextlib.suppress(OSError):
            path.rmdir()


def state_entry(targets: Targets, role: str, key: str, made_by: str) -> dict[str, Any]:
    """What an earlier step of this run left in the node's state (e.g. the backup it took)."""
    name, _ = targets.node(role)
    entry = load_state(targets.env.name, name).get(key)
    if not isinstance(entry, dict):
        raise InputError(
            f"no {key} of {name} is known to this run: {made_by} must run earlier in the playbook",
            host=name,
        )
    return entry
