"""The run form: the drill flow's parameters as the Prefect UI shows them and the server checks
them.

Every field is a top-level parameter of the flow with a Chinese and English title (the
``RunRequest`` field's ``title``) and its description. The playbook and the environment are
choices of what is known where the deployment is made (``drctl serve``, ``prefect deploy``): the
shipped playbooks, the environments in ``$DRCTL_HOME/environments``, and the playbooks and
environments the drill definitions there name. Objective targets are one optional text field per
objective a known playbook declares; overrides are choices of those the playbooks offer. The
operator and the ticket are required, so a run started from the UI or the API names who runs it.

The lists are read when a schema is made (Prefect reads the flow's signature then), not when a
flow run starts: the server checks a deployment's runs against the schema it was given.

A parameter the form does not have (a mistyped ``tiket``): Prefect 3.9's server refuses it when
the deployment's schema says ``additionalProperties: false`` at its top (``closed``), but its
client builds a schema as a ``ParameterSchema`` model that keeps only ``properties``,
``required`` and ``definitions``, so ``prefect deploy`` cannot send that, and Prefect's engine
crashes such a run (``SignatureMismatchError``, a traceback) before any code of the flow runs. So
``drctl serve`` closes its deployments' forms once they are applied
(``flows.deployments.serve``), and a worker's run, started as ``python -m flows.preload``,
is checked against its deployment's form first (``unknown_parameters``): it ends Failed with
``UnknownParameters`` as its message, which names the unknown parameter and the known ones.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic.fields import FieldInfo

from drills.model.errors import InputError
from drills.model.request import RunRequest

log = logging.getLogger("drctl")

# A wall time as ISO 8601, or empty (the run's start).
ISO_TIME = r"^$|^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
DURATION_HINT = "a duration: 90s, 2m, 1h30m (empty: the playbook's target)"
OBJECTIVE_TITLES = {
    "rto": "恢复时间目标 RTO / Recovery time (RTO)",
    "rpo": "恢复点目标 RPO / Recovery point (RPO)",
    "write_outage": "写入中断 / Write outage",
    "response": "响应时间 / Response",
    "activation": "应急启用时间 / Activation",
    "downtime": "停机时间 / Downtime",
    "restore_time": "恢复耗时 / Restore time",
}


_known: dict[str, set[str]] = {"playbooks": set(), "environments": set()}  # know()


@dataclass(frozen=True)
class Choices:
    playbooks: list[str]
    environments: list[str]
    objectives: list[str]
    overrides: list[str]


def _yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except (OSError, yaml.YAMLError):
        return None


@functools.cache
def choices() -> Choices:
    """What this host knows: shipped playbooks, environments, and what the definitions name."""
    if os.environ.get("PREFECT__FLOW_RUN_ID"):
        # A flow run's own process (a worker's): Prefect reads the flow's signature when it loads
        # the flow, but nothing checks this run against it (the server did, against the schema
        # its deployment was given), so the run does not wait for the lists.
        return Choices([], [], [], [])
    from drills.engine.loader import bundled_playbooks
    from drills.home import drctl_home
    from drills.ops.definitions import default_sources, definition_files

    playbooks: set[str] = set(_known["playbooks"])
    objectives: set[str] = set()
    overrides: set[str] = set()
    try:
        for path in sorted(bundled_playbooks().glob("*.yaml")):
            data = _yaml(path)
            if not isinstance(data, dict) or "steps" not in data:
                continue
            playbooks.add(path.stem)
            objectives.update(str(k) for k in (data.get("objectives") or {}))
            for step in [*(data.get("steps") or []), *(data.get("rollback") or [])]:
                if isinstance(step, dict) and step.get("override"):
                    overrides.add(str(step["override"]))
    except Exception as exc:  # a form with fewer choices, never a flow that cannot load
        log.warning("the run form's playbooks could not be listed: %s", exc)
    environments = {p.stem for p in (drctl_home() / "environments").glob("*.yaml")}
    environments |= _known["environments"]
    try:
        for path in definition_files(default_sources()):
            data = _yaml(path)
            if isinstance(data, dict) and data.get("playbook"):
                playbooks.add(str(data["playbook"]))
            if isinstance(data, dict) and data.get("environment"):
                environments.add(str(data["environment"]))
    except Exception as exc:
        log.warning("the run form's drill definitions could not be read: %s", exc)
    return Choices(sorted(playbooks), sorted(environments), sorted(objectives), sorted(overrides))


def _labels(name: str) -> dict[str, Any]:
    info = RunRequest.model_fields[name]
    return {"title": info.title or name, "description": info.description or ""}


def form_field(name: str, **constraints: Any) -> FieldInfo:
    """The ``Field`` of the flow parameter ``name``: its titles, description and choices.

    Prefect names each parameter's schema after the parameter and takes the description only from
    a docstring; ``json_schema_extra`` is what it keeps, so the labels go there."""
    extra = _labels(name)
    found = choices()
    if name == "playbook":
        extra["enum"] = found.playbooks
    elif name == "environment":
        extra["enum"] = found.environments
    elif name == "objectives":
        extra["properties"] = {
            objective: {
                "type": "string",
                "title": OBJECTIVE_TITLES.get(objective, objective),
                "description": DURATION_HINT,
            }
            for objective in found.objectives
        }
        extra["additionalProperties"] = False
    elif name == "overrides":
        extra["items"] = {"type": "string", "enum": found.overrides}
        extra["uniqueItems"] = True
    elif name == "incident_declared_at":
        extra["pattern"] = ISO_TIME
    elif name == "declared_by":
        extra["description"] += " Empty: the operator."
    info: FieldInfo = Field(json_schema_extra=extra, **constraints)
    return info


def know(playbook: str, environment: str) -> None:
    """Offer this playbook and environment too (a deployment made in this process names them:
    a definition outside ``$DRCTL_HOME/drills``, or one naming a file)."""
    if playbook not in _known["playbooks"] or environment not in _known["environments"]:
        _known["playbooks"].add(playbook)
        _known["environments"].add(environment)
        choices.cache_clear()


# -- a run's parameters against the form ---------------------------------------------------------


class UnknownParameters(InputError):
    """A run names parameters its deployment's form does not have (a mistyped name, most often)."""

    def __init__(self, unknown: list[str], known: list[str]) -> None:
        named = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            named.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        super().__init__(
            f"the run names {'a parameter' if len(unknown) == 1 else 'parameters'} the drill's "
            f"form does not have: {', '.join(named)}; its parameters are {', '.join(known)}. "
            "Nothing was done: start the run again with the right names"
        )
        self.unknown, self.known = unknown, known


def unknown_parameters(parameters: dict[str, Any], schema: dict[str, Any] | None) -> list[str]:
    """The names in ``parameters`` that the form ``schema`` (a deployment's
    ``parameter_openapi_schema``) does not have; none when it has no fields at all."""
    known = set((schema or {}).get("properties") or {})
    return sorted(set(parameters) - known) if known else []


def form_fields(schema: dict[str, Any] | None) -> list[str]:
    """The form's parameters in the flow's order (Prefect numbers them: a server on PostgreSQL
    gives the properties back in another order)."""
    properties: dict[str, Any] = (schema or {}).get("properties") or {}
    return sorted(properties, key=lambda name: properties[name].get("position", 0))


def closed(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The form ``schema`` with ``additionalProperties: false`` at its top: a server that enforces
    it refuses a run naming a parameter the form does not have."""
    return {**(schema or {"type": "object", "properties": {}}), "additionalProperties": False}
