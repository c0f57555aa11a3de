"""The run's clock: UTC wall time with milliseconds, and monotonic offsets from the run's start.

Durations are always computed from the monotonic offsets, so an NTP step of the wall clock during
a drill cannot bend them; the wall time says when, the offset says how long.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Stamp:
    at: str  # UTC, ISO 8601 with milliseconds and a Z
    offset: float  # seconds since the run's start, from the monotonic clock


def utc_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{int(epoch * 1000) % 1000:03d}Z"
    )


class Clock:
    def __init__(self) -> None:
        self.started_mono = time.monotonic()
        self.started_wall = time.time()

    def now(self) -> Stamp:
        mono = time.monotonic()
        return Stamp(utc_iso(time.time()), round(mono - self.started_mono, 6))

    def offset_of(self, mono: float) -> float:
        return round(mono - self.started_mono, 6)

    def stamp_of(self, mono: float, wall: float) -> Stamp:
        return Stamp(utc_iso(wall), self.offset_of(mono))
