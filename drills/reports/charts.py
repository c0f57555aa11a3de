"""Geometry for the SVG charts (the templates draw them, with every text escaped).

- The timeline of one drill: a bar per step from its start to its end on the run's monotonic
  offsets, ticks where its action returned and its checks held, the milestones, and a dashed line
  at each objective's deadline (its ``from`` milestone plus its target). A deadline far beyond
  the drill (a 60 s RTO for a 1 s switchover) is drawn as an arrow at the right edge with its
  time, so the steps stay readable.
- The trend of one playbook: per-step durations and the RTO, drill by drill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from drills.model.durations import format_seconds
from drills.model.record import Record

WIDTH = 960
LABEL = 220
RIGHT = 110
ROW = 24
TOP = 34


def axis_label(seconds: float) -> str:
    if seconds < 60:
        return f"{round(seconds, 6):g}s"
    return format_seconds(seconds)


def nice_step(span: float, ticks: int = 6) -> float:
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)


@dataclass
class Bar:
    label: str
    y: float
    x: float
    w: float
    status: str
    took: str
    ticks: list[float] = field(default_factory=list)
    rollback: bool = False


@dataclass
class Line:
    label: str
    x: float
    clipped: bool
    met: bool


@dataclass
class Tick:
    x: float
    label: str


@dataclass
class Timeline:
    width: int
    height: int
    left: int
    plot_width: int
    top: int
    bottom: float
    bars: list[Bar]
    deadlines: list[Line]
    milestones: list[Tick]
    axis: list[Tick]
    empty: bool


def _from_milestone(basis: str) -> str | None:
    if " → " in basis:
        return basis.split(" → ", 1)[0].strip()
    return None


def timeline(record: Record, titles: dict[str, str]) -> Timeline:
    steps = record.steps
    end = max(
        [s.offsets.ended for s in steps]
        + [m.offset for m in record.milestones]
        + [record.duration_seconds or 0.0]
    )
    stamped = {m.name: m.offset for m in record.milestones}
    deadlines_at: list[tuple[str, float, bool]] = []
    for objective in record.objectives:
        start = stamped.get(_from_milestone(objective.basis) or "")
        if start is None:
            continue
        label = f"{objective.name} ≤ {format_seconds(objective.target_seconds)}"
        deadlines_at.append((label, start + objective.target_seconds, objective.met))
    # Show deadlines up to 3x the drill; later ones become arrows at the right edge.
    cap = max(end * 3, 0.001)
    axis_max = max([end] + [t for _, t, _ in deadlines_at if t <= cap]) or 1.0
    axis_max *= 1.04
    plot = WIDTH - LABEL - RIGHT

    def x(offset: float) -> float:
        return LABEL + plot * max(0.0, min(offset, axis_max)) / axis_max

    bars = []
    for index, step in enumerate(steps):
        o = step.offsets
        ticks = [x(t) for t in (o.returned, o.converged) if t is not None]
        bars.append(
            Bar(
                label=("↩ " if step.phase == "rollback" else "") + titles.get(step.id, step.id),
                y=TOP + index * ROW,
                x=x(o.started),
                w=max(x(o.ended) - x(o.started), 1.5),
                status=step.status,
                took=format_seconds(step.duration_seconds),
                ticks=ticks,
                rollback=step.phase == "rollback",
            )
        )
    bottom = TOP + max(len(steps), 1) * ROW
    lines = [
        Line(
            label=label if at <= cap else f"{label} → {format_seconds(at)}",
            x=x(at) if at <= cap else float(WIDTH - RIGHT),
            clipped=at > cap,
            met=met,
        )
        for label, at, met in deadlines_at
    ]
    every = nice_step(axis_max)
    axis = [
        Tick(x(n * every), axis_label(n * every))
        for n in range(int(axis_max / every) + 1)
        if n * every <= axis_max
    ]
    milestones = [Tick(x(m.offset), m.name) for m in record.milestones if m.name != "run_started"]
    height = int(bottom + 30 + 16 * max(len(lines), 1) + 12 * len(milestones))
    return Timeline(
        width=WIDTH,
        height=height,
        left=LABEL,
        plot_width=plot,
        top=TOP,
        bottom=bottom,
        bars=bars,
        deadlines=lines,
        milestones=milestones,
        axis=axis,
        empty=not steps,
    )


# -- trend ------------------------------------------------------------------------------------

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]


@dataclass
class Series:
    name: str
    color: str
    points: list[tuple[float, float]]
    bold: bool = False

    @property
    def polyline(self) -> str:
        return " ".join(f"{px:.1f},{py:.1f}" for px, py in self.points)


@dataclass
class TrendChart:
    width: int
    height: int
    left: int
    top: int
    bottom: int
    series: list[Series]
    y_axis: list[tuple[float, str]]
    x_labels: list[tuple[float, str]]


def trend_chart(
    labels: list[str], columns: dict[str, list[float | None]], rto: list[float | None]
) -> TrendChart:
    width, height, left, top, bottom = WIDTH, 380, 70, 20, 300
    values = [v for col in [*columns.values(), rto] for v in col if v is not None]
    top_value = max(values, default=1.0) * 1.1 or 1.0
    count = max(len(labels), 1)

    def px(i: int) -> float:
        return left + (width - left - 40) * (i / (count - 1) if count > 1 else 0.5)

    def py(v: float) -> float:
        return bottom - (bottom - top) * v / top_value

    def points(col: list[float | None]) -> list[tuple[float, float]]:
        return [(px(i), py(v)) for i, v in enumerate(col) if v is not None]

    series = [
        Series(name, PALETTE[n % len(PALETTE)], points(col))
        for n, (name, col) in enumerate(columns.items())
    ]
    series.append(Series("RTO", "#d62728", points(rto), bold=True))
    step = nice_step(top_value, 5)
    y_axis = [
        (py(n * step), axis_label(n * step))
        for n in range(int(top_value / step) + 1)
        if n * step <= top_value
    ]
    every = max(1, count // 12)
    x_labels = [(px(i), label) for i, label in enumerate(labels) if i % every == 0]
    return TrendChart(width, height, left, top, bottom, series, y_axis, x_labels)
