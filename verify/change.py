"""Checks a change (``kind: change``) names to verify what it did, and what its rollback undid.

    sql.returns       one read-only query on the role's database returns the expected value
                      (a column or an index a migration adds, or that its reverse removes)
    release.current   the application's ``current`` release, as its symlink on the host says,
                      is the expected one, and its files are the ones unpacked (their sha256)

The release layout is the one ``release.switch`` keeps on the application's host (its root)::

    <root>/releases/<release>/              a release, unpacked from its artifact
    <root>/releases/<release>.sha256sums    sha256 of each of its files, made when unpacked
    <root>/current -> releases/<release>    the release in service (a symlink)
    <root>/.drctl-release.json              the last switch: release, previous, status
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drills.model.errors import InputError
from verify.result import Observation, Probe

RELEASES = "releases"
CURRENT = "current"
STATE_FILE = ".drctl-release.json"
SUMS_SUFFIX = ".sha256sums"
RELEASE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"


def expand(text: str, probe: Probe, role: str) -> str:
    """``{environment}`` and ``{node}`` in a path, as the run has them."""
    name, _ = probe.node(role)
    env = getattr(probe.env, "name", "")
    return text.replace("{environment}", str(env)).replace("{node}", name)


# -- sql.returns -------------------------------------------------------------------------------

_READING = re.compile(r"^\s*(select|with|values|show|table)\b", re.I)
Scalar = str | int | float | bool | None


class SqlReturnsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str = Field(description="One query that only reads (SELECT, WITH, VALUES, SHOW).")
    expected: Scalar = Field(description="The value its first column of its first row must have.")
    compare: Literal["eq", "ne", "ge", "le", "gt", "lt"] = "eq"
    label: str | None = Field(default=None, description="What the value is, for the report.")


_OPS = {"eq": "==", "ne": "!=", "ge": ">=", "le": "<=", "gt": ">", "lt": "<"}


def _matches(value: Any, expected: Scalar, compare: str) -> bool:
    if compare in ("eq", "ne"):
        same = value == expected or (
            value is not None and expected is not None and str(value) == str(expected)
        )
        return same if compare == "eq" else not same
    try:
        a, b = float(value), float(expected)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return {"ge": a >= b, "le": a <= b, "gt": a > b, "lt": a < b}[compare]


def sql_returns(probe: Probe, role: str, params: SqlReturnsParams) -> Observation:
    """A read-only query on the role's database returns the expected value."""
    if not _READING.match(params.query):
        raise InputError("sql.returns: the query must only read (SELECT, WITH, VALUES, SHOW)")
    value = probe.sql(role).scalar(params.query, timeout=30)
    shown = value if isinstance(value, str | int | float | bool) or value is None else str(value)
    label = params.label or params.query.strip().splitlines()[0][:80]
    observed = {"value": shown, "label": label, "query": params.query.strip()}
    expected = f"{label} {_OPS[params.compare]} {params.expected!r}"
    held = _matches(value, params.expected, params.compare)
    return Observation(observed, expected, held, f"query {label!r} returned {shown!r}")


# -- release.current ---------------------------------------------------------------------------


class ReleaseCurrentParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str = Field(description="The application's root on its host ({environment}, {node}).")
    release: str | None = Field(
        default=None, pattern=RELEASE_PATTERN, description="The release that must be current."
    )
    previous_of: str | None = Field(
        default=None,
        pattern=RELEASE_PATTERN,
        description="After a switch back: current must be what was current before this release "
        "was switched in (none, if nothing was).",
    )
    verify_files: bool = Field(
        default=True, description="Check the current release's files against their sha256."
    )
    as_user: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ReleaseCurrentParams:
        if (self.release is None) == (self.previous_of is None):
            raise ValueError("give one of release, previous_of")
        return self


CURRENT_SCRIPT = (
    'cd / || exit 9; c="$1/current";'
    ' if [ -L "$c" ]; then printf "link\\t%s\\n" "$(readlink -- "$c")";'
    ' elif [ -e "$c" ]; then printf "other\\n"; else printf "none\\n"; fi; exit 0'
)
SUMS_SCRIPT = 'cd -- "$1" && sha256sum --quiet --strict -c -- "$2" 2>&1; echo "@rc $?"'


def read_state(probe: Probe, role: str, root: str, user: str | None) -> dict[str, Any] | None:
    text = probe.host(role).read_file(posixpath.join(root, STATE_FILE), user=user)
    if text is None:
        return None
    try:
        state = json.loads(text)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def current_release(probe: Probe, role: str, root: str, user: str | None) -> tuple[str, str]:
    """('link', target) / ('other', '') / ('none', '') for ``<root>/current`` on the host."""
    out = probe.host(role).run(["sh", "-c", CURRENT_SCRIPT, "sh", root], user=user, timeout=15)
    kind, _, target = out.stdout.strip().partition("\t")
    return kind, target


def release_current(probe: Probe, role: str, params: ReleaseCurrentParams) -> Observation:
    """The application's current release (its symlink) is the expected one, its files intact."""
    root = expand(params.root, probe, role).rstrip("/") or "/"
    kind, target = current_release(probe, role, root, params.as_user)
    name = posixpath.basename(target.rstrip("/")) if kind == "link" else None
    observed: dict[str, Any] = {"root": root, "current": name, "link": target or None}
    if params.release is not None:
        wanted: str | None = params.release
        expected = f"current release {params.release}"
    else:
        state = read_state(probe, role, root, params.as_user) or {}
        if state.get("release") != params.previous_of:
            observed["state"] = state
            return Observation(
                observed,
                f"the release current before {params.previous_of}",
                False,
                f"{root}/{STATE_FILE} records no switch to {params.previous_of}",
            )
        previous = state.get("previous")
        wanted = posixpath.basename(str(previous).rstrip("/")) if previous else None
        expected = f"the release current before {params.previous_of} ({wanted or 'none'})"
        observed["expected_release"] = wanted
    if kind == "other":
        return Observation(observed, expected, False, f"{root}/current is not a symlink")
    held = name == wanted
    detail = f"{root}/current -> {target}" if kind == "link" else f"no {root}/current"
    if held and name is not None and params.verify_files:
        sums = f"{RELEASES}/{name}{SUMS_SUFFIX}"
        if probe.host(role).exists(posixpath.join(root, sums), user=params.as_user):
            out = (
                probe.host(role)
                .run(
                    [
                        "sh",
                        "-c",
                        SUMS_SCRIPT,
                        "sh",
                        root + "/" + RELEASES + "/" + name,
                        "../" + name + SUMS_SUFFIX,
                    ],
                    user=params.as_user,
                    timeout=300,
                    check=False,
                )
                .stdout
            )
            ok = out.rstrip().endswith("@rc 0")
            observed["files_intact"] = ok
            if not ok:
                problems = [line for line in out.splitlines() if not line.startswith("@rc")]
                observed["file_problems"] = problems[:20]
                detail += f"; files differ from {sums}: {'; '.join(problems[:3])}"
                held = False
        else:
            observed["files_intact"] = None
    return Observation(observed, expected, held, detail)
