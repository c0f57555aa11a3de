"""Fencing the old primary before a failover promotes its standby: ``pg.fence`` and ``pg.fenced``.

A fence holds only when the old primary can commit nothing any more. A closed port is not that:
after a ``kill -9`` of the postmaster alone its backends live on for a moment and can still
commit on sessions already open. So drctl looks from every place it can: the host executor (the
postmaster, and every process working in the data directory: ``instance_processes``), and the
port (does anything take a connection). A failover starts from the state the site is in, and
``decide_fence`` says what to do about it, one sentence per decision:

==========================  ===========  ================  ===========  ========================
host executor               postmaster   instance members  port         decision
==========================  ===========  ================  ===========  ========================
reached, data dir seen      running      (any)             (any)        ``stop``: pg_ctl stop -m
                                                                        immediate through the
                                                                        host; after a stop that
                                                                        did not take, ``kill``
reached, data dir seen      not running  some left         (any)        ``kill``: SIGKILL them
                                                                        by pid
reached, data dir seen      not running  none              no answer    ``fenced``
reached, data dir seen      not running  none              answers      ``unconfirmed``
reached, data dir not seen  --           --                --           ``unconfirmed``
unreachable                 --           --                --           ``fenced`` if the site's
                                                                        fence command confirmed
                                                                        it (exit 0); else
                                                                        ``site_fence`` if the
                                                                        environment names one
                                                                        (not yet run); else
                                                                        ``unconfirmed``
==========================  ===========  ================  ===========  ========================

``pg.fence`` (the action) acts on each decision until the node is fenced, or until the fence
cannot be confirmed; it never raises for an unconfirmed fence. ``pg.fenced`` (the check that
follows it) asks the same questions again: the step fails when it does not hold, and a run that
carries the step's override (``unfenced_promotion``) goes on, recorded. The site fence
command's confirmation is the one thing a check cannot see again on a host it cannot reach: the
action keeps it for the run (per ``Targets``), and the check reads it there.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import Field

from drills.engine.catalogue import ActionResult, ActionSpec, Params
from drills.engine.targets import Targets
from drills.executors.host import HostExecutor
from drills.executors.local import LocalExecutor
from drills.model.clock import utc_iso
from drills.model.environment import FENCE_LOCAL, FenceCommand, PostgresAccess
from drills.model.errors import ConnectionFailed, DrillError, ExecutorError
from verify.postgres import NoParams, postmaster_state
from verify.result import Observation, Probe

ENGINE = "postgres"
Decision = Literal["fenced", "stop", "kill", "site_fence", "unconfirmed"]
NO_CONNECTION = "no connection"
EXPECTED = (
    "no process of its instance left and its port takes no connection, "
    "or the site's fence command confirmed the fence"
)
POLL = 0.05
SETTLE = 2.0  # seconds an unconfirmed fence of a host that answers is looked at again


@dataclass(frozen=True)
class FenceFacts:
    """What drctl sees of the old primary now, from its host and its port."""

    node: str
    host_error: str | None = None  # None: the host executor answered
    data_dir_seen: bool = True
    state: str = "?"  # the postmaster: running, not running, dead, not yet reaped
    members: tuple[int, ...] = ()  # live processes of the instance (postmaster included)
    port: str = NO_CONNECTION  # no connection, read-only, accepts writes, answers (...)
    stop_tried: bool = False  # pg_ctl stop -m immediate already ran in this fence
    fence_command: str | None = None  # the site's fence command, as it would run
    site_fenced: str | None = None  # the site fence command's confirmation
    site_fence_failed: str | None = None  # why the site fence command did not confirm

    @property
    def reached(self) -> bool:
        return self.host_error is None

    def summary(self) -> str:
        """What ``pg.fenced`` observed, in one line."""
        if not self.reached:
            fence = (
                "confirmed"
                if self.site_fenced
                else "failed"
                if self.site_fence_failed
                else "not run"
                if self.fence_command
                else "none named"
            )
            return f"host unreachable; port: {self.port}; site fence command: {fence}"
        if not self.data_dir_seen:
            return f"data directory not visible on its host; port: {self.port}"
        return (
            f"postmaster {self.state}; {len(self.members)} process(es) of its instance; "
            f"port: {self.port}"
        )


@dataclass(frozen=True)
class FenceDecision:
    decision: Decision
    sentence: str


def _pids(pids: tuple[int, ...]) -> str:
    shown = ", ".join(str(p) for p in pids[:10])
    return shown + (", ..." if len(pids) > 10 else "")


def decide_fence(facts: FenceFacts) -> FenceDecision:
    """The decision table of the module docstring: what to do with the old primary now."""
    node = facts.node
    if not facts.reached:
        if facts.site_fenced:
            return FenceDecision(
                "fenced",
                f"{node} is fenced: its host cannot be reached, and the site's fence command "
                f"confirmed it ({facts.site_fenced})",
            )
        if facts.site_fence_failed:
            return FenceDecision(
                "unconfirmed",
                f"{node}'s host cannot be reached ({facts.host_error}) and the site's fence "
                f"command did not confirm the fence ({facts.site_fence_failed}): the fence "
                "cannot be confirmed",
            )
        if facts.fence_command:
            return FenceDecision(
                "site_fence",
                f"{node}'s host cannot be reached ({facts.host_error}): run the site's fence "
                f"command ({facts.fence_command})",
            )
        return FenceDecision(
            "unconfirmed",
            f"{node}'s host cannot be reached ({facts.host_error}) and the environment names no "
            f"fence command for it (its port: {facts.port}): the fence cannot be confirmed",
        )
    if not facts.data_dir_seen:
        return FenceDecision(
            "unconfirmed",
            f"{node}'s host answers but its data directory cannot be seen there: no count of "
            "its processes can be trusted, the fence cannot be confirmed",
        )
    if facts.state == "running":
        if facts.stop_tried:
            return FenceDecision(
                "kill",
                f"pg_ctl stop did not stop {node}: SIGKILL its postmaster and every process of "
                f"its instance (pids {_pids(facts.members)})",
            )
        return FenceDecision(
            "stop",
            f"{node} is alive (its postmaster runs; its port: {facts.port}): fence it actively "
            "with pg_ctl stop -m immediate through its host, then SIGKILL whatever of its "
            "instance is left",
        )
    if facts.members:
        return FenceDecision(
            "kill",
            f"{node}'s postmaster is gone ({facts.state}) but {len(facts.members)} process(es) "
            f"of its instance are left (pids {_pids(facts.members)}), which can still commit on "
            "sessions already open: SIGKILL them by pid",
        )
    if facts.port != NO_CONNECTION:
        return FenceDecision(
            "unconfirmed",
            f"{node} has no process of its instance on its host, yet its port answers "
            f"({facts.port}): something there still takes connections, the fence cannot be "
            "confirmed",
        )
    return FenceDecision(
        "fenced",
        f"{node} is fenced: no process of its instance is left on its host ({facts.state}) "
        "and its port takes no connection",
    )


# -- what drctl sees --------------------------------------------------------------------------


def port_state(probe: Probe, role: str) -> str:
    """Whether anything takes a connection on the node's port, and whether it could write.

    A session kept from before may fail with the error of a server going away ("terminating
    connection ..."): that is no answer of the port, so a fresh session asks once more."""
    for attempt in (1, 2):
        try:
            read_only = probe.sql(role).scalar(
                "select pg_is_in_recovery()"
                " or current_setting('default_transaction_read_only')::bool",
                timeout=3,
            )
        except ConnectionFailed:
            return NO_CONNECTION
        except DrillError as exc:
            if attempt == 2:
                return f"answers ({exc.message.strip()[:120]})"
            probe.sql(role).close()
            continue
        return "read-only" if read_only else "accepts writes"
    raise AssertionError("unreachable")


@dataclass
class _Kept:
    """What a fence learnt in this run that a check cannot ask again: the site's answer."""

    site_fenced: dict[str, str] = field(default_factory=dict)
    site_fence_failed: dict[str, str] = field(default_factory=dict)


_kept: weakref.WeakKeyDictionary[object, _Kept] = weakref.WeakKeyDictionary()
_kept_lock = threading.Lock()


def _kept_for(probe: object) -> _Kept:
    with _kept_lock:
        try:
            return _kept.setdefault(probe, _Kept())
        except TypeError:  # a probe that cannot be weakly referenced: nothing is kept
            return _Kept()


def describe_fence_command(fence: FenceCommand) -> str:
    """``cmd args`` on local (drctl's machine) or on the node it runs on."""
    return f"`{' '.join(fence.command)}` on {fence.on}"


def observe(probe: Probe, role: str, *, stop_tried: bool = False) -> FenceFacts:
    """The facts of the table, asked of the node's host and port now."""
    name, node, pg = probe.postgres(role)
    kept = _kept_for(probe)
    fence = describe_fence_command(node.fence) if node.fence is not None else None
    port = port_state(probe, role)
    user = probe.os_user(role)
    try:
        host = probe.host(role)
        if not host.exists(f"{pg.data_dir}/PG_VERSION", user=user):
            return FenceFacts(name, data_dir_seen=False, port=port, fence_command=fence)
        state = postmaster_state(probe, role)
        members = host.instance_processes(pg.data_dir, user=user).live_pids
    except ExecutorError as exc:
        return FenceFacts(
            name,
            host_error=exc.message,
            port=port,
            fence_command=fence,
            site_fenced=kept.site_fenced.get(name),
            site_fence_failed=kept.site_fence_failed.get(name),
        )
    return FenceFacts(
        name,
        state=state,
        members=tuple(members),
        port=port,
        stop_tried=stop_tried,
        fence_command=fence,
    )


def fenced(probe: Probe, role: str, params: NoParams) -> Observation:
    """The old primary is fenced: no process of its instance is left and its port takes no
    connection; or its host cannot be reached and the site's fence command confirmed it."""
    facts = observe(probe, role)
    decision = decide_fence(facts)
    return Observation(facts.summary(), EXPECTED, decision.decision == "fenced", decision.sentence)


# -- pg.fence ---------------------------------------------------------------------------------


class FenceParams(Params):
    stop_timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds pg_ctl stop -m immediate may take."
    )


def _stop_argv(pg: PostgresAccess, timeout: float) -> list[str]:
    return [
        f"{pg.bin_dir}/pg_ctl",
        "stop",
        "-D",
        pg.data_dir,
        "-m",
        "immediate",
        "-w",
        "-t",
        str(max(1, int(timeout))),
    ]


def _fence_executor(targets: Targets, fence: FenceCommand) -> HostExecutor:
    if fence.on == FENCE_LOCAL:
        return LocalExecutor(host=FENCE_LOCAL)
    return targets.host_of(fence.on)


def _run_site_fence(targets: Targets, name: str, fence: FenceCommand) -> tuple[bool, str]:
    """Run the site's fence command: (confirmed, what happened)."""
    executor = _fence_executor(targets, fence)
    described = describe_fence_command(fence)
    try:
        result = executor.run(fence.command, user=fence.user, timeout=fence.timeout, check=False)
    except DrillError as exc:
        return False, f"{described} could not run: {exc.message}"
    finally:
        if fence.on == FENCE_LOCAL:
            executor.close()
    if result.returncode == 0:
        return True, f"{described} exited 0 at {utc_iso(time.time())}"
    tail = result.output[-300:]
    return False, f"{described} exited {result.returncode}" + (f": {tail}" if tail else "")


def fence_run(targets: Targets, role: str, params: FenceParams, timeout: float) -> ActionResult:
    name, node, pg = targets.postgres(role)
    deadline = time.monotonic() + timeout
    kept = _kept_for(targets)
    decisions: list[dict[str, Any]] = []
    killed: list[int] = []
    commands: list[str] = []
    stop_tried = False
    unsettled = 0.0  # monotonic: since when a reachable host's fence looks unconfirmed
    while True:
        facts = observe(targets, role, stop_tried=stop_tried)
        decision = decide_fence(facts)
        if not decisions or decisions[-1]["sentence"] != decision.sentence:
            decisions.append(
                {
                    "decision": decision.decision,
                    "sentence": decision.sentence,
                    "at": utc_iso(time.time()),
                    "observed": facts.summary(),
                }
            )
        if decision.decision == "fenced":
            break
        if decision.decision == "unconfirmed":
            # What a host that answers shows may still be settling (a port whose server is
            # going away): look again for a moment. A host that cannot be reached, or a site
            # fence that did not confirm, will not change by waiting.
            if not facts.reached or facts.site_fence_failed:
                break
            unsettled = unsettled or time.monotonic()
            if time.monotonic() - unsettled > SETTLE:
                break
            time.sleep(POLL)
            continue
        unsettled = 0.0
        if time.monotonic() > deadline:
            decisions.append(
                {
                    "decision": "unconfirmed",
                    "sentence": f"{name} was still not fenced after {timeout:g}s "
                    f"({facts.summary()}): the fence cannot be confirmed",
                    "at": utc_iso(time.time()),
                    "observed": facts.summary(),
                }
            )
            break
        host = targets.host(role)
        if decision.decision == "stop":
            stop_tried = True
            argv = _stop_argv(pg, params.stop_timeout)
            commands.append(targets.describe(role, argv))
            # Whether pg_ctl says it worked or not, the next look decides: stopped, or killed.
            with contextlib.suppress(DrillError):
                targets.run(role, argv, timeout=params.stop_timeout + 5)
        elif decision.decision == "kill":
            pids = list(facts.members)
            # A host lost in the middle of this is seen so by the next look, and decided then.
            with contextlib.suppress(ExecutorError):
                host.signal(pids, "KILL", user=targets.os_user(role))
            killed += [p for p in pids if p not in killed]
            commands.append(targets.describe(role, ["kill", "-KILL", *map(str, pids)]))
            time.sleep(POLL)
        elif decision.decision == "site_fence":
            assert node.fence is not None
            commands.append(describe_fence_command(node.fence))
            confirmed, what = _run_site_fence(targets, name, node.fence)
            (kept.site_fenced if confirmed else kept.site_fence_failed)[name] = what
    final = decisions[-1]
    data: dict[str, Any] = {
        "node": name,
        "fenced": final["decision"] == "fenced",
        "decision": final["decision"],
        "decisions": decisions,
        "commands": commands,
        "killed_pids": killed,
        "facts": asdict(facts),
    }
    return ActionResult("\n".join(d["sentence"] for d in decisions), data)


def fence_describe(targets: Targets, role: str, params: FenceParams) -> list[str]:
    name, node, pg = targets.postgres(role)
    lines = [
        f"look at {name}: the processes of {pg.data_dir} on its host, and its port "
        f"{node.host}:{node.port}",
        "if its postmaster runs: " + targets.describe(role, _stop_argv(pg, params.stop_timeout)),
        "if processes of its instance are left: "
        + targets.describe(role, ["kill", "-KILL", "<their pids>"]),
    ]
    if node.fence is not None:
        lines.append(
            f"if its host cannot be reached: the site's fence command "
            f"{describe_fence_command(node.fence)} (exit 0: fenced)"
        )
    else:
        lines.append(
            "if its host cannot be reached: no fence command is named; the fence cannot be "
            "confirmed and the standby is not promoted without the step's override"
        )
    return lines


def fence_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            "pg.fence",
            FenceParams,
            fence_run,
            fence_describe,
            True,
            "Fence the old primary from the state it is in: confirm it down (no process of its "
            "instance, no connection), stop it (pg_ctl stop -m immediate) or SIGKILL what is "
            "left, or run the site's fence command when its host cannot be reached.",
            ENGINE,
        )
    ]
