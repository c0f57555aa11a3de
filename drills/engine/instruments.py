"""The background measurements of a run: the engine's canary writer and write probe, and the
service probe through the application. Each is optional; the playbook's ``measurements`` say
which run. What their logs mean is decided in ``drills.engine.measures``.

A real failover may start with no node that takes writes (its primary already down): the
engine's tables are then made as soon as one does (``DeferredPrepare``) and the run does not wait
for a first write before its steps."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from drills.engine.catalogue import BackgroundWriter, Catalogue, Instrumentation, node_engine
from drills.engine.measures import (
    Write,
    WriterLog,
    analyse_canary,
    analyse_write_outage,
)
from drills.engine.targets import HttpSession, Targets
from drills.model.clock import Clock
from drills.model.environment import Environment
from drills.model.errors import ConnectionFailed, DrillError, InputError
from drills.model.playbook import Measurements as Wanted
from drills.model.record import Measurements

log = logging.getLogger("drctl")

Endpoints = dict[tuple[str, int], str]


class ServiceProbe(threading.Thread):
    """Registers a patient through the application every few milliseconds and reads it back:
    the longest stretch without a successful round trip is the service outage. Each round trip
    names the database node that served it, by host and port."""

    def __init__(
        self, http: HttpSession, endpoints: Endpoints, clock: Clock, interval: float
    ) -> None:
        super().__init__(name="drctl-service-probe", daemon=True)
        self.http, self.endpoints, self.clock, self.interval = http, endpoints, clock, interval
        self.log = WriterLog()
        self._stop_event = threading.Event()

    def run(self) -> None:
        seq = 0
        while not self._stop_event.is_set():
            seq += 1
            self.log.attempts += 1
            try:
                created = self.http.request(
                    "POST",
                    "/registrations",
                    body={"patient_name": f"drctl-probe-{seq}", "department": "drctl"},
                )
                record = created.json() if created.status == 201 else None
                if not isinstance(record, dict):
                    raise ValueError(f"POST answered HTTP {created.status}")
                read = self.http.request("GET", f"/registrations/{record.get('id')}")
                if read.status != 200:
                    raise ValueError(f"GET answered HTTP {read.status}")
                mono, wall = time.monotonic(), time.time()
                served = (str(record.get("served_by_host")), int(record.get("served_by_port") or 0))
                node = self.endpoints.get(served, "?")
                self.log.acks.append(Write(seq, self.clock.offset_of(mono), wall, node))
            except (DrillError, ValueError) as exc:
                self.log.failures += 1
                self.log.last_error = str(exc)[:200]
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


class DeferredPrepare(threading.Thread):
    """No node accepted writes when the run started (a real failover from a primary already
    down): the engine's tables are made as soon as one does, the promoted standby, so that the
    writers, which retry every interval, can write there from then on."""

    def __init__(
        self, engine: Instrumentation, env: Environment, nodes: list[str], interval: float
    ) -> None:
        super().__init__(name="drctl-prepare-writers", daemon=True)
        self.engine, self.env, self.nodes, self.interval = engine, env, nodes, interval
        self.done = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.engine.prepare(self.env, self.nodes)
            except DrillError:
                self._stop_event.wait(self.interval)
                continue
            self.done = True
            return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


@dataclass
class Instruments:
    canary_writer: BackgroundWriter | None = None
    write_probe: BackgroundWriter | None = None
    service_probe: ServiceProbe | None = None
    writer_nodes: tuple[str, ...] = ()
    engine: Instrumentation | None = None
    preparing: DeferredPrepare | None = None

    def threads(self) -> list[BackgroundWriter]:
        found: list[BackgroundWriter | None] = [
            self.canary_writer,
            self.write_probe,
            self.service_probe,
        ]
        return [t for t in found if t is not None]

    def stop(self) -> None:
        if self.preparing is not None and self.preparing.is_alive():
            self.preparing.stop()
        for thread in self.threads():
            if thread.is_alive():
                thread.stop()


def _engine_name(env: Environment, nodes: list[str]) -> str | None:
    engines = {node_engine(env.nodes[n]) for n in nodes} - {None}
    return engines.pop() if len(engines) == 1 else None


def _none_writable(targets: Targets, nodes: list[str], catalogue: Catalogue) -> bool:
    """Whether every writer node says it is not primary now (standby or down)."""
    observer = catalogue.role_observers.get(_engine_name(targets.env, nodes) or "")
    if observer is None:
        return False
    by_name = targets.view({name: name for name in nodes})
    for name in nodes:
        try:
            if observer(by_name, name) == "primary":
                return False
        except DrillError:
            continue
    return True


def _engine_of(env: Environment, nodes: list[str], catalogue: Catalogue) -> Instrumentation:
    engines = {node_engine(env.nodes[n]) for n in nodes} - {None}
    if len(engines) != 1:
        raise InputError(
            f"the writers need the database nodes of one engine (nodes {', '.join(nodes)})"
        )
    engine = engines.pop()
    assert engine is not None
    try:
        return catalogue.instruments[engine]
    except KeyError:
        raise InputError(f"engine {engine} has no canary writer") from None


def start_instruments(
    wanted: Wanted,
    targets: Targets,
    run_id: str,
    clock: Clock,
    catalogue: Catalogue,
) -> Instruments:
    """Start what the playbook measures and wait until each has written once (5 s at most)."""
    env = targets.env
    found = Instruments()
    if wanted.canary or wanted.write_probe:
        nodes = [targets.roles[r] for r in wanted.writer_roles if r in targets.roles]
        nodes = [n for n in nodes if node_engine(env.nodes[n])]
        engine = _engine_of(env, nodes, catalogue)
        try:
            engine.prepare(env, nodes)
        except ConnectionFailed:
            if not _none_writable(targets, nodes, catalogue):
                raise
            # A real failover from a primary already down: nothing takes writes until the
            # standby is promoted. The writers start now and write from then on.
            found.preparing = DeferredPrepare(engine, env, nodes, wanted.canary_interval)
            found.preparing.start()
        found.engine, found.writer_nodes = engine, tuple(nodes)
        if wanted.canary:
            found.canary_writer = engine.canary(env, nodes, run_id, clock, wanted.canary_interval)
        if wanted.write_probe:
            found.write_probe = engine.write_probe(
                env, nodes, run_id, clock, wanted.write_probe_interval
            )
    if wanted.service_probe:
        endpoints = {
            (node.host, node.port): name for name, node in env.nodes.items() if node_engine(node)
        }
        found.service_probe = ServiceProbe(
            targets.http(wanted.service_role), endpoints, clock, wanted.service_probe_interval
        )
    for thread in found.threads():
        thread.start()
    # Each writes once before the steps (5 s at most); not when nothing can take a write yet.
    deadline = time.monotonic() + (5 if found.preparing is None else 0)
    while time.monotonic() < deadline and any(not t.log.acks for t in found.threads()):
        time.sleep(0.01)
    return found


def stop_instruments(
    found: Instruments, wanted: Wanted, env: Environment, run_id: str, clock: Clock
) -> Measurements:
    """Let every instrument see the world after the last step, stop them, and measure."""
    if not found.threads():
        return Measurements()
    steps_done = clock.now().offset
    deadline = time.monotonic() + wanted.settle
    while time.monotonic() < deadline and not all(
        any(a.offset > steps_done for a in t.log.acks[-3:]) for t in found.threads()
    ):
        time.sleep(0.01)
    found.stop()
    stopped = clock.now().offset
    outage = analyse_write_outage(found.write_probe.log, stopped) if found.write_probe else None
    service = (
        analyse_write_outage(found.service_probe.log, stopped) if found.service_probe else None
    )
    canary_result = None
    if found.canary_writer is not None and found.engine is not None:
        try:
            present, checked_on = found.engine.surviving(env, list(found.writer_nodes), run_id)
        except DrillError as exc:
            log.warning("canaries could not be read back: %s", exc)
            present, checked_on = None, None
        canary_result = analyse_canary(
            found.canary_writer.log, present, checked_on if present is not None else None
        )
    return Measurements(
        write_outage_seconds=outage.seconds if outage else None,
        service_outage_seconds=service.seconds if service else None,
        lost_writes=canary_result.lost
        if canary_result is not None and canary_result.rpo_seconds is not None
        else None,
        rpo_seconds=canary_result.rpo_seconds if canary_result else None,
        write_probe=outage,
        service_probe=service,
        canary=canary_result,
    )
