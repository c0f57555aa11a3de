"""The catalogues of actions and checks a playbook may name, and how engines register into them.

The engine knows no database. Each engine (``drills.engines.postgres``, and any installed package
that declares a ``drctl.engines`` entry point) has a ``register(catalogue)`` function that adds its
actions, its checks and its role observer; ``drills.engine.core`` registers what every engine
shares (commands, waits, HTTP checks, human steps). Adding an engine therefore edits no existing
catalogue.

    catalogue = default_catalogue()      # built once per process, engines loaded
    catalogue.actions["pg.promote"]      # ActionSpec
    catalogue.checks["pg.is_primary"]    # CheckSpec
    catalogue.role_observers["postgres"] # how a node of that engine says primary/standby/down
    catalogue.equivalents["db.failover"]["oracle"]  # what that engine runs for a neutral action

An engine also says what it runs for the engine-neutral actions and checks (``db.*``,
``drills.engine.neutral``) with ``equate``; those register last, once every engine has said so,
so a playbook written with them runs on whichever engine the environment's nodes are.

Engines are found by walking the ``drills.engines`` package (the ones shipped) and then the
``drctl.engines`` entry points (third-party ones), so a stale install cannot hide the shipped
ones.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

from drills.model.errors import InputError

if TYPE_CHECKING:
    from drills.engine.targets import Targets
    from drills.model.clock import Clock
    from drills.model.environment import Environment, Node
    from verify.result import Observation, Probe

ENTRY_POINT_GROUP = "drctl.engines"


class Params(BaseModel):
    """The base of every action's parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ActionResult:
    output: str = ""
    data: dict[str, Any] = field(default_factory=dict)


RunFn = Callable[["Targets", str, Any, float], ActionResult]
DescribeFn = Callable[["Targets", str, Any], list[str]]
CheckFn = Callable[["Probe", str, Any], "Observation"]


class RoleObserver(Protocol):
    """What a database node says it is now: 'primary', 'standby' or 'down'."""

    def __call__(self, probe: Probe, role: str) -> str: ...


class BackgroundWriter(Protocol):
    """A thread that writes while the drill runs and logs what was acknowledged."""

    log: Any  # drills.engine.measures.WriterLog

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def is_alive(self) -> bool: ...


class Instrumentation(Protocol):
    """An engine's canary writer and write probe (``measurements`` in a playbook)."""

    def prepare(self, env: Environment, nodes: list[str]) -> None: ...

    def canary(
        self, env: Environment, nodes: list[str], run_id: str, clock: Clock, interval: float
    ) -> BackgroundWriter: ...

    def write_probe(
        self, env: Environment, nodes: list[str], run_id: str, clock: Clock, interval: float
    ) -> BackgroundWriter: ...

    def surviving(
        self, env: Environment, nodes: list[str], run_id: str
    ) -> tuple[set[int], str]: ...


@dataclass(frozen=True)
class ActionSpec:
    name: str
    params: type[BaseModel]
    run: RunFn
    describe: DescribeFn
    changes: bool
    description: str
    engine: str = "core"


@dataclass(frozen=True)
class CheckSpec:
    name: str
    params: type[BaseModel]
    fn: CheckFn
    description: str
    engine: str = "core"


def check_spec(name: str, params: type[BaseModel], fn: CheckFn, engine: str = "core") -> CheckSpec:
    """A check whose description is the first line of its function's docstring."""
    doc = (fn.__doc__ or name).strip().splitlines()[0]
    return CheckSpec(name, params, fn, doc, engine)


Adapt = Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]


def same_role_and_params(role: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return role, dict(params)


@dataclass(frozen=True)
class Equivalent:
    """What an engine runs for an engine-neutral (``db.*``) action or check: its own action or
    check ``name``, on the role and with the parameters that ``adapt`` makes of the neutral
    step's role and ``with:`` (by default the same ones). ``name`` None: the engine has nothing
    to run for it and ``why`` says so (allowed only for an optional neutral action, one that
    measures; ``drills.engine.neutral`` refuses it for the others)."""

    name: str | None
    adapt: Adapt = same_role_and_params
    why: str = ""


@dataclass
class Catalogue:
    actions: dict[str, ActionSpec] = field(default_factory=dict)
    checks: dict[str, CheckSpec] = field(default_factory=dict)
    role_observers: dict[str, RoleObserver] = field(default_factory=dict)
    instruments: dict[str, Instrumentation] = field(default_factory=dict)
    engines: list[str] = field(default_factory=list)
    # neutral name (db.*) -> engine -> what it runs: one action, or checks that must all hold
    equivalents: dict[str, dict[str, tuple[Equivalent, ...]]] = field(default_factory=dict)

    def add_actions(self, *specs: ActionSpec) -> None:
        for spec in specs:
            if spec.name in self.actions:
                raise InputError(f"action {spec.name} is registered twice")
            self.actions[spec.name] = spec

    def add_checks(self, *specs: CheckSpec) -> None:
        for spec in specs:
            if spec.name in self.checks:
                raise InputError(f"check {spec.name} is registered twice")
            self.checks[spec.name] = spec

    def equate(self, engine: str, neutral: str, *equivalents: Equivalent | str) -> None:
        """Say what ``engine`` runs for the neutral action or check ``neutral``: for an action
        one equivalent, for a check one or more (all must hold). A bare name is the engine's
        action or check with the neutral step's role and parameters."""
        if not equivalents:
            raise InputError(f"{engine}: {neutral} is equated to nothing")
        known = self.equivalents.setdefault(neutral, {})
        if engine in known:
            raise InputError(f"{engine}: {neutral} is equated twice")
        known[engine] = tuple(
            e if isinstance(e, Equivalent) else Equivalent(e) for e in equivalents
        )

    def observe_roles_with(self, engine: str, observer: RoleObserver) -> None:
        self.role_observers[engine] = observer

    def measure_with(self, engine: str, instruments: Instrumentation) -> None:
        self.instruments[engine] = instruments

    def action(self, name: str) -> ActionSpec:
        try:
            return self.actions[name]
        except KeyError:
            raise InputError(f"unknown action {name!r}") from None

    def check(self, name: str) -> CheckSpec:
        try:
            return self.checks[name]
        except KeyError:
            raise InputError(f"unknown check {name!r}") from None


Register = Callable[[Catalogue], None]


def _shipped_engines() -> list[tuple[str, Register]]:
    # Imported by name, not by an import statement: the engine layer sits below the engines
    # it loads (the import-linter contracts in pyproject.toml hold it to that).
    engines = importlib.import_module("drills.engines")
    found = []
    for info in sorted(pkgutil.iter_modules(engines.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"drills.engines.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            found.append((info.name, register))
    return found


def _installed_engines(known: set[str]) -> list[tuple[str, Register]]:
    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in known:
            continue
        found.append((point.name, point.load()))
    return found


# What every engine shares registers first, found by name like the engines: the catalogue only
# defines what registrants add; it depends on none of them. The engine-neutral actions and
# checks register last: each dispatches to what the engines equated to it.
CORE = "drills.engine.core"
NEUTRAL = "drills.engine.neutral"


def build_catalogue() -> Catalogue:
    catalogue = Catalogue()
    importlib.import_module(CORE).register(catalogue)
    shipped = _shipped_engines()
    for name, register in [*shipped, *_installed_engines({n for n, _ in shipped})]:
        register(catalogue)
        catalogue.engines.append(name)
    importlib.import_module(NEUTRAL).register(catalogue)
    return catalogue


_lock = threading.Lock()
_default: Catalogue | None = None


def default_catalogue() -> Catalogue:
    """The catalogue with every engine registered, built once per process."""
    global _default
    with _lock:
        if _default is None:
            _default = build_catalogue()
        return _default


def node_engine(node: Node) -> str | None:
    """The database engine of a node, from the section it carries (``Node.engine``)."""
    return node.engine
