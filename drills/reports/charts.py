"""Geometry for the SVG charts (the templates draw them, with every text escaped).

- The timeline of one drill: a bar per step from its start to its end on the run's monotonic
  offsets, ticks where its action returned and its checks held, the milestones, and a dashed line
  at each objective's deadline (its ``from`` milestone plus its target). A deadline far beyond
  the drill (a 60 s RTO for a 1 s switchover) is drawn past a break in the time axis, at its own
  time, so the steps stay readable and the deadline is still drawn where it is. The labels of
  the deadlines and milestones sit in lanes under the axis, placed so that no two overlap.
- The trend of one playbook: per-step durations and the RTO, drill by drill, against the RTO
  target, with failed drills marked and the drills' start times (date and time, in one zone) on
  the x-axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from drills.model.durations import format_seconds
from drills.model.record import Record

WIDTH = 960
LABEL = 220  # the step-title column left of the plot, at its narrowest
LABEL_MAX = 330  # and at its widest; a longer title is shortened (the steps table has it whole)
BAR_TEXT = 11  # the font size of the step titles
TOOK_TEXT = 10  # and of the steps' durations
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


# Text widths, for placing labels: a CJK character (or a wide symbol) is one em, anything else
# at most 0.62 em in the fonts the SVG names; the estimate errs wide so that labels never touch.
_WIDE = "◆≤≥→↩✕…—"


def text_width(text: str, size: float) -> float:
    return sum(size if (ord(ch) >= 0x2E80 or ch in _WIDE) else size * 0.62 for ch in text)


def fit_text(text: str, width: float, size: float) -> str:
    """``text``, shortened with an ellipsis if it is wider than ``width``."""
    if text_width(text, size) <= width:
        return text
    while text and text_width(text + "…", size) > width:
        text = text[:-1]
    return text.rstrip() + "…"


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
    # Where the duration is written: after the bar, or, where that would run into the axis
    # break (or off the chart), inside the bar's end (white) or before its start.
    took_x: float = 0.0
    took_anchor: str = "start"
    took_inside: bool = False

    def place_took(self, limit: float, size: float = TOOK_TEXT) -> None:
        width = text_width(self.took, size)
        end = self.x + self.w
        if end + 4 + width <= limit:
            self.took_x, self.took_anchor, self.took_inside = end + 4, "start", False
        elif self.w >= width + 8:
            self.took_x, self.took_anchor, self.took_inside = end - 4, "end", True
        else:
            self.took_x, self.took_anchor, self.took_inside = self.x - 4, "end", False


@dataclass
class Line:
    label: str
    x: float
    clipped: bool  # beyond the axis break
    met: bool
    at: float = 0.0


@dataclass
class Tick:
    x: float
    label: str


@dataclass
class Label:
    """A text under the axis: a deadline's or a milestone's, in its lane."""

    text: str
    kind: str  # "deadline" or "milestone"
    marker_x: float
    x: float
    y: float
    anchor: str  # "start" or "end"
    size: float
    met: bool = True
    lane: int = 0

    @property
    def width(self) -> float:
        return text_width(self.text, self.size)

    def box(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of the text."""
        left = self.x if self.anchor == "start" else self.x - self.width
        return (left, self.y - self.size, left + self.width, self.y + 0.25 * self.size)


@dataclass
class AxisBreak:
    """Where the time axis is broken: the main scale ends at ``x0``, the far deadlines are
    drawn after ``x1`` at their own times."""

    x0: float
    x1: float


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
    labels: list[Label] = field(default_factory=list)
    axis_break: AxisBreak | None = None
    main_right: float = 0.0


def _from_milestone(basis: str) -> str | None:
    if " → " in basis:
        return basis.split(" → ", 1)[0].strip()
    return None


LANE = 15
LABELS_TOP = 22
GAP = 8


def place_labels(labels: list[Label], bottom: float, width: float) -> int:
    """Put each label in the first lane where it overlaps no other; the number of lanes."""
    lanes: list[list[tuple[float, float]]] = []
    for label in sorted(labels, key=lambda item: item.marker_x):
        w = label.width
        if label.marker_x - 3 + w <= width - 4:
            label.anchor, label.x = "start", label.marker_x - 3
            span = (label.x, label.x + w)
        else:
            label.anchor, label.x = "end", label.marker_x + 3
            span = (label.x - w, label.x)
        for n, lane in enumerate(lanes):
            if all(span[0] >= b + GAP or span[1] <= a - GAP for a, b in lane):
                lane.append(span)
                label.lane = n
                break
        else:
            lanes.append([span])
            label.lane = len(lanes) - 1
        label.y = bottom + LABELS_TOP + label.lane * LANE
    return len(lanes)


def timeline(
    record: Record,
    titles: dict[str, str],
    *,
    milestone_label: Callable[[str], str] | None = None,
    objective_label: Callable[[str], str] | None = None,
) -> Timeline:
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
        name = objective_label(objective.name) if objective_label else objective.name
        label = f"{name} ≤ {format_seconds(objective.target_seconds)}"
        deadlines_at.append((label, start + objective.target_seconds, objective.met))
    # Deadlines up to 3x the drill are on its scale; later ones are drawn past an axis break.
    cap = max(end * 3, 0.001)
    far = sorted({at for _, at, _ in deadlines_at if at > cap})
    axis_max = max([end] + [t for _, t, _ in deadlines_at if t <= cap]) or 1.0
    axis_max *= 1.04
    # The step titles end 8 units left of the plot: the column is as wide as the widest title
    # needs (between LABEL and LABEL_MAX), so no title runs off the chart's left edge.
    names = [("↩ " if s.phase == "rollback" else "") + titles.get(s.id, s.id) for s in steps]
    widest = max((text_width(name, BAR_TEXT) for name in names), default=0.0)
    left = int(min(max(LABEL, math.ceil(widest) + 16), LABEL_MAX))
    names = [fit_text(name, left - 12, BAR_TEXT) for name in names]
    plot = WIDTH - left - RIGHT
    main = plot - 140 if far else plot
    axis_break = AxisBreak(left + main + 8, left + main + 26) if far else None

    def x(offset: float) -> float:
        return left + main * max(0.0, min(offset, axis_max)) / axis_max

    def far_x(at: float) -> float:
        assert axis_break is not None
        x0, x1 = axis_break.x1 + 24, left + plot - 24
        if len(far) == 1:
            return (x0 + x1) / 2
        return x0 + (x1 - x0) * far.index(at) / (len(far) - 1)

    bars = []
    for index, step in enumerate(steps):
        o = step.offsets
        ticks = [x(t) for t in (o.returned, o.converged) if t is not None]
        bars.append(
            Bar(
                label=names[index],
                y=TOP + index * ROW,
                x=x(o.started),
                w=max(x(o.ended) - x(o.started), 1.5),
                status=step.status,
                took=format_seconds(step.duration_seconds),
                ticks=ticks,
                rollback=step.phase == "rollback",
            )
        )
    # A duration stays left of the axis break, and inside the chart.
    took_limit = axis_break.x0 - 4 if axis_break else WIDTH - 4
    for bar in bars:
        bar.place_took(took_limit)
    bottom = TOP + max(len(steps), 1) * ROW
    lines = [
        Line(
            label=label,
            x=x(at) if at <= cap else far_x(at),
            clipped=at > cap,
            met=met,
            at=at,
        )
        for label, at, met in deadlines_at
    ]
    every = nice_step(axis_max)
    axis = [
        Tick(x(n * every), axis_label(n * every))
        for n in range(int(axis_max / every) + 1)
        if n * every <= axis_max
    ]
    # The far deadlines' own times, on the far side of the break.
    axis += [Tick(far_x(at), format_seconds(at)) for at in far]
    milestones = [
        Tick(x(m.offset), milestone_label(m.name) if milestone_label else m.name)
        for m in record.milestones
        if m.name != "run_started"
    ]
    labels = [
        Label(line.label, "deadline", line.x, line.x, 0.0, "start", 11, met=line.met)
        for line in lines
    ] + [Label(f"◆ {m.label}", "milestone", m.x, m.x, 0.0, "start", 10) for m in milestones]
    lanes = place_labels(labels, bottom, WIDTH)
    height = int(bottom + LABELS_TOP + max(lanes, 1) * LANE)
    return Timeline(
        width=WIDTH,
        height=height,
        left=left,
        plot_width=plot,
        top=TOP,
        bottom=bottom,
        bars=bars,
        deadlines=lines,
        milestones=milestones,
        axis=axis,
        empty=not steps,
        labels=labels,
        axis_break=axis_break,
        main_right=left + main,
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
class XLabel:
    x: float
    time: str
    date: str  # "" when the previous label showed the same date


@dataclass
class TrendChart:
    width: int
    height: int
    left: int
    right: int
    top: int
    plot_top: int
    bottom: int
    series: list[Series]
    y_axis: list[tuple[float, str]]
    x_labels: list[XLabel]
    y_max: float
    target: list[tuple[float, float]] = field(default_factory=list)
    target_label: str = ""  # every target shown, "1m00.0s" or "1ms / 1m00.0s"
    target_off_scale: bool = False  # some target is drawn past the break at the top
    far_label: str = ""  # the targets drawn there
    failed: list[float] = field(default_factory=list)
    legend_top: int = 0
    target_path: str = ""  # SVG path: each drill's target, a step where it changes
    target_label_y: float = 0.0  # above the break when a target is there, else the last drill's

    @property
    def target_polyline(self) -> str:
        return " ".join(f"{px:.1f},{py:.1f}" for px, py in self.target)


def _time_format(moments: list[datetime]) -> str:
    """The coarsest clock format that tells the drills of one day apart: minutes, seconds, or
    milliseconds (drills run back to back, as in a test, start within the same minute)."""
    for fmt in ("%H:%M", "%H:%M:%S", "%H:%M:%S.%f"):
        shown = [m.strftime("%Y-%m-%d " + fmt) for m in moments]
        if len(set(shown)) == len(shown):
            return fmt
    return "%H:%M:%S.%f"


def _clock(moment: datetime, fmt: str) -> str:
    text = moment.strftime(fmt)
    return text[:-3] if fmt.endswith("%f") else text  # milliseconds, not microseconds


def _target_steps(
    points: list[tuple[int, float]], px: Callable[[int], float], left: float, right: float
) -> str:
    """The target as a step line: level across each drill's slot (half-way to its
    neighbours, within the plot), vertical where it changes; a drill without a target breaks
    the line."""
    parts: list[str] = []
    previous: int | None = None
    half = (px(1) - px(0)) / 2
    for i, y in points:
        x0, x1 = max(left, px(i) - half), min(right, px(i) + half)
        if previous is None or previous != i - 1:
            parts.append(f"M {x0:.1f} {y:.1f}")
        else:
            parts.append(f"V {y:.1f}")
        parts.append(f"H {x1:.1f}")
        previous = i
    return " ".join(parts)


def trend_chart(
    moments: list[datetime],
    columns: dict[str, list[float | None]],
    rto: list[float | None],
    *,
    targets: list[float | None] | None = None,
    failed: list[bool] | None = None,
    names: dict[str, str] | None = None,
    rto_name: str = "RTO",
) -> TrendChart:
    """``moments``: each drill's start, already in the zone the report shows; ``targets``: each
    drill's RTO target; ``failed``: which drills failed; ``names``: a series' label by id."""
    width, left, right_margin = WIDTH, 70, 40
    right = width - right_margin
    targets = targets or [None] * len(moments)
    failed = failed or [False] * len(moments)
    values = [v for col in [*columns.values(), rto] for v in col if v is not None]
    highest = max(values, default=0.0)
    wanted = [t for t in targets if t is not None]
    # A target far above every value would flatten the lines: it is drawn past a break at the
    # top instead. Each drill's own: a run request may have changed one drill's target.
    far = {t for t in wanted if highest > 0 and t > 3 * highest}
    off_scale = bool(far)
    covered = values + [t for t in wanted if t not in far]
    top_value = max(covered, default=0.0) or 1.0
    step = nice_step(top_value, 5)
    y_max = math.ceil(top_value / step - 1e-9) * step
    top, bottom = 20, 300
    plot_top = top + (34 if off_scale else 0)
    count = max(len(moments), 1)
    clock = _time_format(moments)
    widest = max(
        [text_width("2026-12-31", 10)] + [text_width(_clock(m, clock), 10) for m in moments]
    )
    # The first and last drills sit far enough inside the axes that their labels, centred
    # under them, clear the y-axis labels and the chart's edge.
    pad = max(20.0, widest / 2 + 8)

    def px(i: int) -> float:
        return left + pad + (right - left - 2 * pad) * (i / (count - 1) if count > 1 else 0.5)

    def py(v: float) -> float:
        return bottom - (bottom - plot_top) * v / y_max

    def points(col: list[float | None]) -> list[tuple[float, float]]:
        return [(px(i), py(v)) for i, v in enumerate(col) if v is not None]

    named = names or {}
    # A legend entry has a quarter of the width; a longer name is shortened.
    legend = (right - left) / 4 - 24

    def legend_name(name: str) -> str:
        return fit_text(name, legend, 11)

    series = [
        Series(legend_name(named.get(name, name)), PALETTE[n % len(PALETTE)], points(col))
        for n, (name, col) in enumerate(columns.items())
    ]
    series.append(Series(legend_name(rto_name), "#d62728", points(rto), bold=True))
    y_axis = [(py(n * step), axis_label(n * step)) for n in range(round(y_max / step) + 1)]
    spacing = (right - left - 2 * pad) / (count - 1) if count > 1 else float(width)
    every = max(1, math.ceil(widest * 1.15 / spacing))
    x_labels: list[XLabel] = []
    shown_date = ""
    for i, moment in enumerate(moments):
        if i % every:
            continue
        date = moment.strftime("%Y-%m-%d")
        x_labels.append(XLabel(px(i), _clock(moment, clock), "" if date == shown_date else date))
        shown_date = date
    y_far = top + 10
    placed = [(i, y_far if t in far else py(t)) for i, t in enumerate(targets) if t is not None]
    target_points = [(px(i), y) for i, y in placed]
    label = " / ".join(format_seconds(t) for t in sorted(set(wanted)))
    far_label = " / ".join(format_seconds(t) for t in sorted(far))
    path = _target_steps(placed, px, left, right) if count > 1 else ""
    if count == 1 and placed:  # one drill: a line across the plot
        path = f"M {left} {placed[0][1]:.1f} H {right}"
    legend_top = bottom + 48
    height = legend_top + 16 * math.ceil((len(series) + 2) / 4) + 8
    return TrendChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        plot_top=plot_top,
        bottom=bottom,
        series=series,
        y_axis=y_axis,
        x_labels=x_labels,
        y_max=y_max,
        target=target_points,
        target_label=label,
        target_off_scale=off_scale,
        far_label=far_label,
        target_path=path,
        target_label_y=(y_far if off_scale else placed[-1][1] if placed else top) - 5,
        failed=[px(i) for i, bad in enumerate(failed) if bad],
        legend_top=legend_top,
    )
