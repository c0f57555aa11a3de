"""Published SQL*Plus outputs of the views, read back into rows (tests only).

A recorded view output is a text file under ``tests/fixtures/oracle/views/``: a header of ``#``
lines naming its source (the Oracle documentation page, or the public post or file it was copied
from), the release, the query, and whether it was copied as printed or adapted (and how), then
``# ---``, then what SQL*Plus printed::

    # source: ...
    # release: Oracle Database 11.2.0.4
    # query: SQL> select name,value,unit,time_computed from v$dataguard_stats ...;
    # copied: the output as the post shows it.
    # ---
    NAME                   VALUE                  UNIT                 TIME_COMPUTED
    ---------------------- ---------------------- -------------------- -------------
    transport lag                                 day(2) to second(0)  08/14/2023 13:40:06

SQL*Plus sets each column's width by the dashes under its heading, so the dashes are the ruler:
a value is what lies under its column's dashes, up to the start of the next column (the last
runs to the end of the line); blank is NULL. "no rows selected" is no row. A heading printed
again further down (a new page) and "N rows selected." are skipped. NUMBER values are read as
numbers, as python-oracledb returns them; every other value stays text.

SQL*Plus truncates a heading to its column's width (``CORRUPTIO`` for CORRUPTION_TYPE,
``LIMIT_VALU`` for LIMIT_VALUE): the fixture's ``columns`` name every column, and each name
must begin with its heading, so that a fixture cannot name a column the output does not show.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VIEWS = Path(__file__).resolve().parents[1] / "fixtures" / "oracle" / "views"
_RULER = re.compile(r"^[ -]*-[ -]*$")
_NUMBER = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:E[+-]?\d+)?$", re.IGNORECASE)
_SELECTED = re.compile(r"^\d+ rows? selected\.$|^no rows selected$")


@dataclass(frozen=True)
class Recorded:
    """One recorded output: its header fields, its headings and its rows (values as read)."""

    path: Path
    header: dict[str, str]
    headings: list[str]
    rows: list[list[Any]]


def _value(text: str, numeric: bool) -> Any:
    text = text.strip()
    if not text:
        return None
    if numeric and _NUMBER.match(text):
        number = float(text)
        return int(number) if number.is_integer() and "E" not in text.upper() else number
    return text


def _spans(ruler: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"-+", ruler)]


@functools.cache
def read(name: str) -> Recorded:
    """The recorded output ``name`` (a file under ``views/``)."""
    path = VIEWS / name
    text = path.read_text(encoding="utf-8")
    head, marker, body = text.partition("# ---\n")
    if not marker:
        raise ValueError(f"{path}: no '# ---' line between the header and the output")
    header: dict[str, str] = {}
    key = ""
    for line in head.splitlines():
        found = re.match(r"# (source|release|query|copied|adapted): ?(.*)$", line)
        if found:
            key = found.group(1)
            header[key] = found.group(2)
        elif line.startswith("#   ") and key:
            header[key] += " " + line[4:].strip()
    for needed in ("source", "release", "query"):
        if needed not in header:
            raise ValueError(f"{path}: the header has no '# {needed}:' line")
    if ("copied" in header) == ("adapted" in header):
        raise ValueError(f"{path}: say either '# copied:' or '# adapted: <what changed>'")
    lines = body.rstrip("\n").splitlines()
    if any(line.strip() == "no rows selected" for line in lines):
        return Recorded(path, header, [], [])
    at = next((i for i, line in enumerate(lines) if _RULER.match(line) and "-" in line), None)
    if at is None or at == 0:
        raise ValueError(f"{path}: no heading and ruler of dashes")
    heading_line, ruler = lines[at - 1], lines[at]
    spans = _spans(ruler)
    starts = [s for s, _ in spans] + [10**6]
    headings = [heading_line[s:e].strip() for s, e in spans]
    raw: list[str] = []
    skip = False
    for line in lines[at + 1 :]:
        if not line.strip() or _SELECTED.match(line.strip()):
            continue
        if line.rstrip() == heading_line.rstrip():
            skip = True  # the heading again (a new page): its ruler follows
            continue
        if skip and _RULER.match(line):
            skip = False
            continue
        raw.append(line)
    numeric = [_numeric(heading_line, span, raw) for span in spans]
    rows = [
        [_value(line[starts[i] : starts[i + 1]], numeric[i]) for i in range(len(spans))]
        for line in raw
    ]
    return Recorded(path, header, headings, rows)


def _numeric(heading_line: str, span: tuple[int, int], lines: list[str]) -> bool:
    """Whether a column holds a NUMBER: SQL*Plus right-aligns a NUMBER's heading and values
    under its dashes (text is left-aligned)."""
    start, end = span
    heading = heading_line[start:end]
    if heading.strip() and heading.endswith(heading.strip()) and heading[0] == " ":
        return True
    cells = [line[start:end] for line in lines if line[start:end].strip()]
    return bool(cells) and all(
        _NUMBER.match(c.strip()) and c.endswith(c.strip()) and len(c) == end - start for c in cells
    )


def rows_as(name: str, columns: list[str], fill: dict[str, Any] | None = None) -> list[list[Any]]:
    """The rows of ``name`` under the names ``columns`` (one per column the output shows, each
    beginning with its heading), then the ``fill`` columns (what the query needs and the
    output does not show; the fixture's header says so)."""
    recorded = read(name)
    if len(columns) != len(recorded.headings):
        raise ValueError(
            f"{recorded.path}: {len(recorded.headings)} columns shown "
            f"({', '.join(recorded.headings)}), {len(columns)} named"
        )
    for named, heading in zip(columns, recorded.headings, strict=True):
        alias, _, name = named.rpartition("=")
        shown = alias or name
        matches = (
            shown.upper() == heading.upper() if alias else name.upper().startswith(heading.upper())
        )
        if heading and not matches:
            raise ValueError(f"{recorded.path}: column {heading!r} named {named!r}")
    extra = list((fill or {}).values())
    return [row + extra for row in recorded.rows]


# -- a fixture's scenario built from recorded outputs ------------------------------------------

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?([+-]\d\d:\d\d)$")


def alert_log_rows(name: str) -> list[list[Any]]:
    """An alert log excerpt as V$DIAG_ALERT_EXT rows ``[at, message_text]``: one row per line,
    at the ISO timestamp line above it (12.2 and later write one before each group of
    messages), ``at`` as the check's query formats ORIGINATING_TIMESTAMP ('YYYY-MM-DD
    HH24:MI:SS TZH:TZM'). Lines before the first timestamp are not in the fixture."""
    path = VIEWS / name
    _, marker, body = path.read_text(encoding="utf-8").partition("# ---\n")
    if not marker:
        raise ValueError(f"{path}: no '# ---' line between the header and the log")
    rows: list[list[Any]] = []
    at: str | None = None
    for line in body.splitlines():
        stamp = _STAMP.match(line.strip())
        if stamp:
            at = f"{stamp.group(1)} {stamp.group(2)} {stamp.group(3)}"
        elif line.strip():
            if at is None:
                raise ValueError(f"{path}: a message before the first timestamp: {line!r}")
            rows.append([at, line.rstrip()])
    return rows


def scenario(spec: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The columns and rows of a fixture's scenario that names recorded outputs:

    - ``recorded``: a file under ``views/`` (or a list of them, their rows one after another);
      ``format``: ``sqlplus`` (default) or ``alert_log``;
    - ``columns``: a name for each column shown (``HEADING=name`` where the query gave the
      column an alias);
    - what the check's query needs and the output does not show, each said in the fixture's
      note: ``fill`` (a value for every row), ``fill_by`` (a value looked up from another
      column: ``{"from": col, "map": {...}, "else": value}``), ``copy`` (another column's value),
      ``scale`` (another column times a factor: the block size);
    - ``order_by``: ``[column, "asc"|"desc"]``, the order the check's query asks for.
    """
    files = spec["recorded"] if isinstance(spec["recorded"], list) else [spec["recorded"]]
    if spec.get("format", "sqlplus") == "alert_log":
        columns = ["at", "message_text"]
        rows = [row for name in files for row in alert_log_rows(name)]
    else:
        shown = list(spec["columns"])
        columns = [c.split("=", 1)[-1] for c in shown]
        rows = []
        for name in files:
            rows += rows_as(name, shown)
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    for record in records:
        for column, value in (spec.get("fill") or {}).items():
            record[column] = value
        for column, rule in (spec.get("fill_by") or {}).items():
            record[column] = rule["map"].get(record[rule["from"]], rule.get("else"))
        for column, source in (spec.get("copy") or {}).items():
            record[column] = record[source]
        for column, (source, factor) in (spec.get("scale") or {}).items():
            record[column] = record[source] * factor if record[source] is not None else None
    if spec.get("order_by"):
        key, direction = spec["order_by"]
        records.sort(key=lambda r: r[key], reverse=direction == "desc")
    derived = [n for k in ("fill", "fill_by", "copy", "scale") for n in spec.get(k) or {}]
    names = list(records[0]) if records else [*columns, *derived]
    return names, [[r.get(n) for n in names] for r in records]
