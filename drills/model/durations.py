"""Durations as people write them: ``250ms``, ``30s``, ``5m``, ``1h30m``, or seconds.

A duration is finite, not negative, and at most ``MAX_DURATION_SECONDS`` (7 days): longer than
any drill, short enough that deadlines computed from it (``time.monotonic() + timeout``,
``timedelta(seconds=...)``) never overflow. Every duration in a playbook, an environment, a drill
definition or a run request is read with ``parse_duration`` (through ``Duration``).
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, Field, WithJsonSchema

MAX_DURATION_SECONDS = 7 * 86400.0
MAX_DURATION_TEXT = "7d"

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
PATTERN = r"^\s*((\d+(\.\d+)?)(ms|s|m|h|d))+\s*$|^\s*\d+(\.\d+)?\s*$"
_HINT = "write e.g. 30s, 5m, 1h30m, 250ms"
_MAX_TEXT_LENGTH = 64  # no sane duration is longer; a longer one is not worth a regex


def _bounded(seconds: float, value: object) -> float:
    if isinstance(value, int) and value.bit_length() > 64:  # str() of a huge int may raise
        shown = f"{float(value):g}" if value.bit_length() < 1000 else "(a number of 300+ digits)"
    else:
        shown = value if isinstance(value, str) else f"{value}"
    if len(shown) > 40:
        shown = shown[:37] + "..."
    if math.isnan(seconds):
        raise ValueError(f"duration {shown} is not a number ({_HINT})")
    if seconds < 0:
        raise ValueError(f"duration {shown} is negative")
    if seconds > MAX_DURATION_SECONDS:  # inf too
        raise ValueError(
            f"duration {shown} is longer than the maximum, {MAX_DURATION_TEXT} "
            f"({MAX_DURATION_SECONDS:g}s)"
        )
    return seconds


def parse_duration(value: object) -> float:
    """Seconds in ``value``; raises ValueError with a readable message otherwise.

    The seconds are finite, at least 0 and at most ``MAX_DURATION_SECONDS``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration ({_HINT})")
    if isinstance(value, int):
        # Compared as an int: a huge one would overflow float().
        if value > MAX_DURATION_SECONDS or value < 0:
            return _bounded(float("inf") if value > 0 else -1.0, value)
        return float(value)
    if isinstance(value, float):
        return _bounded(value, value)
    if not isinstance(value, str):
        raise ValueError(f"{_short(value)} is not a duration ({_HINT})")
    text = value.strip().replace(" ", "")
    if not text or len(text) > _MAX_TEXT_LENGTH:
        raise ValueError(f"{_short(value)} is not a duration ({_HINT})")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _bounded(float(text), value)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{_short(value)} is not a duration ({_HINT})")
    return _bounded(total, value)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_seconds(seconds: float | None) -> str:
    """A short human form: 0.27s, 1m05s, 1h02m."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.3f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{secs:04.1f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes):02d}m"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=0, le=MAX_DURATION_SECONDS),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PATTERN},
                {"type": "number", "minimum": 0, "maximum": MAX_DURATION_SECONDS},
            ],
            "description": "A duration: 250ms, 30s, 5m, 1h30m, or a number of seconds "
            f"(at most {MAX_DURATION_TEXT}).",
        }
    ),
]
