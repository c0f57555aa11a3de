"""Holidays: the long statutory breaks and their pre-holiday verification dates.

Real chinesecalendar and holidays packages; the CLI as a user runs it.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import chinese_calendar
import pytest

from drills.model.errors import InputError
from drills.ops.holidays import (
    HOLIDAYS_FILE_ENV,
    HolidayBreak,
    long_breaks,
    next_long_break,
    year_calendar,
)
from tests.helpers import drctl


def first_unpublished_year() -> int:
    """2027 while chinesecalendar has not published it; the year after its last one later."""
    year = 2027
    while True:
        try:
            chinese_calendar.is_workday(date(year, 7, 1))
        except NotImplementedError:
            return year
        year += 1


def test_2026_breaks_of_more_than_3_days_and_their_verification_dates() -> None:
    assert long_breaks(2026) == [
        # 3 working days before: Feb 14 (a make-up Saturday), Feb 13, Feb 12.
        HolidayBreak("Spring Festival", date(2026, 2, 15), date(2026, 2, 23), 9, date(2026, 2, 12)),
        HolidayBreak("Labour Day", date(2026, 5, 1), date(2026, 5, 5), 5, date(2026, 4, 28)),
        HolidayBreak("National Day", date(2026, 10, 1), date(2026, 10, 7), 7, date(2026, 9, 28)),
    ]


def test_make_up_workdays_count_as_working_days() -> None:
    spring = long_breaks(2026, lead_working_days=1)[0]
    assert spring.verify_on == date(2026, 2, 14)  # the make-up Saturday, not Friday the 13th
    assert spring.verify_on.weekday() == 5
    # Two working days before: Friday the 13th (Saturday counted first).
    assert long_breaks(2026, lead_working_days=2)[0].verify_on == date(2026, 2, 13)


def test_the_threshold_is_a_setting() -> None:
    three_or_more = [(b.name, b.start, b.days) for b in long_breaks(2026, min_days=3)]
    assert three_or_more == [
        ("New Year's Day", date(2026, 1, 1), 3),
        ("Spring Festival", date(2026, 2, 15), 9),
        ("Tomb-sweeping Day", date(2026, 4, 4), 3),
        ("Labour Day", date(2026, 5, 1), 5),
        ("Dragon Boat Festival", date(2026, 6, 19), 3),
        ("Mid-autumn Festival", date(2026, 9, 25), 3),
        ("National Day", date(2026, 10, 1), 7),
    ]
    # New Year's lead reaches back into 2025.
    assert long_breaks(2026, min_days=3)[0].verify_on == date(2025, 12, 29)
    assert [b.name for b in long_breaks(2026, min_days=8)] == ["Spring Festival"]


def test_a_break_over_new_year_belongs_to_the_year_it_ends_in() -> None:
    new_year = long_breaks(2024, min_days=3)[0]
    assert (new_year.start, new_year.end) == (date(2023, 12, 30), date(2024, 1, 1))
    assert all(b.end.year == 2023 for b in long_breaks(2023, min_days=3))


def test_sources_are_cross_checked_and_agree_on_every_published_day() -> None:
    for year in range(2010, 2027):
        calendar = year_calendar(year)
        assert calendar.schedule.source.startswith("chinesecalendar")
        assert calendar.checked_against is not None
        assert calendar.checked_against.startswith("holidays")
        assert calendar.disagreements == [], year


def test_next_long_break() -> None:
    assert next_long_break(date(2026, 3, 1)) == long_breaks(2026)[1]
    assert next_long_break(date(2026, 2, 15)) == long_breaks(2026)[1]  # begun: not "next"
    assert next_long_break(date(2026, 1, 1)) == long_breaks(2026)[0]


def test_an_unpublished_year_is_a_clear_error_never_a_guess() -> None:
    year = first_unpublished_year()
    with pytest.raises(InputError) as caught:
        long_breaks(year)
    message = str(caught.value)
    assert f"holiday schedule for {year} is not published" in message
    assert HOLIDAYS_FILE_ENV in message and "never guesses" in message
    # Late in the last published year, the next break is in the unpublished one: an error too.
    with pytest.raises(InputError, match=f"for {year} is not published"):
        next_long_break(date(year - 1, 11, 27))


def test_2027_before_publication_is_a_clear_error_on_the_cli() -> None:
    year = first_unpublished_year()
    result = drctl("holidays", str(year))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"the holiday schedule for {year} is not published" in result.stderr
    assert HOLIDAYS_FILE_ENV in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


def write_override(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "holidays.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def made_up_year(year: int) -> tuple[str, date]:
    """A made-up schedule for the test (not the State Council's): a 9-day spring break after a
    make-up Saturday, then two more breaks. Returns it and the Saturday."""
    saturday = date(year, 2, 6)
    while saturday.weekday() != 5:
        saturday = saturday.replace(day=saturday.day + 1)
    start, end = saturday.replace(day=saturday.day + 1), saturday.replace(day=saturday.day + 9)
    text = f"""
{year}:
  source: test data
  breaks:
    - {{name: Spring Festival, from: {start}, to: {end}}}
    - {{name: Labour Day, from: {year}-05-01, to: {year}-05-05}}
    - {{name: National Day, from: {year}-10-01, to: {year}-10-07}}
  workdays: [{saturday}]
"""
    return text, saturday


def test_an_override_file_supplies_an_unpublished_year(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    year = first_unpublished_year()
    text, saturday = made_up_year(year)
    path = write_override(tmp_path, text)
    monkeypatch.setenv(HOLIDAYS_FILE_ENV, str(path))
    breaks = long_breaks(year)
    assert [(b.name, b.start, b.days) for b in breaks[:1]] == [
        ("Spring Festival", saturday.replace(day=saturday.day + 1), 9)
    ]
    assert [b.name for b in breaks[1:]] == ["Labour Day", "National Day"]
    # The make-up Saturday is the first working day counted before the break.
    assert long_breaks(year, lead_working_days=1)[0].verify_on == saturday
    assert long_breaks(year, lead_working_days=2)[0].verify_on == saturday.replace(
        day=saturday.day - 1
    )
    calendar = year_calendar(year)
    assert calendar.schedule.source == f"override file {path} (test data)"
    if calendar.checked_against is None:  # holidays has not published the year either
        assert "not cross-checked" in calendar.notes[0]

    result = drctl("holidays", str(year), "--json", env={HOLIDAYS_FILE_ENV: str(path)})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert [b["start"] for b in shown["breaks"]] == [b.start.isoformat() for b in breaks]
    assert shown["source"].startswith("override file")


def test_an_override_that_disagrees_with_chinesecalendar_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2026 as published, except that the Spring Festival break is said to last a day longer
    # and the make-up Saturday (Feb 14) is missing.
    path = write_override(
        tmp_path,
        """
2026:
  breaks:
    - {name: New Year's Day, from: 2026-01-01, to: 2026-01-03}
    - {name: Spring Festival, from: 2026-02-15, to: 2026-02-24}
    - {name: Tomb-sweeping Day, from: 2026-04-04, to: 2026-04-06}
    - {name: Labour Day, from: 2026-05-01, to: 2026-05-05}
    - {name: Dragon Boat Festival, from: 2026-06-19, to: 2026-06-21}
    - {name: Mid-autumn Festival, from: 2026-09-25, to: 2026-09-27}
    - {name: National Day, from: 2026-10-01, to: 2026-10-07}
  workdays: [2026-01-04, 2026-02-28, 2026-05-09, 2026-09-20, 2026-10-10]
""",
    )
    monkeypatch.setenv(HOLIDAYS_FILE_ENV, str(path))
    calendar = year_calendar(2026)
    assert calendar.checked_against is not None
    assert calendar.checked_against.startswith("chinesecalendar")
    assert len(calendar.disagreements) == 2
    assert calendar.disagreements[0].startswith("2026-02-14 (Sat): override file")
    assert "says a day off, chinesecalendar" in calendar.disagreements[0]
    assert calendar.disagreements[1].startswith("2026-02-24 (Tue)")

    shown = drctl("holidays", "2026", env={HOLIDAYS_FILE_ENV: str(path)})
    assert shown.returncode == 0, shown.stderr
    assert "disagrees on 2 day(s)" in shown.stdout and "2026-02-24 (Tue)" in shown.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2027: [1, 2]", "expected YEAR: {source"),
        (
            "2027:\n  breaks:\n    - {name: X, from: 2027-13-01, to: 2027-02-01}\n",
            "holidays.yaml:3: invalid YAML: cannot read this value: month must be in 1..12",
        ),
        # Read within the limits of every hand-written file: an alias bomb is refused at once.
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
                for i in range(8)
            ),
            "nodes",
        ),
        ("2027:\n  breaks: []\n  holidays: []\n", "unknown key(s) holidays"),
        ("2027:\n  breaks:\n    - {name: X, from: 2026-12-31, to: 2027-01-01}\n", "is not in 2027"),
    ],
)
def test_a_bad_override_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    path = write_override(tmp_path, text)
    monkeypatch.setenv(HOLIDAYS_FILE_ENV, str(path))
    with pytest.raises(InputError) as caught:
        long_breaks(2027)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_cli_lists_the_2026_schedule() -> None:
    result = drctl("holidays", "2026", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["min_days"] == 4 and shown["lead_working_days"] == 3
    assert shown["cross_checked_with"].startswith("holidays") and shown["disagreements"] == []
    assert [(b["name_zh"], b["start"], b["end"], b["verify_on"]) for b in shown["breaks"]] == [
        ("春节", "2026-02-15", "2026-02-23", "2026-02-12"),
        ("劳动节", "2026-05-01", "2026-05-05", "2026-04-28"),
        ("国庆节", "2026-10-01", "2026-10-07", "2026-09-28"),
    ]
    table = drctl("holidays", "2026", env={"DRCTL_HOLIDAY_MIN_DAYS": "8"})
    assert table.returncode == 0, table.stderr
    assert "春节 Spring Festival" in table.stdout and "National Day" not in table.stdout
    assert "agrees on every day" in table.stdout
