"""Physical backups (``playbooks/pg-backup-verify.yaml``), taken and checked on the node's host.

    pg.basebackup    take a plain-format backup (pg_basebackup -X stream -c fast) into the
                     node's backup directory (``backupdir``), named by its UTC stamp, or find the
                     newest one there; its age against ``max_backup_age``
    pg.verifybackup  pg_verifybackup: every file against the backup's manifest, and the WAL

``pg_basebackup`` runs on the host of the step's target node, as its database OS user, and
connects to that node's own address; the backup is written there. What it says of itself (label,
LSNs, files, size, when it finished) is read there too, through the node's host executor.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from typing import TYPE_CHECKING, Any

from drills.engine.catalogue import Params
from drills.engines.postgres.backupdir import (
    TakeParams,
    age_check,
    age_phrase,
    backup_root,
    latest,
    prune,
    ready_root,
)
from drills.engines.postgres.runstate import state_entry, update_state
from drills.engines.postgres.scratch import (
    ActionFailed,
    action_result,
    client_conninfo,
    iso,
    mib,
    mtime,
    node_of,
    password_env,
    run_on,
    size_bytes,
    stamp,
    where,
)
from drills.model.durations import format_seconds
from drills.model.environment import Node, PostgresAccess
from drills.model.errors import DrillError, InputError

if TYPE_CHECKING:
    from drills.engine.catalogue import ActionResult
    from drills.engine.targets import Targets

_QUOTED = re.compile(r'"([^"]+)"')


def basebackup_argv(pg: PostgresAccess, node: Node, path: str, label: str) -> list[str]:
    return [
        f"{pg.bin_dir}/pg_basebackup",
        "-d",
        client_conninfo(node),
        "-D",
        path,
        "-Fp",
        "-X",
        "stream",
        "-c",
        "fast",
        "-l",
        label,
        "--no-password",
    ]


def backup_info(targets: Targets, role: str, path: str) -> dict[str, Any]:
    """What a plain-format backup on the role's host says of itself: label, LSNs, size, when it
    finished."""
    name, _, pg, _ = node_of(targets, role)
    host = targets.host(role)
    label_text = targets.read_file(role, f"{path}/backup_label") or ""
    label = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in label_text.splitlines())
    )
    manifest_text = targets.read_file(role, f"{path}/backup_manifest")
    if manifest_text is None:
        raise InputError(
            f"{path} on {name} has no backup_manifest: it cannot be verified "
            "(take plain-format backups with a manifest)",
            host=name,
        )
    try:
        manifest = json.loads(manifest_text)
        wal = manifest["WAL-Ranges"][-1]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ActionFailed(
            f"the manifest {path}/backup_manifest on {name} cannot be read: {exc!r}", host=name
        ) from exc
    ended = mtime(host, f"{path}/backup_manifest", pg.os_user)
    return where(targets, role) | {
        "path": path,
        "label": label.get("LABEL", ""),
        "start_time": label.get("START TIME", ""),
        "start_lsn": wal.get("Start-LSN") or label.get("START WAL LOCATION", "").split(" ")[0],
        "end_lsn": wal.get("End-LSN"),
        "timeline": wal.get("Timeline"),
        "system_identifier": manifest.get("System-Identifier"),
        "files": len(manifest.get("Files", [])),
        "size_bytes": size_bytes(host, path, pg.os_user),
        "ended_at": iso(ended),
        "age_seconds": round(max(0.0, time.time() - ended), 3),
    }


# -- pg.basebackup -------------------------------------------------------------------------------


def basebackup_run(targets: Targets, role: str, params: TakeParams, timeout: float) -> ActionResult:
    name, node, pg, env = node_of(targets, role)
    notes: list[str] = []
    seconds: float | None = None
    if params.reuse_latest:
        root = backup_root(targets, role, params.backup_dir, "base")
        path, count = latest(targets, role, root, kind="base")
        notes.append(f"newest of {count} backup(s) in {root} on {name}")
    else:
        root = ready_root(targets, role, params.backup_dir, "base")
        path = f"{root}/{stamp()}"
        label = f"drctl {env}/{name} {posixpath.basename(path)}"
        started = time.monotonic()
        try:
            run_on(
                targets,
                role,
                basebackup_argv(pg, node, path, label),
                timeout=timeout,
                env=password_env(node),
            )
        except DrillError:
            run_on(targets, role, ["rm", "-rf", "--", path], timeout=60, check=False)
            raise
        seconds = round(time.monotonic() - started, 3)
        notes.append(f"took {path} on {name} in {seconds:g}s")
        notes += [
            f"removed old backup {p}" for p in prune(targets, role, root, params.keep, dirs=True)
        ]
    info = backup_info(targets, role, path) | {"taken": not params.reuse_latest, "seconds": seconds}
    age_check(info, params, name, "backup")
    update_state(env, name, backup=info)
    notes.append(
        f"backup {info['label']!r}: {mib(info['size_bytes'])}, {info['files']} files, "
        f"LSN {info['start_lsn']}..{info['end_lsn']}, {format_seconds(info['age_seconds'])} old"
    )
    return action_result("; ".join(notes), info)


def basebackup_describe(targets: Targets, role: str, params: TakeParams) -> list[str]:
    name, node, pg, env = node_of(targets, role)
    root = backup_root(targets, role, params.backup_dir, "base")
    age = age_phrase(params)
    if params.reuse_latest:
        return [f"on {name}: find the newest backup (with a backup_manifest) in {root}{age}"]
    argv = basebackup_argv(pg, node, f"{root}/<UTC stamp>", f"drctl {env}/{name} <UTC stamp>")
    return [
        targets.describe(role, argv) + age,
        f"on {name}: keep the newest {params.keep} in {root}",
    ]


# -- pg.verifybackup -----------------------------------------------------------------------------


def verifybackup_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    name, _, pg, _ = node_of(targets, role)
    path = str(state_entry(targets, role, "backup", "pg.basebackup")["path"])
    started = time.monotonic()
    result = run_on(
        targets, role, [f"{pg.bin_dir}/pg_verifybackup", path], timeout=timeout, check=False
    )
    seconds = round(time.monotonic() - started, 3)
    problems = [
        line.split("error:", 1)[1].strip()
        for line in result.output.splitlines()
        if "error:" in line
    ]
    files = [f"{path}/{m}" for p in problems for m in _QUOTED.findall(p) if not m.startswith("/")]
    data: dict[str, Any] = where(targets, role) | {
        "path": path,
        "verified": result.returncode == 0,
        "seconds": seconds,
        "problems": problems[:50],
        "files": files[:50],
    }
    if result.returncode != 0:
        first = problems[0] if problems else (result.output.splitlines() or ["failed"])[-1]
        at = f" ({files[0]})" if files else ""
        more = f"; {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
        raise ActionFailed(
            f"pg_verifybackup rejected backup {path} on {name}: {first}{at}{more}",
            host=name,
            data=data,
        )
    return action_result(result.output, data)


def verifybackup_describe(targets: Targets, role: str, params: Params) -> list[str]:
    _, _, pg, _ = node_of(targets, role)
    return [targets.describe(role, [f"{pg.bin_dir}/pg_verifybackup", "<the backup>"])]
