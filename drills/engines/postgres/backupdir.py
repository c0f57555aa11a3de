"""A node's backup directory, on the node's host: where backups (or dumps) are kept, the newest
of them, how old it is, and the pruning of the ones drctl took.

A backup directory holds one backup per entry: a plain-format ``pg_basebackup`` directory with a
``backup_manifest`` (``base``), or a ``*.dump`` file with its ``.sha256`` beside it (``dump``).
Its default is ``<parent of the data directory>/drctl-backups/<environment>/<node>/<kind>``
(``drills.engines.postgres.scratch.default_backup_dir``); a site's own backups are found by
pointing ``backup_dir`` at them. Entries drctl took are named by their UTC stamp, and only those
are ever pruned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from drills.engine.catalogue import Params
from drills.engines.postgres.scratch import (
    STAMP_RE,
    ActionFailed,
    default_backup_dir,
    make_owned_dir,
    node_of,
    run_on,
)
from drills.model.durations import Duration, format_seconds
from drills.model.errors import InputError

if TYPE_CHECKING:
    from drills.engine.targets import Targets


class TakeParams(Params):
    reuse_latest: bool = Field(
        default=False,
        description="Find the newest backup in the backup directory instead of taking one "
        "(fails when there is none).",
    )
    max_backup_age: Duration | None = Field(
        default=None,
        description="A backup older than this (from its end) fails the drill, with that reason.",
    )
    backup_dir: str | None = Field(
        default=None,
        description="Where backups are on the node's host (one entry each); default "
        "<parent of postgres.data_dir>/drctl-backups/<environment>/<node>/base (.../dump for "
        "dumps), beside the data directory on the node the step targets.",
    )
    keep: int = Field(
        default=3, ge=1, description="Backups drctl took that are kept; older ones are removed."
    )


def backup_root(targets: Targets, role: str, configured: str | None, kind: str) -> str:
    """The backup directory on the role's host (a path there, not made)."""
    name, node, _, env = node_of(targets, role)
    if configured:
        return configured.rstrip("/") or "/"
    return default_backup_dir(env, name, node, kind)


def ready_root(targets: Targets, role: str, configured: str | None, kind: str) -> str:
    """The backup directory, made on the role's host (owned by its OS user) if it is not there."""
    root = backup_root(targets, role, configured, kind)
    make_owned_dir(targets.host(role), root, targets.os_user(role))
    return root


def latest(
    targets: Targets, role: str, root: str, *, kind: str, pattern: str = "*.dump"
) -> tuple[str, int]:
    """The newest backup in ``root`` (by the time it was finished) and how many were there."""
    name, _, _, _ = node_of(targets, role)
    if kind == "base":
        argv = ["find", root, "-mindepth", "2", "-maxdepth", "2", "-name", "backup_manifest"]
        argv += ["-printf", "%T@ %h\\n"]
    else:
        argv = ["find", root, "-mindepth", "1", "-maxdepth", "1", "-type", "f", "-name", pattern]
        argv += ["-printf", "%T@ %p\\n"]
    result = run_on(targets, role, argv, timeout=60, check=False)
    if result.returncode != 0 and not result.stdout.strip():
        raise InputError(
            f"cannot look for backups in {root} on {name}: {result.output or 'find failed'}",
            host=name,
        )
    found = sorted(
        (float(when), path)
        for when, _, path in (line.partition(" ") for line in result.stdout.splitlines())
        if path
    )
    if not found:
        what = "a plain-format backup with a backup_manifest" if kind == "base" else pattern
        raise InputError(f"no backup found in {root} on {name} (looked for {what})", host=name)
    return found[-1][1], len(found)


def prune(targets: Targets, role: str, root: str, keep: int, *, dirs: bool) -> list[str]:
    """Remove the oldest of the backups drctl took (named by their stamp) beyond ``keep``."""
    kind = ["-type", "d"] if dirs else ["-type", "f", "-name", "*.dump"]
    listing = run_on(
        targets,
        role,
        ["find", root, "-mindepth", "1", "-maxdepth", "1", *kind, "-printf", "%f\\n"],
        timeout=60,
        check=False,
    ).stdout
    ours = sorted(n for n in listing.splitlines() if STAMP_RE.match(n))
    removed = []
    for entry in ours[: max(0, len(ours) - keep)]:
        paths = [f"{root}/{entry}"] + ([] if dirs else [f"{root}/{entry}.sha256"])
        run_on(targets, role, ["rm", "-rf", "--", *paths], timeout=300)
        removed.append(f"{root}/{entry}")
    return removed


def age_check(info: dict[str, Any], params: TakeParams, name: str, what: str) -> dict[str, Any]:
    """The backup's age against ``max_backup_age``: too old fails the step with that reason."""
    limit = params.max_backup_age
    info["max_backup_age_seconds"] = limit
    if limit is not None and info["age_seconds"] > limit:
        raise ActionFailed(
            f"{what} {info['path']} is {format_seconds(info['age_seconds'])} old on {name} "
            f"(finished {info['ended_at']}), older than max_backup_age {format_seconds(limit)}",
            host=name,
            data=info,
        )
    return info


def age_phrase(params: TakeParams) -> str:
    """What ``plan`` says of the age limit."""
    if params.max_backup_age is None:
        return ""
    return f"; fail if it finished more than {format_seconds(params.max_backup_age)} ago"
