"""China's statutory holiday breaks, and the pre-holiday verification date before each long one.

The maintenance contract asks for an inspection and a backup verification before every statutory
break of more than 3 days. A *break* is a run of consecutive days off (weekends included) that
holds at least one statutory holiday; make-up working days (调休上班, often a Saturday or Sunday)
are working days. The verification date is the N-th working day before the break, counting
make-up days as working days.

Where the dates come from, in order:

1. an override file (``DRCTL_HOLIDAYS_FILE``), for a year the libraries do not know yet, written
   from the State Council's notice;
2. ``chinesecalendar``, which carries the published schedule, make-up days included.

Either is cross-checked day by day against the ``holidays`` package when that package has the
year's published schedule (it guesses later years without make-up days: its guess is never used,
not even to cross-check). A year that no source has published is an error that says how to write
the override file; it is never guessed.

Thresholds are settings: ``DRCTL_HOLIDAY_MIN_DAYS`` (default 4, i.e. "more than 3 days"; 3 counts
the three-day breaks too) and ``DRCTL_HOLIDAY_LEAD_DAYS`` (default 3 working days).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from drills.engine.documents import read_yaml
from drills.model.errors import InputError, ValidationFailed

HOLIDAYS_FILE_ENV = "DRCTL_HOLIDAYS_FILE"
MIN_DAYS_ENV = "DRCTL_HOLIDAY_MIN_DAYS"
LEAD_DAYS_ENV = "DRCTL_HOLIDAY_LEAD_DAYS"
DEFAULT_MIN_DAYS = 4
DEFAULT_LEAD_WORKING_DAYS = 3

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# chinesecalendar's English holiday names, and the Chinese ones the hospital uses.
ZH_NAMES = {
    "New Year's Day": "元旦",
    "Spring Festival": "春节",
    "Tomb-sweeping Day": "清明节",
    "Labour Day": "劳动节",
    "Dragon Boat Festival": "端午节",
    "National Day": "国庆节",
    "Mid-autumn Festival": "中秋节",
    "Anti-Fascist 70th Day": "抗战胜利70周年纪念日",
}

OVERRIDE_EXAMPLE = (
    "YEAR: {source: <the notice>, breaks: [{name: Spring Festival, from: YYYY-MM-DD, "
    "to: YYYY-MM-DD}, ...], workdays: [YYYY-MM-DD, ...]}"
)


class UnpublishedYear(InputError):
    """No source drctl trusts has published this year's holidays."""

    def __init__(self, year: int, message: str) -> None:
        super().__init__(message)
        self.year = year


@dataclass(frozen=True)
class HolidayBreak:
    """A run of consecutive days off holding a statutory holiday, and when to verify before it."""

    name: str
    start: date
    end: date
    days: int
    verify_on: date


@dataclass(frozen=True)
class YearSchedule:
    """One year's official days off and make-up working days, and where they come from."""

    year: int
    source: str
    days_off: frozenset[date]  # statutory days off (weekends inside a break may be listed too)
    workdays: frozenset[date]  # weekend days that are working days (调休上班)
    names: Mapping[date, str] = field(default_factory=dict)  # holiday name of a statutory day

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.days_off:
            return False
        return day.weekday() < 5


@dataclass(frozen=True)
class YearCalendar:
    """The schedule drctl uses for a year, and what the cross-check found."""

    schedule: YearSchedule
    checked_against: str | None  # the source it was compared with, day by day
    disagreements: list[str]
    notes: list[str]


# -- settings ------------------------------------------------------------------------------------


def _int_setting(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise InputError(f"{name}={value} is out of range ({low}-{high})")
    return value


def default_min_days() -> int:
    """Breaks of at least this many days count ("more than 3 days" is 4)."""
    return _int_setting(MIN_DAYS_ENV, DEFAULT_MIN_DAYS, 1, 60)


def default_lead_working_days() -> int:
    """How many working days before a break its verification runs."""
    return _int_setting(LEAD_DAYS_ENV, DEFAULT_LEAD_WORKING_DAYS, 1, 60)


def holidays_file() -> Path | None:
    raw = os.environ.get(HOLIDAYS_FILE_ENV)
    return Path(raw).expanduser() if raw and raw.strip() else None


# -- sources -------------------------------------------------------------------------------------


def chinesecalendar_version() -> str:
    import chinese_calendar

    return str(getattr(chinese_calendar, "__version__", "?"))


def holidays_version() -> str:
    import holidays

    return str(getattr(holidays, "__version__", "?"))


def _days_of(year: int) -> list[date]:
    first = date(year, 1, 1)
    return [first + timedelta(days=n) for n in range((date(year + 1, 1, 1) - first).days)]


@cache
def chinesecalendar_schedule(year: int) -> YearSchedule | None:
    """The year from chinesecalendar, or None when it has not published it."""
    import chinese_calendar

    try:
        chinese_calendar.is_workday(date(year, 7, 1))
    except NotImplementedError:
        return None
    off: set[date] = set()
    work: set[date] = set()
    names: dict[date, str] = {}
    for day in _days_of(year):
        working = bool(chinese_calendar.is_workday(day))
        _, name = chinese_calendar.get_holiday_detail(day)
        if working and day.weekday() >= 5:
            work.add(day)
        if not working and name is not None:
            off.add(day)
            names[day] = str(name)
    return YearSchedule(
        year, f"chinesecalendar {chinesecalendar_version()}", frozenset(off), frozenset(work), names
    )


@cache
def holidays_schedule(year: int) -> YearSchedule | None:
    """The year from the ``holidays`` package, only when it carries the published schedule.

    For a year it has no notice for, ``holidays`` computes dates from the lunar calendar without
    make-up days: a guess, which drctl never uses.
    """
    import holidays
    from holidays.countries.china import ChinaStaticHolidays

    if year not in ChinaStaticHolidays.special_public_holidays:
        return None
    cn = holidays.country_holidays("CN", years=[year])
    off: set[date] = set()
    work: set[date] = set()
    names: dict[date, str] = {}
    for day in _days_of(year):
        working = bool(cn.is_working_day(day))
        if working and day.weekday() >= 5:
            work.add(day)
        if not working and day in cn:
            off.add(day)
            names[day] = str(cn.get(day))
    return YearSchedule(
        year, f"holidays {holidays_version()}", frozenset(off), frozenset(work), names
    )


def _as_date(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"{where}: {value!r} is not a date (write YYYY-MM-DD)") from None


def read_override_file(path: Path) -> dict[int, YearSchedule]:
    """Years written by hand from the State Council's notice.

    Format (YAML)::

        2027:
          source: 国务院办公厅关于2027年部分节假日安排的通知
          breaks:                      # every day from..to is a day off
            - {name: Spring Festival, from: 2027-02-05, to: 2027-02-12}
          workdays: [2027-02-14]       # make-up working days (调休上班)
    """
    try:
        # Bounded like every file a person writes: size, aliases and depth (documents.py).
        data = read_yaml(path).data
    except ValidationFailed as exc:
        raise InputError(f"holidays file ({HOLIDAYS_FILE_ENV}) {exc}") from None
    except ValueError as exc:  # a date-like value that is no date, e.g. 2027-13-01
        raise InputError(f"holidays file {path}: {exc}: that is not a date") from None
    if not isinstance(data, dict):
        raise InputError(f"holidays file {path}: expected years as keys, e.g. {OVERRIDE_EXAMPLE}")
    years: dict[int, YearSchedule] = {}
    for key, spec in data.items():
        where = f"holidays file {path}, year {key}"
        if not isinstance(key, int) or not 1900 < key < 2200:
            raise InputError(f"{where}: the keys are years, e.g. 2027")
        if not isinstance(spec, dict) or not isinstance(spec.get("breaks"), list):
            raise InputError(f"{where}: expected {OVERRIDE_EXAMPLE}")
        unknown = set(spec) - {"source", "breaks", "workdays"}
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        off: set[date] = set()
        names: dict[date, str] = {}
        for index, item in enumerate(spec["breaks"], 1):
            here = f"{where}, break {index}"
            if not isinstance(item, dict) or not {"name", "from", "to"} <= item.keys():
                raise InputError(f"{here}: expected {{name: ..., from: YYYY-MM-DD, to: ...}}")
            start, end = _as_date(item["from"], here), _as_date(item["to"], here)
            if end < start or (end - start).days > 60:
                raise InputError(f"{here}: {start} to {end} is not a holiday break")
            day = start
            while day <= end:
                off.add(day)
                names[day] = str(item["name"])
                day += timedelta(days=1)
        work = {_as_date(d, f"{where}, workdays") for d in spec.get("workdays") or []}
        for day in off | work:
            if day.year != key:
                raise InputError(f"{where}: {day} is not in {key}")
        clash = off & work
        if clash:
            raise InputError(f"{where}: {min(clash)} is both a day off and a make-up workday")
        years[key] = YearSchedule(
            key,
            f"override file {path}" + (f" ({spec['source']})" if spec.get("source") else ""),
            frozenset(off),
            frozenset(work),
            names,
        )
    return years


def unpublished_message(year: int) -> str:
    import chinese_calendar.constants as cc_data

    known = sorted({d.year for d in cc_data.holidays})
    also = ""
    if holidays_schedule(year) is not None:
        also = (
            f"; holidays {holidays_version()} has it, but drctl only uses holidays to cross-check"
        )
    return (
        f"the holiday schedule for {year} is not published in chinesecalendar "
        f"{chinesecalendar_version()} (it knows {known[0]}-{known[-1]}){also}. drctl never "
        f"guesses holidays: upgrade chinesecalendar once it has {year}, or write the dates from "
        f"the State Council's notice into a YAML file and set {HOLIDAYS_FILE_ENV} to its path "
        f"(format: {OVERRIDE_EXAMPLE.replace('YEAR', str(year))}; see README, Holidays)"
    )


def disagreements(ours: YearSchedule, theirs: YearSchedule) -> list[str]:
    """Every day on which the two sources disagree about working or not."""
    found = []
    for day in _days_of(ours.year):
        a, b = ours.is_working_day(day), theirs.is_working_day(day)
        if a != b:
            what = {True: "a working day", False: "a day off"}
            found.append(
                f"{day} ({WEEKDAYS[day.weekday()]}): {ours.source} says {what[a]}, "
                f"{theirs.source} says {what[b]}"
            )
    return found


def year_calendar(year: int) -> YearCalendar:
    """The schedule for ``year`` and its cross-check; InputError if no source has published it."""
    path = holidays_file()
    override = read_override_file(path).get(year) if path is not None else None
    published = chinesecalendar_schedule(year)
    primary = override or published
    if primary is None:
        raise UnpublishedYear(year, unpublished_message(year))
    notes: list[str] = []
    other = published if override is not None and published is not None else None
    if other is None:
        other = holidays_schedule(year)
    if other is None:
        notes.append(
            f"not cross-checked: neither chinesecalendar nor holidays {holidays_version()} "
            f"has published {year} (holidays only guesses it)"
        )
        return YearCalendar(primary, None, [], notes)
    return YearCalendar(primary, other.source, disagreements(primary, other), notes)


def _schedules() -> Callable[[int], YearSchedule]:
    loaded: dict[int, YearSchedule] = {}

    def schedule(year: int) -> YearSchedule:
        if year not in loaded:
            loaded[year] = year_calendar(year).schedule
        return loaded[year]

    return schedule


# -- breaks --------------------------------------------------------------------------------------


def _nth_working_day_before(day: date, n: int, schedule: Callable[[int], YearSchedule]) -> date:
    count = 0
    while True:
        day -= timedelta(days=1)
        if schedule(day.year).is_working_day(day):
            count += 1
            if count == n:
                return day


def long_breaks(
    year: int,
    *,
    min_days: int = DEFAULT_MIN_DAYS,
    lead_working_days: int = DEFAULT_LEAD_WORKING_DAYS,
) -> list[HolidayBreak]:
    """The breaks of at least ``min_days`` days that end in ``year``, each with its verification
    date ``lead_working_days`` working days before it (make-up days count as working days).

    Raises InputError when ``year`` (or the year before, when a break or its lead reaches into
    it) is not published anywhere drctl trusts.
    """
    if min_days < 1 or lead_working_days < 1:
        raise InputError("min_days and lead_working_days must be at least 1")
    schedule = _schedules()
    schedule(year)  # an unpublished year is an error even before any day is looked at

    def off(day: date) -> bool:
        return not schedule(day.year).is_working_day(day)

    breaks: list[HolidayBreak] = []
    day = date(year, 1, 1)
    last = date(year, 12, 31)
    while day <= last:
        if not off(day):
            day += timedelta(days=1)
            continue
        start = day
        while off(start - timedelta(days=1)):
            start -= timedelta(days=1)
        end = day
        while end < last and off(end + timedelta(days=1)):
            end += timedelta(days=1)
        day = end + timedelta(days=1)
        if end == last:
            # 1 January is always a holiday: a break over New Year belongs to the year it ends in
            continue
        run = [start + timedelta(days=n) for n in range((end - start).days + 1)]
        names = [schedule(d.year).names.get(d) for d in run]
        named = list(dict.fromkeys(n for n in names if n))
        if not named:
            continue  # an ordinary weekend
        days = len(run)
        if days < min_days:
            continue
        breaks.append(
            HolidayBreak(
                name=" / ".join(named),
                start=start,
                end=end,
                days=days,
                verify_on=_nth_working_day_before(start, lead_working_days, schedule),
            )
        )
    return breaks


def next_long_break(today: date, *, min_days: int = DEFAULT_MIN_DAYS) -> HolidayBreak | None:
    """The first long break that has not begun by ``today`` (this year's, else next year's).

    Raises InputError when the year it must look into is not published; None only when that
    year has no break as long as ``min_days``.
    """
    for year in (today.year, today.year + 1):
        for found in long_breaks(year, min_days=min_days):
            if found.start > today:
                return found
    return None


def verification_dates(
    years: list[int],
    *,
    min_days: int = DEFAULT_MIN_DAYS,
    lead_working_days: int = DEFAULT_LEAD_WORKING_DAYS,
) -> tuple[list[HolidayBreak], list[int]]:
    """The long breaks of each published year in ``years``, and the years that are not
    published (the caller decides whether that is an error)."""
    found: list[HolidayBreak] = []
    missing: list[int] = []
    for year in years:
        try:
            found += long_breaks(year, min_days=min_days, lead_working_days=lead_working_days)
        except UnpublishedYear as exc:
            missing.append(exc.year)
    return found, missing


def zh_name(name: str) -> str:
    return " / ".join(ZH_NAMES.get(part, part) for part in name.split(" / "))
