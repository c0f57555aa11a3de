"""Generic actions of a change (``kind: change``): a verified copy of the files it replaces, and
an application release switched by a symlink, and switched back.

    files.backup        copy the named paths aside on their host (a directory per run under
                        ``backup_dir``), checksum every file of the originals and of the copies
                        (sha256), compare them, and keep a SHA256SUMS manifest with the copy
    release.switch      copy a release artifact (a tarball on the orchestrator, checked against
                        its sha256) to the application's host, unpack it into
                        ``<root>/releases/<release>``, and switch ``<root>/current`` to it
                        atomically (``ln -sfn`` to a temporary name, then ``mv -T`` over
                        ``current``); the previous target is recorded on the host first
    release.switch_back put ``current`` back where the switch found it (or remove it, if there
                        was none), and remove the release the switch unpacked

Everything runs on the host of the step's target node, through its host executor (local, or SSH),
as the login user or ``as_user``. The artifact is the one file read on the orchestrator: it is
what the vendor delivered there (a relative path is under ``$DRCTL_HOME/releases/``), and it goes
to the host in chunks through the executor, then is checked there against the same sha256.
``{environment}`` and ``{node}`` in paths are the run's. The release layout is in
``verify.change``, whose ``release.current`` check verifies a switch and a switch back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import secrets
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from drills.engine.catalogue import ActionResult, ActionSpec, Params
from drills.engine.targets import Targets
from drills.executors.host import CommandResult, HostExecutor
from drills.home import drctl_home
from drills.model.errors import CommandFailed, InputError
from verify.change import (
    CURRENT,
    RELEASE_PATTERN,
    RELEASES,
    STATE_FILE,
    SUMS_SUFFIX,
    current_release,
)

CHUNK_BYTES = 512 * 1024
ARTIFACTS_DIR = "releases"  # under $DRCTL_HOME: where relative artifact paths are
META_SUFFIX = ".drctl.json"
FILES_LISTED = 50  # files of a backed-up path named in the record


class ChangeFailed(CommandFailed):
    """A change's action that ran and found a fault; ``data`` keeps what it saw for the record."""

    def __init__(self, message: str, *, host: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message, returncode=1, host=host)
        self.data: dict[str, Any] = dict(data or {})


def expand(targets: Targets, role: str, text: str) -> str:
    name, _ = targets.node(role)
    return text.replace("{environment}", targets.env.name).replace("{node}", name)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def _iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _where(targets: Targets, role: str) -> dict[str, Any]:
    name, _ = targets.node(role)
    return {"host": name, "address": targets.host(role).address}


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else ""


# -- files.backup ------------------------------------------------------------------------------


class FilesBackupParams(Params):
    paths: list[str] = Field(
        min_length=1,
        description="The files or directories the change replaces, on the role's host "
        "({environment}, {node}); a symlink is recorded and what it points at is copied.",
    )
    backup_dir: str = Field(
        min_length=1,
        description="Where the copies go on that host: a directory per run, named by its UTC "
        "stamp, with a SHA256SUMS manifest.",
    )
    missing_ok: bool = Field(
        default=False, description="A path that does not exist is recorded as absent."
    )
    as_user: str | None = Field(default=None, description="Copy as this user on the host.")

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith(("/", "{")):
                raise ValueError(f"path {path!r} must be absolute on the host")
        return paths


# Arguments: the backup directory, 1/0 (missing paths are fine), the paths. Prints a P line per
# path (n, path, kind, link target, files, bytes, sha256 of its sums, sha256 of a single file),
# then D and the sha256 of the manifest. Exit 3: a path is missing; 6: a copy differs.
BACKUP_SCRIPT = r"""
dest=$1; missing_ok=$2; shift 2
cd / || exit 9
umask 077
fail() { code=$1; shift; printf '%s\n' "$*" >&2; rm -rf -- "$dest"; exit "$code"; }
sums() { find "$1" -type f -exec sha256sum {} + | LC_ALL=C sort -k 2; }
for p in "$@"; do
  if [ ! -e "$p" ] && [ ! -L "$p" ] && [ "$missing_ok" != 1 ]; then
    printf 'no such file or directory: %s\n' "$p" >&2; exit 3
  fi
done
[ -e "$dest" ] && { printf '%s exists already\n' "$dest" >&2; exit 4; }
mkdir -p -- "$dest" || exit 4
: > "$dest/SHA256SUMS"
n=0
for p in "$@"; do
  n=$((n + 1))
  if [ ! -e "$p" ] && [ ! -L "$p" ]; then
    printf 'P\t%s\t%s\tabsent\t\t0\t0\t\t\n' "$n" "$p"; continue
  fi
  link=""; src=$p
  if [ -L "$p" ]; then
    link=$(readlink -- "$p"); src=$(readlink -f -- "$p") || fail 5 "cannot resolve $p"
  fi
  if [ -d "$src" ]; then kind=directory
  elif [ -f "$src" ]; then kind=file
  else fail 5 "$p is neither a file nor a directory"; fi
  slot="$dest/$n"; base=$(basename -- "$src")
  mkdir -p -- "$slot" || fail 4 "cannot make $slot"
  printf '%s\n' "$p" > "$slot.path"
  [ -n "$link" ] && printf '%s\n' "$link" > "$slot.link"
  cp -a -- "$src" "$slot/$base" || fail 5 "cannot copy $src"
  (cd -- "$(dirname -- "$src")" && sums "$base") > "$slot.orig" || fail 5 "cannot checksum $src"
  (cd -- "$slot" && sums "$base") > "$slot.copy" || fail 5 "cannot checksum the copy of $src"
  cmp -s "$slot.orig" "$slot.copy" \
    || fail 6 "the copy of $p differs from the original (it changed while being copied?)"
  files=$(wc -l < "$slot.copy" | tr -d ' ')
  bytes=$(find "$slot/$base" -type f -printf '%s\n' 2>/dev/null \
    | awk '{ s += $1 } END { print s + 0 }')
  digest=$(sha256sum < "$slot.copy" | cut -d' ' -f1)
  single=""; [ "$kind" = file ] && single=$(cut -d' ' -f1 < "$slot.copy")
  printf 'P\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$n" "$p" "$kind" "$link" "$files" "${bytes:-0}" "$digest" "$single"
  head -n 50 "$slot.copy" | sed "s|^|F\t$n\t|"
  sed "s|^\([0-9a-f]*\)  |\1  $n/|" "$slot.copy" >> "$dest/SHA256SUMS"
  rm -f -- "$slot.orig" "$slot.copy"
done
if [ -s "$dest/SHA256SUMS" ]; then
  (cd -- "$dest" && sha256sum --quiet --strict -c SHA256SUMS) >&2 \
    || fail 7 "the copies do not match SHA256SUMS"
fi
printf 'D\t%s\n' "$(sha256sum < "$dest/SHA256SUMS" | cut -d' ' -f1)"
"""


def parse_backup(out: str) -> tuple[list[dict[str, Any]], str]:
    paths: list[dict[str, Any]] = []
    digest = ""
    for line in out.splitlines():
        kind, _, rest = line.partition("\t")
        fields = rest.split("\t")
        if kind == "P" and len(fields) >= 8:
            entry: dict[str, Any] = {
                "slot": int(fields[0]),
                "path": fields[1],
                "kind": fields[2],
                "link_target": fields[3] or None,
                "files": int(fields[4] or 0),
                "bytes": int(fields[5] or 0),
                "sums_sha256": fields[6] or None,
                "file_list": [],
            }
            if fields[7]:
                entry["sha256"] = fields[7]
            paths.append(entry)
        elif kind == "F" and len(fields) >= 2 and paths:
            digest_, _, name = fields[1].partition("  ")
            paths[-1]["file_list"].append({"file": name, "sha256": digest_})
        elif kind == "D":
            digest = rest.strip()
    return paths, digest


def files_backup_run(
    targets: Targets, role: str, params: FilesBackupParams, timeout: float
) -> ActionResult:
    name, _ = targets.node(role)
    host = targets.host(role)
    root = expand(targets, role, params.backup_dir).rstrip("/") or "/"
    dest = posixpath.join(root, _stamp())
    paths = [expand(targets, role, p) for p in params.paths]
    argv = ["sh", "-c", BACKUP_SCRIPT, "sh", dest, "1" if params.missing_ok else "0", *paths]
    started = time.monotonic()
    result = host.run(argv, user=params.as_user, timeout=timeout, check=False)
    seconds = round(time.monotonic() - started, 3)
    data: dict[str, Any] = _where(targets, role) | {"backup_dir": dest, "paths": paths}
    if result.returncode != 0:
        raise ChangeFailed(
            f"the backup of {', '.join(paths)} on {name} failed: "
            f"{_last_line(result.stderr or result.stdout) or f'exit {result.returncode}'}"
            "; nothing was changed",
            host=name,
            data=data | {"verified": False},
        )
    copied, manifest = parse_backup(result.stdout)
    data |= {
        "paths": copied,
        "files": sum(p["files"] for p in copied),
        "bytes": sum(p["bytes"] for p in copied),
        "manifest": f"{dest}/SHA256SUMS",
        "manifest_sha256": manifest,
        "verified": True,
        "seconds": seconds,
    }
    said = "; ".join(
        f"{p['path']} absent"
        if p["kind"] == "absent"
        else f"{p['path']}"
        + (f" -> {p['link_target']}" if p["link_target"] else "")
        + f": {p['files']} file(s), {p['bytes']} bytes"
        for p in copied
    )
    output = (
        f"copied to {dest} on {name} and verified against SHA256SUMS "
        f"(sha256 {manifest[:16]}…): {said}"
    )
    return ActionResult(output, data)


def files_backup_describe(targets: Targets, role: str, params: FilesBackupParams) -> list[str]:
    root = expand(targets, role, params.backup_dir).rstrip("/")
    paths = [expand(targets, role, p) for p in params.paths]
    return [
        targets.describe(role, ["cp", "-a", "--", *paths, f"{root}/<UTC stamp>/<n>/"])
        + "; sha256sum of every original and every copy, compared; SHA256SUMS kept with the copy"
    ]


# -- release.switch ----------------------------------------------------------------------------


class SwitchParams(Params):
    root: str = Field(
        description="The application's root on its host ({environment}, {node}): releases/ and "
        "the current symlink are under it."
    )
    release: str = Field(pattern=RELEASE_PATTERN, description="The release's name (version).")
    artifact: str | None = Field(
        default=None,
        description="The release as a tarball on the orchestrator (.tar.gz, .tgz, .tar.xz, .tar; "
        "relative: under $DRCTL_HOME/releases/), unpacked into releases/<release>; none: that "
        "directory is on the host already.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="The artifact's sha256; default: the first word of <artifact>.sha256.",
    )
    reload: list[str] | None = Field(
        default=None,
        description="A command run on the host after the switch (and after a switch back), "
        "e.g. [systemctl, reload, his-app].",
    )
    max_mib: int = Field(default=1024, ge=1, le=65536, description="Largest artifact copied.")
    as_user: str | None = None


PREPARE_SCRIPT = r"""
root=$1; rel=$2; cd / || exit 9
mkdir -p -- "$root/releases" || exit 4
if [ -e "$root/current" ] && [ ! -L "$root/current" ]; then
  printf '%s/current is not a symlink: drctl switches releases by a symlink\n' "$root" >&2; exit 3
fi
if [ -e "$root/releases/$rel" ]; then printf 'exists\n'; else printf 'absent\n'; fi
"""
UNPACK_SCRIPT = r"""
root=$1; rel=$2; part=$3; want=$4; flag=$5; cd / || exit 9
got=$(sha256sum -- "$part" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  rm -f -- "$part"; printf 'the copy on the host has sha256 %s, not %s\n' "$got" "$want" >&2; exit 3
fi
tmp="$root/releases/.drctl-unpack-$$"
rm -rf -- "$tmp"; mkdir -p -- "$tmp" || exit 4
tar -x $flag -f "$part" -C "$tmp" || { rm -rf -- "$tmp" "$part"; exit 5; }
rm -f -- "$part"
top=$tmp
if [ "$(ls -A -- "$tmp" | wc -l)" -eq 1 ]; then
  only="$tmp/$(ls -A -- "$tmp")"; [ -d "$only" ] && [ ! -L "$only" ] && top=$only
fi
mv -T -- "$top" "$root/releases/$rel" || { rm -rf -- "$tmp"; exit 6; }
rm -rf -- "$tmp"
(cd -- "$root/releases/$rel" && find . -type f -exec sha256sum {} + | LC_ALL=C sort -k 2) \
  > "$root/releases/$rel.sha256sums" || exit 7
wc -l < "$root/releases/$rel.sha256sums" | tr -d ' '
"""
# Arguments: root, link target ('' removes current). ln -sfn to a temporary name beside current,
# then mv -T over it: rename(2), so current is at every moment the old release or the new one.
SWITCH_SCRIPT = r"""
root=$1; to=$2; cd / || exit 9
cur="$root/current"
if [ -e "$cur" ] && [ ! -L "$cur" ]; then printf '%s is not a symlink\n' "$cur" >&2; exit 3; fi
if [ -z "$to" ]; then rm -f -- "$cur"; exit 0; fi
if [ ! -d "$root/$to" ] && [ ! -d "$to" ]; then
  printf 'no release directory %s under %s\n' "$to" "$root" >&2; exit 4
fi
tmp="$root/.current.drctl-$$"
ln -sfn -- "$to" "$tmp" || exit 5
mv -T -- "$tmp" "$cur" || { rm -f -- "$tmp"; exit 5; }
readlink -- "$cur"
"""


def _run(
    host: HostExecutor,
    argv: list[str],
    user: str | None,
    timeout: float,
    *,
    input: str | None = None,
) -> CommandResult:
    return host.run(argv, user=user, timeout=timeout, check=False, input=input)


def _fail(name: str, what: str, result: CommandResult, data: dict[str, Any]) -> ChangeFailed:
    why = _last_line(result.stderr or result.stdout) or f"exit {result.returncode}"
    return ChangeFailed(f"{what} on {name}: {why}", host=name, data=data)


def artifact_path(artifact: str) -> Path:
    path = Path(artifact).expanduser()
    return path if path.is_absolute() else drctl_home() / ARTIFACTS_DIR / path


def _tar_flag(name: str) -> str:
    lower = name.lower()
    if lower.endswith((".tar.gz", ".tgz")):
        return "-z"
    if lower.endswith((".tar.xz", ".txz")):
        return "-J"
    if lower.endswith((".tar.bz2", ".tbz2")):
        return "-j"
    return ""


def expected_digest(path: Path, given: str | None) -> str:
    sidecar = path.with_name(path.name + ".sha256")
    recorded = None
    if sidecar.is_file():
        words = sidecar.read_text(encoding="utf-8", errors="replace").split()
        recorded = words[0].lower() if words else None
    if given and recorded and given != recorded:
        raise InputError(f"release.switch: sha256 {given[:16]}… differs from {sidecar}")
    digest = given or recorded
    if not digest:
        raise InputError(
            f"release.switch: no sha256 to check {path} against: give sha256, or put the "
            f"vendor's checksum in {sidecar}"
        )
    return digest


def upload(
    host: HostExecutor, data: bytes, target: str, user: str | None, deadline: float, name: str
) -> int:
    """``data`` to ``target`` on the host, chunk by chunk (base64 through the executor)."""
    start = _run(host, ["sh", "-c", 'umask 077; : > "$1"', "sh", target], user, 30)
    if start.returncode != 0:
        raise _fail(name, f"cannot write {target}", start, {})
    chunks = 0
    for offset in range(0, len(data), CHUNK_BYTES):
        encoded = base64.b64encode(data[offset : offset + CHUNK_BYTES]).decode("ascii")
        remaining = max(1.0, deadline - time.monotonic())
        step = _run(
            host, ["sh", "-c", 'base64 -d >> "$1"', "sh", target], user, remaining, input=encoded
        )
        if step.returncode != 0:
            _run(host, ["rm", "-f", "--", target], user, 30)
            raise _fail(name, f"copying to {target} failed", step, {})
        chunks += 1
    return chunks


def _meta(host: HostExecutor, path: str, user: str | None) -> dict[str, Any]:
    text = host.read_file(path, user=user)
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _save_state(host: HostExecutor, root: str, state: dict[str, Any], user: str | None) -> None:
    host.write_file(f"{root}/{STATE_FILE}", json.dumps(state) + "\n", user=user, mode=0o644)


def _artifact(
    params: SwitchParams, name: str, data: dict[str, Any]
) -> tuple[bytes, str, dict[str, Any]]:
    """The artifact's bytes, its sha256 (checked here against the delivered one) and facts."""
    assert params.artifact is not None
    path = artifact_path(params.artifact)
    if not path.is_file():
        raise InputError(f"release.switch: no artifact {path} on the orchestrator")
    size = path.stat().st_size
    if size > params.max_mib * 1024 * 1024:
        raise InputError(f"release.switch: {path} is {size} bytes, over max_mib")
    digest = expected_digest(path, params.sha256)
    payload = path.read_bytes()
    actual = hashlib.sha256(payload).hexdigest()
    if actual != digest:
        raise ChangeFailed(
            f"artifact {path} has sha256 {actual[:16]}…, not the delivered {digest[:16]}…: "
            "it was damaged or is not the release; nothing was changed",
            host=name,
            data=data | {"artifact": {"path": str(path), "sha256": actual, "expected": digest}},
        )
    return payload, digest, {"path": str(path), "bytes": size, "sha256": digest}


def switch_run(targets: Targets, role: str, params: SwitchParams, timeout: float) -> ActionResult:
    name, _ = targets.node(role)
    host, user = targets.host(role), params.as_user
    deadline = time.monotonic() + timeout
    root = expand(targets, role, params.root).rstrip("/") or "/"
    rel = params.release
    release_dir = f"{root}/{RELEASES}/{rel}"
    data: dict[str, Any] = _where(targets, role) | {"root": root, "release": rel}
    notes: list[str] = []
    prepared = _run(host, ["sh", "-c", PREPARE_SCRIPT, "sh", root, rel], user, 30)
    if prepared.returncode != 0:
        raise _fail(name, f"cannot prepare {root}", prepared, data)
    exists = prepared.stdout.strip() == "exists"
    kind, previous = current_release(targets, role, root, user)
    if kind == "other":
        raise ChangeFailed(f"{root}/{CURRENT} on {name} is not a symlink", host=name, data=data)
    data["previous"] = previous or None
    state: dict[str, Any] = {
        "release": rel,
        "previous": previous or None,
        "status": "preparing",
        "unpacked": False,
        "artifact_sha256": None,
        "at": _iso(),
        "environment": targets.env.name,
        "run": getattr(targets, "run_id", None),
    }
    # First, before anything changes: a switch back must know where to go back to, whatever
    # happens next (this run dying mid-switch included).
    _save_state(host, root, state, user)
    digest = None
    if params.artifact is not None:
        payload, digest, artifact = _artifact(params, name, data)
        data["artifact"] = artifact
        state["artifact_sha256"] = digest
    meta_path = f"{release_dir}{META_SUFFIX}"
    if exists:
        meta = _meta(host, meta_path, user)
        if digest is not None and meta.get("sha256") != digest:
            raise ChangeFailed(
                f"{release_dir} exists on {name} but was not unpacked from this artifact "
                f"(sha256 {digest[:16]}…); remove it or name another release; nothing was changed",
                host=name,
                data=data,
            )
        notes.append(f"{release_dir} is on {name} already")
    elif params.artifact is None:
        raise ChangeFailed(
            f"no {release_dir} on {name} and no artifact to unpack; nothing was changed",
            host=name,
            data=data,
        )
    else:
        assert digest is not None
        part = f"{root}/{RELEASES}/.drctl-{rel}.part"
        chunks = upload(host, payload, part, user, deadline, name)
        flag = _tar_flag(params.artifact)
        argv = ["sh", "-c", UNPACK_SCRIPT, "sh", root, rel, part, digest, flag]
        done = _run(host, argv, user, max(1.0, deadline - time.monotonic()))
        if done.returncode != 0:
            raise _fail(name, f"unpacking {params.artifact} into {release_dir}", done, data)
        state["unpacked"] = True  # from here a switch back removes it
        _save_state(host, root, state, user)
        files = int(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else 0
        meta = {"artifact": data["artifact"]["path"], "sha256": digest, "unpacked_at": _iso()}
        host.write_file(meta_path, json.dumps(meta) + "\n", user=user, mode=0o644)
        data["artifact"] |= {"chunks": chunks, "files": files, "checked_on_host": True}
        notes.append(
            f"copied {params.artifact} ({data['artifact']['bytes']} bytes, {chunks} chunk(s)) "
            f"to {name}, sha256 checked there, unpacked {files} file(s) into {release_dir}"
        )
    link = f"{RELEASES}/{rel}"
    state["status"] = "switching"
    _save_state(host, root, state, user)
    switched = _run(host, ["sh", "-c", SWITCH_SCRIPT, "sh", root, link], user, 30)
    if switched.returncode != 0:
        raise _fail(name, f"switching {root}/{CURRENT} to {link}", switched, data)
    state["status"] = "switched"
    _save_state(host, root, state, user)
    notes.append(
        f"{root}/{CURRENT} -> {link} (was {previous or 'absent'}), switched by ln -sfn + mv -T"
    )
    data |= {
        "release_dir": release_dir,
        "current": switched.stdout.strip(),
        "unpacked": bool(state["unpacked"]),
        "state_file": f"{root}/{STATE_FILE}",
    }
    if params.reload:
        reloaded = _run(host, list(params.reload), user, max(1.0, deadline - time.monotonic()))
        data["reload"] = {"command": shlex.join(params.reload), "returncode": reloaded.returncode}
        if reloaded.returncode != 0:
            raise _fail(name, f"the reload command {shlex.join(params.reload)}", reloaded, data)
        notes.append(f"ran {shlex.join(params.reload)}")
    return ActionResult("; ".join(notes), data)


def switch_describe(targets: Targets, role: str, params: SwitchParams) -> list[str]:
    name, _ = targets.node(role)
    root = expand(targets, role, params.root).rstrip("/")
    rel = params.release
    lines = []
    if params.artifact:
        lines.append(
            f"copy {artifact_path(params.artifact)} (sha256 checked here and on {name}) to {name}"
            f" and unpack it into {root}/{RELEASES}/{rel}"
        )
    lines.append(f"on {name}: record {root}/{CURRENT}'s target in {root}/{STATE_FILE}")
    lines.append(
        targets.describe(role, ["ln", "-sfn", f"{RELEASES}/{rel}", f"{root}/.current.drctl-<pid>"])
        + f" && mv -T {root}/.current.drctl-<pid> {root}/{CURRENT}"
    )
    if params.reload:
        lines.append(targets.describe(role, list(params.reload)))
    return lines


# -- release.switch_back -----------------------------------------------------------------------


class SwitchBackParams(Params):
    root: str = Field(description="The application's root on its host ({environment}, {node}).")
    remove_release: bool = Field(
        default=True, description="Remove the release the switch unpacked (not one it found)."
    )
    reload: list[str] | None = Field(
        default=None, description="A command run on the host after the switch back."
    )
    as_user: str | None = None


def switch_back_run(
    targets: Targets, role: str, params: SwitchBackParams, timeout: float
) -> ActionResult:
    name, _ = targets.node(role)
    host, user = targets.host(role), params.as_user
    root = expand(targets, role, params.root).rstrip("/") or "/"
    state_path = f"{root}/{STATE_FILE}"
    state = _meta(host, state_path, user)
    data: dict[str, Any] = _where(targets, role) | {"root": root, "state_file": state_path}
    run = getattr(targets, "run_id", None)
    if state.get("status") not in ("preparing", "switching", "switched") or (
        run is not None and state.get("run") not in (None, run)
    ):
        return ActionResult(
            f"no switch by this run recorded in {state_path} on {name}: nothing to undo", data
        )
    rel = str(state.get("release"))
    previous = str(state.get("previous") or "")
    kind, before = current_release(targets, role, root, user)
    result = _run(host, ["sh", "-c", SWITCH_SCRIPT, "sh", root, previous], user, 30)
    if result.returncode != 0:
        raise _fail(name, f"switching {root}/{CURRENT} back to {previous or 'none'}", result, data)
    notes = [
        f"{root}/{CURRENT} -> {previous}" if previous else f"removed {root}/{CURRENT}",
        f"(was {before or kind})",
    ]
    removed = None
    if params.remove_release and state.get("unpacked") and previous != f"{RELEASES}/{rel}":
        removed = f"{root}/{RELEASES}/{rel}"
        gone = _run(
            host,
            ["rm", "-rf", "--", removed, removed + SUMS_SUFFIX, removed + META_SUFFIX],
            user,
            max(30.0, timeout),
        )
        if gone.returncode != 0:
            raise _fail(name, f"removing {removed}", gone, data)
        notes.append(f"removed {removed}, which the switch unpacked")
    state |= {"status": "switched back", "switched_back_at": _iso()}
    _save_state(host, root, state, user)
    data |= {"release": rel, "from": before or None, "to": previous or None, "removed": removed}
    if params.reload:
        reloaded = _run(host, list(params.reload), user, max(1.0, timeout))
        data["reload"] = {"command": shlex.join(params.reload), "returncode": reloaded.returncode}
        if reloaded.returncode != 0:
            raise _fail(name, f"the reload command {shlex.join(params.reload)}", reloaded, data)
        notes.append(f"ran {shlex.join(params.reload)}")
    return ActionResult(" ".join(notes[:2]) + "".join(f"; {n}" for n in notes[2:]), data)


def switch_back_describe(targets: Targets, role: str, params: SwitchBackParams) -> list[str]:
    name, _ = targets.node(role)
    root = expand(targets, role, params.root).rstrip("/")
    lines = [
        f"on {name}: read the previous target from {root}/{STATE_FILE}; "
        f"ln -sfn <previous> {root}/.current.drctl-<pid> && mv -T it over {root}/{CURRENT} "
        "(or remove current, if there was none)"
    ]
    if params.remove_release:
        lines.append(f"on {name}: remove the release the switch unpacked")
    return lines


def change_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            "files.backup",
            FilesBackupParams,
            files_backup_run,
            files_backup_describe,
            True,
            "Copy files aside on their host, sha256 of originals and copies compared.",
        ),
        ActionSpec(
            "release.switch",
            SwitchParams,
            switch_run,
            switch_describe,
            True,
            "Copy and unpack a release, then switch the current symlink to it (ln -sfn, mv -T).",
        ),
        ActionSpec(
            "release.switch_back",
            SwitchBackParams,
            switch_back_run,
            switch_back_describe,
            True,
            "Switch the current symlink back to the release it pointed at before the switch.",
        ),
    ]
