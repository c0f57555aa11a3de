"""Measured, not inferred: the pure analysis of what the background writers saw.

The canary writer commits numbered rows; after the drill the acknowledged rows missing on the new
primary are the lost writes, and the time between the last acknowledged canary and the newest one
that survived is the RPO. The write probe (and the service probe, through the application) writes
every few milliseconds; the stretch from the last good write on the old node to the first good
one on the new node is the outage. Every write is stamped with the run's clock.

These functions only read logs: each engine's writers fill them (``Catalogue.instruments``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from drills.model.clock import utc_iso
from drills.model.record import CanaryResult, WriteOutage


@dataclass(frozen=True)
class Write:
    seq: int
    offset: float  # run clock, at acknowledgement
    wall: float
    node: str


@dataclass
class WriterLog:
    attempts: int = 0
    failures: int = 0
    acks: list[Write] = field(default_factory=list)
    last_error: str = ""


def analyse_canary(
    log: WriterLog, present: set[int] | None, checked_on: str | None
) -> CanaryResult:
    """Lost writes and RPO from the acknowledged canaries and those found on the new primary."""
    acked = log.acks
    if present is None:
        return CanaryResult(
            written=log.attempts,
            acknowledged=len(acked),
            lost=0,
            rpo_seconds=None,
            note="the canaries could not be read back: no node accepts writes",
        )
    lost = [w for w in acked if w.seq not in present]
    if not lost:
        return CanaryResult(
            written=log.attempts,
            acknowledged=len(acked),
            lost=0,
            checked_on=checked_on,
            rpo_seconds=0.0 if acked else None,
            last_acknowledged_at=utc_iso(acked[-1].wall) if acked else None,
            note="" if acked else "no canary write was acknowledged",
        )
    # The writes lost are those of the node that failed; compare within that node's writes.
    node = lost[-1].node
    on_node = [w for w in acked if w.node == node]
    last = max(on_node, key=lambda w: w.offset)
    surviving = [w for w in on_node if w.seq in present]
    if surviving:
        newest = max(surviving, key=lambda w: w.offset)
        rpo = round(last.offset - newest.offset, 3)
        newest_at: str | None = utc_iso(newest.wall)
        note = ""
    else:
        rpo = round(last.offset - on_node[0].offset, 3)
        newest_at = None
        note = f"no canary acknowledged by {node} survived; RPO counted from its first canary"
    return CanaryResult(
        written=log.attempts,
        acknowledged=len(acked),
        lost=len(lost),
        lost_seqs=[w.seq for w in lost][:1000],
        checked_on=checked_on,
        rpo_seconds=rpo,
        last_acknowledged_at=utc_iso(last.wall),
        newest_surviving_at=newest_at,
        note=note,
    )


def analyse_write_outage(log: WriterLog, stopped_offset: float) -> WriteOutage:
    """The outage: from the last good write on the old primary to the first good write on the
    new one (the longest such switch if writes moved more than once).

    If the writes never moved to another node (a rolled-back drill restarts the same primary),
    it is the longest stretch without a successful write, and the note says so. If the writes
    never came back before the probe stopped, the outage is still open and has no end to
    measure: the result says so instead of inventing one.
    """
    acks = log.acks
    if len(acks) < 2:
        return WriteOutage(
            seconds=None,
            attempts=log.attempts,
            failures=log.failures,
            note="fewer than two successful probe writes",
        )
    pairs = list(itertools.pairwise(acks))
    switches = [(a, b) for a, b in pairs if a.node != b.node]
    note = ""
    if not switches:
        note = "the writes never moved to another node: the longest gap between writes"
    worst = max(switches or pairs, key=lambda pair: pair[1].offset - pair[0].offset)
    gap = worst[1].offset - worst[0].offset
    trailing = stopped_offset - acks[-1].offset
    if trailing > gap and trailing > 0.5:
        return WriteOutage(
            seconds=None,
            last_write_at=utc_iso(acks[-1].wall),
            last_write_node=acks[-1].node,
            attempts=log.attempts,
            failures=log.failures,
            note=f"no write succeeded in the last {trailing:.3f}s before the probe stopped: "
            "the outage had not ended",
        )
    return WriteOutage(
        seconds=round(gap, 3),
        last_write_at=utc_iso(worst[0].wall),
        last_write_node=worst[0].node,
        first_write_at=utc_iso(worst[1].wall),
        first_write_node=worst[1].node,
        attempts=log.attempts,
        failures=log.failures,
        note=note,
    )
