"""`drctl lab up` never starts a node as a second primary.

A stopped PostgreSQL server comes up as a primary unless its data directory holds
``standby.signal``. After a failover, or a rejoin interrupted before it wrote that file (a
node half rewound by ``pg_rewind``), the old primary's data directory has none: starting it
while the other node is the primary makes two primaries, each taking writes. So before `lab up`
starts a stopped node it looks at every node: the live role of those that run (asked of
PostgreSQL), and of those that do not, ``standby.signal`` and ``pg_controldata`` (cluster state
and timeline). The decision is :func:`plan_start`, a pure function of those facts:

- a node that would come up as a primary is not started while another node runs as primary;
- of several stopped nodes that would each come up as primary, only the one on the highest
  timeline (the one promoted last) is started, and none when that is a tie;
- a node with ``standby.signal`` is started (as a standby it cannot take writes).

A refused node is named in one sentence: why, what its data directory says, and what to run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from drills.executors.host import HostExecutor
from drills.executors.postgres import SqlExecutor
from drills.lab.pgconf import DB_USER
from drills.lab.servers import connect_dsn
from drills.lab.state import LabState
from drills.model.errors import DrillError, LabError

TIMELINE = "Latest checkpoint's TimeLineID"
STATE = "Database cluster state"


class SecondPrimaryRefused(LabError):
    """`lab up` did not start a node that would have come up as a second primary."""

    exit_code = 3  # refused, as a drill that refuses


@dataclass(frozen=True)
class NodeFacts:
    """What `lab up` knows of one node before it starts anything."""

    name: str
    running: bool
    role: str | None = None  # when running: primary or standby (None: it did not answer)
    standby_signal: bool = False
    control: dict[str, str] = field(default_factory=dict)  # pg_controldata, when stopped
    rejoin_hint: str = ""  # how to rejoin it by hand on its host (the lab fills it in)

    @property
    def timeline(self) -> int | None:
        value = self.control.get(TIMELINE, "")
        return int(value) if value.isdigit() else None

    @property
    def cluster_state(self) -> str | None:
        return self.control.get(STATE)

    @property
    def would_be_primary(self) -> bool:
        """Started now, it would take writes."""
        return not self.running and not self.standby_signal

    def describe_stopped(self) -> str:
        said = []
        if self.cluster_state:
            said.append(f"cluster state '{self.cluster_state}'")
        if self.timeline is not None:
            said.append(f"timeline {self.timeline}")
        return ", ".join(said) or "pg_controldata could not be read"


def gather(
    host: HostExecutor,
    name: str,
    data_dir: str,
    pg_bin: Path,
    user: str | None,
    dsn: str,
    rejoin_hint: str = "",
) -> NodeFacts:
    """One node's facts, through its host executor (local, or SSH on the two-site lab)."""
    running = host.instance_processes(data_dir, user=user).state == "running"
    if running:
        role = None
        try:
            in_recovery = SqlExecutor(dsn, host=name).scalar(
                "select pg_is_in_recovery()", timeout=5
            )
            role = "standby" if in_recovery else "primary"
        except DrillError:
            pass
        return NodeFacts(name, True, role)
    signal = host.exists(f"{data_dir}/standby.signal", user=user)
    control: dict[str, str] = {}
    try:
        result = host.run(
            [f"{pg_bin}/pg_controldata", "-D", data_dir],
            user=user,
            timeout=30,
            check=False,
            env={"LC_ALL": "C"},
        )
        control = parse_controldata(result.stdout)
    except DrillError:
        pass
    return NodeFacts(name, False, None, signal, control, rejoin_hint)


def rewind_hint(data_dir: str, pg_bin: Path, source: str, where: str) -> str:
    """How to rejoin a node by hand: pg_rewind from the primary, then standby.signal."""
    return (
        f"{where}: `{pg_bin}/pg_rewind --target-pgdata={data_dir} --source-server='{source}'`, "
        f"set primary_conninfo = '{source}' in {data_dir}/postgresql.auto.conf, "
        f"`touch {data_dir}/standby.signal`,"
    )


@dataclass(frozen=True)
class GuardNode:
    """A node of a lab as the guard reaches it."""

    name: str
    data_dir: str
    dsn: str  # drctl's DSN of it
    conninfo: str  # what a standby of it would stream from (for the rejoin hint)
    host: HostExecutor
    user: str | None  # its OS user
    where: str  # where the hint's commands run: "as drctl-pg on this host"


def local_guard_nodes(local: HostExecutor, state: LabState, environment: str) -> list[GuardNode]:
    """The one-host lab's nodes as :func:`check_start` looks at them."""
    where = f"as {state.os_user} on this host" if state.os_user else "on this host"
    return [
        GuardNode(
            node.name,
            str(node.data_dir),
            connect_dsn(node, environment),
            f"host={node.host} port={node.port} user={DB_USER}",
            local,
            state.os_user,
            where,
        )
        for node in state.nodes
    ]


def check_start(nodes: list[GuardNode], pg_bin: Path) -> StartPlan:
    """Gather every node's facts and decide which stopped ones may start (a lab of two
    nodes: a node's rejoin hint rewinds it from the other)."""
    facts = []
    for node in nodes:
        other = next((n for n in nodes if n is not node), node)
        hint = rewind_hint(node.data_dir, pg_bin, other.conninfo, node.where)
        facts.append(gather(node.host, node.name, node.data_dir, pg_bin, node.user, node.dsn, hint))
    return plan_start(facts)


def parse_controldata(text: str) -> dict[str, str]:
    """``pg_controldata``'s ``Name:   value`` lines as a mapping."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip():
            found.setdefault(name.strip(), value.strip())
    return found


@dataclass(frozen=True)
class StartPlan:
    start: list[str]  # in order: a node that comes up as primary before the standbys
    refused: dict[str, str]  # node -> the sentence saying why it was not started


def plan_start(facts: list[NodeFacts]) -> StartPlan:
    """Which stopped nodes `lab up` may start, and why it refuses the others."""
    primaries = [f for f in facts if f.running and f.role == "primary"]
    candidates = [f for f in facts if f.would_be_primary]
    refused: dict[str, str] = {}
    chosen: NodeFacts | None = None
    if primaries:
        for node in candidates:
            refused[node.name] = _sentence(node, f"{primaries[0].name} runs as the primary")
    elif len(candidates) > 1:
        timelines = [c.timeline or 0 for c in candidates]
        best = max(timelines)
        if timelines.count(best) == 1:
            chosen = candidates[timelines.index(best)]
            for node in candidates:
                if node is not chosen:
                    refused[node.name] = _sentence(
                        node,
                        f"{chosen.name} (timeline {best}, promoted after it) is started as "
                        "the primary",
                    )
        else:
            names = " and ".join(c.name for c in candidates)
            for node in candidates:
                refused[node.name] = _sentence(
                    node,
                    f"{names} would both come up as primary on the same timeline {best}, and "
                    "which one holds the writes cannot be told from here",
                )
    elif candidates:
        chosen = candidates[0]
    order = [chosen.name] if chosen is not None else []
    order += [f.name for f in facts if not f.running and f.standby_signal]
    return StartPlan(order, refused)


def _sentence(node: NodeFacts, because: str) -> str:
    hint = f" {node.rejoin_hint}" if node.rejoin_hint else ""
    return (
        f"{node.name} was not started: it has no standby.signal, so it would come up as a "
        f"second primary while {because} (its data directory: {node.describe_stopped()}; an "
        "interrupted failover, switchover or rejoin leaves it so). Finish or undo the drill "
        "that left it: `drctl resume RUN_ID` or `drctl abort RUN_ID` (`drctl records list` "
        f"names it), or rejoin it as a standby by hand:{hint} then run `drctl lab up` again; "
        "or rebuild the lab: `drctl lab down`, `drctl lab up`."
    )


def refusal(plan: StartPlan, started: list[str]) -> SecondPrimaryRefused:
    text = " ".join(plan.refused.values())
    if started:
        text += f" Started: {', '.join(started)}."
    return SecondPrimaryRefused(text)
