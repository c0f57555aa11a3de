"""Stopping a run: what an operator's Ctrl-C, or a SIGTERM, asks of it.

A run asked to stop stops at a safe place and says where:

- at once when it is **waiting** (a ``wait`` step, the preconditions' retry loop, a step's retry
  delay, an approval, a person's acknowledgement): waiting changes nothing;
- else at the **end of the step in progress**: a step that changes something (a promotion, a
  stop, a rewind) is never cut in the middle.

The CLI installs the signal handlers (``install_handlers``); they call ``STOP.request``. The
runner tells where it is with regions (``protected`` around the run, ``waiting`` around a wait,
``shielded`` while it journals its end), and asks between steps (``STOP.check``). Its own waits
are ``STOP.pause``, which sees a request within 50 ms; a wait that is not its own
(Prefect's pause of a flow run, the file poll of an acknowledgement) is stopped by the handler
raising ``StopRequested`` in it, which it does only there, in the main thread. A second request
stops harder: it raises in the step in progress too (never while the run journals its end).

The regions and the request are the process's: one run per process asks for them.
"""

from __future__ import annotations

import os
import signal as signals
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Literal

Region = Literal["protected", "waiting", "shielded"]

SIGNAL_NAMES = {"SIGINT": "SIGINT (Ctrl-C)", "SIGTERM": "SIGTERM"}

PAUSE_SLICE = 0.05  # seconds: how soon the runner's own waits see a stop request

# Actions that only wait (the core ``wait``): stopping one in the middle changes nothing.
WAITING_ACTIONS = frozenset({"wait"})


class StopRequested(BaseException):
    """The run was asked to stop, and stops here (a BaseException, so that no ``except
    Exception`` of a step takes it for the step's own failure)."""

    def __init__(self, signal: str, *, hard: bool = False, where: str = "") -> None:
        self.signal = signal
        self.hard = hard
        self.where = where
        super().__init__(f"stop requested by {describe_signal(signal)}")


def describe_signal(name: str) -> str:
    return SIGNAL_NAMES.get(name, name)


@dataclass
class Stop:
    """The process's stop request and where its threads are (see the module docstring).

    Nothing here takes a lock: a signal handler runs in the main thread between two bytecodes,
    possibly while that thread holds a lock, and a handler that waited for it would wait
    forever. The request is two attributes written by the handler alone; each thread's regions
    are its own list, changed by that thread alone; the GIL makes each of these writes whole."""

    signal: str | None = None
    count: int = 0
    installed: bool = False  # drctl's handlers are installed (install_handlers)
    _regions: dict[int, list[tuple[Region, str]]] = field(default_factory=dict)

    # -- asked by the handlers ---------------------------------------------------------------

    def request(self, signal: str) -> int:
        """Ask the run to stop; returns how many times it was asked."""
        if self.signal is None:
            self.signal = signal
        self.count += 1
        return self.count

    def main_region(self) -> tuple[Region, str] | None:
        """The innermost region the main thread is in (where a handler runs), or None."""
        regions = self._regions.get(threading.main_thread().ident or 0)
        return regions[-1] if regions else None

    def raise_in_handler(self) -> bool:
        """Whether a handler should raise ``StopRequested`` where the main thread is now: in a
        wait, or outside any run (nothing to protect), or on a second request unless shielded."""
        region = self.main_region()
        if region is None or region[0] == "waiting":
            return True
        if region[0] == "shielded":
            return False
        return self.count >= 2

    # -- asked by the runner -----------------------------------------------------------------

    @property
    def requested(self) -> bool:
        return self.count > 0

    def check(self, where: str = "") -> None:
        """Raise ``StopRequested`` if a stop was asked for (the runner asks between steps)."""
        if self.count > 0:
            raise StopRequested(self.signal or "a stop request", where=where)

    def pause(self, seconds: float, where: str = "") -> None:
        """Wait ``seconds``, or less: a stop request ends the wait within ``PAUSE_SLICE`` (and
        raises). Slices of sleep, not an Event: setting one takes a lock (see the class)."""
        end = time.monotonic() + seconds
        while self.count == 0:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, PAUSE_SLICE))
        self.check(where)

    @contextmanager
    def region(self, kind: Region, what: str = "") -> Iterator[None]:
        stack = self._regions.setdefault(threading.get_ident(), [])
        depth = len(stack)
        try:
            stack.append((kind, what))
            yield
        finally:
            del stack[depth:]  # and any inner region a raise left behind

    def waiting(self, what: str) -> AbstractContextManager[None]:
        return self.region("waiting", what)

    def reset(self) -> None:
        """Forget a request (a new run in the same process, e.g. a test)."""
        self.signal = None
        self.count = 0


STOP = Stop()
HANDLED = (signals.SIGINT, signals.SIGTERM)
HARD_STOP_AT = 3  # the third signal ends the process at once (exit 3, the journal as it is)


def _say(text: str) -> None:
    """A line on stderr from a signal handler: a plain write, no lock a handler could wait on."""
    with suppress(OSError):
        os.write(2, f"drctl: {text}\n".encode())


def _handle(signum: int, frame: object) -> None:
    name = signals.Signals(signum).name
    count = STOP.request(name)
    said = describe_signal(name)
    if count >= HARD_STOP_AT:
        _say(f"{said} again: stopping now; the journal keeps every finished step, the lock stays")
        os._exit(3)
    region = STOP.main_region()
    if STOP.raise_in_handler():
        where = region[1] if region is not None and region[0] == "waiting" else ""
        raise StopRequested(name, hard=count >= 2, where=where)
    if region is not None and region[0] == "shielded":
        _say(f"{said}: the record is being written; it ends in a moment")
    else:
        _say(
            f"{said}: stopping at the end of the step in progress (a step that changes "
            "something is never cut); again to stop harder"
        )


def install_handlers() -> None:
    """drctl's handlers for SIGINT and SIGTERM, in this process's main thread (the CLI)."""
    for signum in HANDLED:
        signals.signal(signum, _handle)
    STOP.installed = True


@contextmanager
def handlers_for_the_run() -> Iterator[None]:
    """drctl's handlers again while a run goes on, where a framework replaced them (Prefect's
    flow engine turns SIGTERM into TerminationSignal, raised wherever the run is, mid-step
    included); the replaced ones are put back after. Nothing changes where the CLI did not
    install them (a worker's flow run keeps Prefect's), or off the main thread."""
    if not STOP.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signals.getsignal(signum) for signum in HANDLED}
    for signum in HANDLED:
        signals.signal(signum, _handle)
    try:
        yield
    finally:
        for signum, handler in before.items():
            signals.signal(signum, handler)
