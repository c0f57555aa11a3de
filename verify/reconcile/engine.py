"""The comparison itself, engine-neutral: both sides at once (``Pair``), and the bisection of
differing key ranges down to the rows that differ (``compare_table``).

Each side computes, inside its database, a row count and a checksum (the sum of 64-bit row
hashes) per key range; both sides run at once, each on its own connection in its own thread.
Ranges whose count or checksum differ are split again (``FANOUT`` ways, by integer arithmetic on
an integer leading key column, else at key quantiles read from the side with more rows), until a
differing range holds at most ``LEAF_ROWS`` rows; then the keys and row hashes of just those
ranges are fetched and matched, naming each differing row as missing on one side or changed.

Memory stays flat whatever the table size: Python holds two numbers per key range of the level
being compared (at most ``BATCH_RANGES`` at a time), at most ``LEAF_BATCH_ROWS`` leaf rows at a
time, and at most ``max_diffs`` differences per table.

This module talks to ``Session`` objects only (``verify.reconcile.model``): it knows no SQL.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from drills.model.errors import ConnectionFailed
from verify.reconcile.model import (
    Bound,
    KeyRange,
    LeafRow,
    RowDiff,
    Session,
    SessionOpener,
    Stat,
    TablePlan,
    TableResult,
)

FANOUT = 64  # ranges per split
LEAF_ROWS = 4096  # a differing range this small has its rows fetched and matched
BATCH_RANGES = 256  # ranges per statement
LEAF_BATCH_ROWS = 32768  # rows fetched per statement, at most

T = TypeVar("T")
U = TypeVar("U")


# ---------------------------------------------------------------------------------- the pair


class Pair:
    """Both sides, and the two threads that query them at once."""

    def __init__(self, source: Session, target: Session, pool: ThreadPoolExecutor) -> None:
        self.source = source
        self.target = target
        self._pool = pool

    def both(
        self, on_source: Callable[[Session], T], on_target: Callable[[Session], U]
    ) -> tuple[T, U]:
        """Run one query on each side at once; if either fails, cancel the other."""
        futures: list[Future[Any]] = [
            self._pool.submit(on_source, self.source),
            self._pool.submit(on_target, self.target),
        ]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C while waiting
            self._cancel(futures, [self.source, self.target])
            raise
        failed = [f.exception() for f in futures if f in done and f.exception() is not None]
        if failed:
            self._cancel(futures, [self.source, self.target])
            raise failed[0]  # type: ignore[misc]
        return futures[0].result(), futures[1].result()

    def same(self, fn: Callable[[Session], T]) -> tuple[T, T]:
        return self.both(fn, fn)

    @staticmethod
    def _cancel(futures: list[Future[Any]], sessions: list[Session]) -> None:
        for future, session in zip(futures, sessions, strict=True):
            if not future.done():
                session.cancel()
        wait(futures)


@contextlib.contextmanager
def open_pair(open_source: SessionOpener, open_target: SessionOpener) -> Iterator[Pair]:
    """Open both sides at once; errors name the side (each opener's errors do)."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="reconcile") as pool:
        futures = [pool.submit(open_source), pool.submit(open_target)]
        wait(futures)
        errors = [f.exception() for f in futures if f.exception() is not None]
        sessions = [f.result() for f in futures if f.exception() is None]
        if errors:
            for session in sessions:
                session.close()
            if len(errors) == 2 and all(isinstance(e, ConnectionFailed) for e in errors):
                raise ConnectionFailed(f"{errors[0]}; and {errors[1]}") from errors[0]
            raise errors[0]  # type: ignore[misc]
        pair = Pair(sessions[0], sessions[1], pool)
        try:
            yield pair
        finally:
            for session in sessions:
                session.close()


# ---------------------------------------------------------------------------------- comparing


def _differ(a: Stat, b: Stat) -> bool:
    return a[0] != b[0] or (a[1] or 0) != (b[1] or 0)


INT8_MAX = 2**63 - 1


def _int_split(lo: int, hi: int, parts: int) -> list[KeyRange]:
    """[lo, hi) in at most ``parts`` ranges of equal width, on the leading key column. The last
    end, one past the largest key, is left open when it is past the largest bigint."""
    parts = max(1, min(parts, hi - lo))
    width = math.ceil((hi - lo) / parts)
    edges = [*range(lo, hi, width), hi]
    return [
        KeyRange((str(a),), None if b == hi and b > INT8_MAX else (str(b),), a, b)
        for a, b in itertools.pairwise(edges)
    ]


def _between(r: KeyRange, points: list[Bound]) -> list[KeyRange]:
    edges: list[Bound | None] = [r.lower, *points, r.upper]
    return [
        KeyRange(a, b) for a, b in itertools.pairwise(edges) if a is None or b is None or a != b
    ]


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Diffs:
    """Differences found in one table, at most ``limit`` of them."""

    def __init__(self, plan: TablePlan, limit: int) -> None:
        self.plan = plan
        self.limit = limit
        self.changed: dict[Bound, tuple[object, ...]] = {}
        self.only_source: dict[Bound, tuple[tuple[object, ...], Any]] = {}
        self.only_target: dict[Bound, tuple[tuple[object, ...], Any]] = {}
        self.truncated = False

    @property
    def room(self) -> int:
        return self.limit - len(self.changed) - len(self.only_source) - len(self.only_target)

    def add_rows(self, source: list[LeafRow], target: list[LeafRow]) -> None:
        # A key normally falls in the same range on both sides; matching across the whole batch
        # (and ``finish`` across batches) also covers sides that order text keys differently.
        s_rows = {text: (key, h) for _, text, key, h in source}
        t_rows = {text: (key, h) for _, text, key, h in target}
        for text, (key, h) in s_rows.items():
            other = t_rows.get(text)
            if other is None:
                self._put(self.only_source, text, key, h)
            elif other[1] != h:
                self._put_changed(text, key)
        for text, (key, h) in t_rows.items():
            if text not in s_rows:
                self._put(self.only_target, text, key, h)

    def _put(self, into: dict[Bound, Any], text: Bound, key: tuple[object, ...], h: Any) -> None:
        if self.room > 0:
            into[text] = (key, h)
        else:
            self.truncated = True

    def _put_changed(self, text: Bound, key: tuple[object, ...]) -> None:
        if self.room > 0:
            self.changed[text] = key
        else:
            self.truncated = True

    def finish(self) -> list[RowDiff]:
        for text in [t for t in self.only_source if t in self.only_target]:
            (key, s_hash), (_, t_hash) = self.only_source.pop(text), self.only_target.pop(text)
            if s_hash != t_hash:
                self.changed[text] = key
        names = tuple(c.name for c in self.plan.key)
        table = self.plan.display
        found = [
            *(RowDiff(table, key, "changed", names) for key in self.changed.values()),
            *(RowDiff(table, k, "missing_in_target", names) for k, _ in self.only_source.values()),
            *(RowDiff(table, k, "missing_in_source", names) for k, _ in self.only_target.values()),
        ]
        try:
            found.sort(key=lambda d: d.key)
        except TypeError:
            found.sort(key=lambda d: tuple(str(v) for v in d.key))
        return found


def compare_table(pair: Pair, plan: TablePlan, max_diffs: int) -> TableResult:
    started = time.monotonic()
    names = tuple(c.name for c in plan.key)
    if plan.missing_on is not None:
        present = pair.target if plan.missing_on == "source" else pair.source
        rows = present.count(plan)
        source_rows, target_rows = (rows, 0) if plan.missing_on == "target" else (0, rows)
        return TableResult(
            plan.display,
            False,
            source_rows,
            target_rows,
            "whole-table",
            [],
            plan.note,
            seconds=time.monotonic() - started,
        )
    if not plan.key:
        s_stat, t_stat = pair.same(lambda s: s.whole(plan))
        return TableResult(
            plan.display,
            not _differ(s_stat, t_stat),
            s_stat[0],
            t_stat[0],
            "whole-table",
            [],
            plan.note,
            seconds=time.monotonic() - started,
        )

    # Level 0: the whole key space in up to FANOUT explicit ranges.
    ranges: list[KeyRange]
    if plan.key[0].integer:
        s_bounds, t_bounds = pair.same(lambda s: s.int_bounds(plan))
        known = [b for b in (s_bounds, t_bounds) if b is not None]
        if known:
            lo = min(b[0] for b in known)
            hi = max(b[1] for b in known) + 1
            ranges = _int_split(lo, hi, FANOUT)
        else:
            ranges = [KeyRange()]
    else:
        ranges = _between(KeyRange(), pair.source.sample_bounds(plan, FANOUT))
    differing: list[tuple[KeyRange, Stat, Stat]] = []
    source_rows = target_rows = 0
    for batch in _batches(ranges, BATCH_RANGES):
        s_stats, t_stats = pair.same(lambda s, batch=batch: s.range_stats(plan, batch))  # type: ignore[misc]
        for r, s_stat, t_stat in zip(batch, s_stats, t_stats, strict=True):
            source_rows += s_stat[0]
            target_rows += t_stat[0]
            if _differ(s_stat, t_stat):
                differing.append((r, s_stat, t_stat))

    checksums_differ = bool(differing)
    diffs = _Diffs(plan, max_diffs)
    if differing and max_diffs == 0:
        diffs.truncated = True
    while differing and diffs.room > 0:
        if len(differing) > diffs.room:
            differing, diffs.truncated = differing[: diffs.room], True
        leaves: list[tuple[KeyRange, Stat, Stat]] = []
        to_split: list[tuple[KeyRange, Stat, Stat]] = []
        for item in differing:
            _, (sc, _), (tc, _) = item
            (leaves if max(sc, tc) <= LEAF_ROWS or min(sc, tc) == 0 else to_split).append(item)
        _match_leaves(pair, plan, leaves, diffs)
        differing = _split_level(pair, plan, to_split, diffs) if diffs.room > 0 else []
        if to_split and diffs.room <= 0:
            diffs.truncated = True
    found = diffs.finish()
    truncated = diffs.truncated
    notes = [plan.note] if plan.note else []
    if truncated:
        notes.append(
            f"stopped after {len(found)} differences (max_diffs {max_diffs}): there may be more"
        )
    elif checksums_differ and not found:
        notes.append("checksums differ but no differing row was located")
    note = "; ".join(notes)
    identical = not checksums_differ
    return TableResult(
        plan.display,
        identical,
        source_rows,
        target_rows,
        "keyed",
        found,
        note,
        names,
        truncated,
        time.monotonic() - started,
    )


def _match_leaves(
    pair: Pair, plan: TablePlan, leaves: list[tuple[KeyRange, Stat, Stat]], diffs: _Diffs
) -> None:
    """Fetch and match the rows of small differing ranges, a bounded batch at a time."""
    batch: list[tuple[KeyRange, Stat, Stat]] = []
    rows = 0

    def flush() -> None:
        nonlocal rows
        if not batch or diffs.room <= 0:
            if batch:
                diffs.truncated = True
            batch.clear()
            rows = 0
            return
        room = diffs.room
        # A range empty on one side: the other side's rows are all differences; fetch at most
        # as many as can still be listed.
        s_req = [(r, room if tc == 0 else None) for r, (sc, _), (tc, _) in batch]
        t_req = [(r, room if sc == 0 else None) for r, (sc, _), (tc, _) in batch]
        for (_, (sc, _), (tc, _)), (_, s_limit), (_, t_limit) in zip(
            batch, s_req, t_req, strict=True
        ):
            if (s_limit is not None and sc > s_limit) or (t_limit is not None and tc > t_limit):
                diffs.truncated = True
        s_rows, t_rows = pair.both(
            lambda s: s.leaf_rows(plan, s_req), lambda s: s.leaf_rows(plan, t_req)
        )
        diffs.add_rows(s_rows, t_rows)
        batch.clear()
        rows = 0

    for item in leaves:
        _, (sc, _), (tc, _) = item
        size = min(max(sc, tc), diffs.room) if min(sc, tc) == 0 else max(sc, tc)
        if batch and (rows + size > LEAF_BATCH_ROWS or len(batch) >= BATCH_RANGES):
            flush()
        batch.append(item)
        rows += size
    flush()


def _split_level(
    pair: Pair, plan: TablePlan, to_split: list[tuple[KeyRange, Stat, Stat]], diffs: _Diffs
) -> list[tuple[KeyRange, Stat, Stat]]:
    """Split each differing range into parts of about half a leaf (at most FANOUT of them);
    return the sub-ranges that still differ."""
    differing: list[tuple[KeyRange, Stat, Stat]] = []
    explored = 0
    # A handful of parents at a time, so that the sub-ranges held stay few.
    for parents in _batches(to_split, max(1, BATCH_RANGES // FANOUT) * 4):
        children: list[KeyRange] = []
        s_requests: list[tuple[int, KeyRange, int, int]] = []
        t_requests: list[tuple[int, KeyRange, int, int]] = []
        slots: list[list[KeyRange]] = []
        for index, (r, (sc, _), (tc, _)) in enumerate(parents):
            slots.append([])
            rows = max(sc, tc)
            parts = min(FANOUT, max(2, math.ceil(2 * rows / LEAF_ROWS)))
            if r.lo is not None and r.hi is not None and r.hi - r.lo >= 2:
                slots[index] = _int_split(r.lo, r.hi, parts)
                continue
            step = max(1, math.ceil(rows / parts))
            (s_requests if sc >= tc else t_requests).append((index, r, step, rows))
        if s_requests or t_requests:
            s_asks = [q[1:] for q in s_requests]
            t_asks = [q[1:] for q in t_requests]
            s_points, t_points = pair.both(
                lambda s, asks=s_asks: s.split_points(plan, asks) if asks else [],  # type: ignore[misc]
                lambda s, asks=t_asks: s.split_points(plan, asks) if asks else [],  # type: ignore[misc]
            )
            for requests, points in ((s_requests, s_points), (t_requests, t_points)):
                for (index, r, _, _), found in zip(requests, points, strict=True):
                    slots[index] = _between(r, found)
        for slot in slots:
            children += slot
        for batch in _batches(children, BATCH_RANGES):
            s_stats, t_stats = pair.same(lambda s, batch=batch: s.range_stats(plan, batch))  # type: ignore[misc]
            for r, s_stat, t_stat in zip(batch, s_stats, t_stats, strict=True):
                if _differ(s_stat, t_stat):
                    differing.append((r, s_stat, t_stat))
        explored += len(parents)
        if len(differing) >= diffs.room and explored < len(to_split):
            # Each differing range holds a difference: these are already more than can be
            # listed, and the parents left unexplored hold more.
            diffs.truncated = True
            break
    return differing
