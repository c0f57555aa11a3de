"""The journal: the truth of a run, appended as it goes.

One JSON object per line. Each append is written and fsync'd before the runner moves on, so a run
killed at any moment leaves every event it finished on disk. A torn last line (the process died
mid-write) is ignored on reading, and cut when the journal is reopened to go on
(:meth:`Journal.reopen`, a resumed run).

When the records directory cannot take an append (full: ENOSPC, read-only: EROFS, failing: EIO,
or any other OSError) the journal moves: every event so far (the journal keeps them in memory,
they are small) is written to a fallback place on another file system
(:mod:`drills.records.fallback`), and the append raises :class:`JournalMoved` *without* having
written the event that failed, so that the runner can say so (it treats the step in progress as
failed and runs its failure policy) and then append that event again, at the new place. Should
no place take it, the journal goes on in memory alone (``JournalMove.path`` is None): the run
still ends, rolls back and prints its record, which then exists nowhere else.

:func:`inspect_journal` reads a journal and says what is wrong with it (empty, cut short, not
beginning with ``run_started``), so that readers name a damaged journal and go on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drills.records.fallback import fallback_dirs, prepare, records_dir_of

__all__ = [
    "Journal",
    "JournalMove",
    "JournalMoved",
    "JournalReading",
    "inspect_journal",
    "read_journal",
]


def _why(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{name}: {exc.strerror or exc}" if name else str(exc)


@dataclass(frozen=True)
class JournalMove:
    """The journal could not be written at ``failed``; it is now at ``path`` (None: memory)."""

    failed: Path
    error: str
    path: Path | None
    events: int  # how many events were in it when it moved (all copied to ``path``)
    tried: tuple[str, ...] = ()  # the places that would not take it either, and why

    def sentence(self) -> str:
        if self.path is None:
            tried = "; ".join(self.tried) or "no fallback place"
            return (
                f"the journal could not be written to {self.failed} ({self.error}) nor to any "
                f"fallback place ({tried}); it is kept in memory only, in this run's record"
            )
        return (
            f"the journal could not be written to {self.failed} ({self.error}); it is kept at "
            f"{self.path}, with the {self.events} event(s) before"
        )


class JournalMoved(Exception):
    """An append failed where the journal was: it moved (see :class:`JournalMove`), and the
    event of that append is not written yet."""

    def __init__(self, move: JournalMove) -> None:
        super().__init__(move.sentence())
        self.move = move


class Journal:
    def __init__(self, path: Path, *, fallback: list[Path] | None = None) -> None:
        """``fallback``: where the journal may go when ``path`` cannot take it (default: the
        places of :func:`drills.records.fallback.fallback_dirs` for ``path``'s directory)."""
        self.path: Path | None = path
        self.primary = path
        self._fallback = fallback
        self._fd: int | None = None
        self._lines: list[bytes] = []
        self._tried: list[Path] = [path]
        self.moves: list[JournalMove] = []
        self.cut = 0  # bytes of a torn last line cut when it was reopened (reopen)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError:
            self._fd = None  # the first append moves it (and says why)

    @classmethod
    def reopen(cls, path: Path, *, fallback: list[Path] | None = None) -> Journal:
        """An existing journal, opened again to go on (a resumed or aborted run): its events so
        far are read (:meth:`events` gives them all, and a move copies them too), and appends
        follow them. A torn last line, left by a process killed mid-write, is cut first
        (``cut`` says how many bytes): appended after, it would hide every event that follows it
        from the readers. OSError when the journal cannot be read or cut."""
        data = path.read_bytes()
        cut = 0
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            cut = len(data) - keep
            with path.open("r+b") as handle:
                handle.truncate(keep)
                os.fsync(handle.fileno())
            data = data[:keep]
        journal = cls(path, fallback=fallback)
        journal._lines = [line + b"\n" for line in data.split(b"\n") if line.strip()]
        journal.cut = cut
        return journal

    @property
    def moved(self) -> JournalMove | None:
        """The last move, if the journal is no longer where it began."""
        return self.moves[-1] if self.moves else None

    def append(self, event: dict[str, Any]) -> None:
        self.append_many([event])

    def append_many(self, events: list[dict[str, Any]]) -> None:
        """Append events together (one write, one fsync): on a failure none of them counts as
        written, and the journal moves (:class:`JournalMoved`)."""
        lines = [
            (json.dumps(e, ensure_ascii=False, default=str) + "\n").encode("utf-8") for e in events
        ]
        if self.path is None:  # memory only: nowhere left to write
            self._lines += lines
            return
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            _write_all(self._fd, b"".join(lines))
            os.fsync(self._fd)
        except OSError as exc:
            raise JournalMoved(self._move(exc)) from exc
        self._lines += lines

    def _move(self, exc: OSError) -> JournalMove:
        """Write every event so far to the next place that takes it."""
        failed = self.path
        assert failed is not None
        self._close_fd()
        if failed == self.primary and not self._lines:
            # Nothing of it was ever written there: leave no empty journal behind.
            with contextlib.suppress(OSError):
                if failed.stat().st_size == 0:
                    failed.unlink()
        places = (
            self._fallback if self._fallback is not None else fallback_dirs(self.primary.parent)
        )
        tried = []
        for directory in places:
            target = directory / self.primary.name
            if target in self._tried:
                continue
            self._tried.append(target)
            try:
                prepare(directory, records_dir_of(self.primary.parent))
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    _write_all(fd, b"".join(self._lines))
                    os.fsync(fd)
                except OSError:
                    os.close(fd)
                    raise
            except OSError as later:
                tried.append(f"{directory}: {_why(later)}")
                continue
            self._fd, self.path = fd, target
            break
        else:
            self.path = None
        move = JournalMove(failed, _why(exc), self.path, len(self._lines), tuple(tried))
        self.moves.append(move)
        return move

    def events(self) -> list[dict[str, Any]]:
        """Every event appended, as read back (the journal's content, wherever it is)."""
        return [json.loads(line) for line in self._lines]

    def _close_fd(self) -> None:
        if self._fd is not None:
            # A failing disk may refuse even that; the descriptor is gone anyway.
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close_fd()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalReading:
    """A journal as read: its events, and what is wrong with it (None: nothing)."""

    path: Path
    events: list[dict[str, Any]]
    problem: str | None = None

    @property
    def usable(self) -> bool:
        """Whether a record can be built from it (it begins with ``run_started``)."""
        return bool(self.events) and self.events[0].get("event") == "run_started"

    def describe(self) -> str:
        return f"journal {self.path}: {self.problem}"


def inspect_journal(path: Path) -> JournalReading:
    """Read a journal and say what is wrong with it, if anything; never raises for its content."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return JournalReading(path, [], f"cannot be read ({_why(exc)})")
    return _parse(path, data)


def _parse(path: Path, data: bytes) -> JournalReading:
    if not data:
        return JournalReading(path, [], "it is empty (0 bytes): the run could write nothing there")
    events: list[dict[str, Any]] = []
    problem: str | None = None
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            continue
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            last = all(not rest.strip() for rest in lines[number:])
            problem = (
                f"it is cut short at line {number} (a write that did not finish)"
                if last
                else f"line {number} is not a journal event, nor is what follows it read"
            ) + f"; the {len(events)} event(s) before it are read"
            break
        events.append(event)
    if problem is None and not events:
        problem = "it holds no event"
    if events and events[0].get("event") != "run_started":
        problem = (problem + "; " if problem else "") + (
            f"it does not begin with run_started (its first event is "
            f"{events[0].get('event')!r}): no record can be built from it"
        )
    return JournalReading(path, events, problem)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The events of a journal; a torn final write is left out (everything before it stands).
    A journal that cannot be read raises OSError."""
    return _parse(path, path.read_bytes()).events
