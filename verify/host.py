"""Host checks (``host.*``) of the inspection: the operating system under every server.

Each check observes one item on the host of the role's node, through that node's host executor
(``probe.host(role)``: local, or SSH), with commands any Linux host has (``/proc``, ``nproc``,
``df``, ``date``, ``awk``, ``grep``), so the same item is asked of a database server, an
application server or a client alike, and none reads the orchestrator's own files on a node's
behalf. They only read. Thresholds are parameters (the defaults below, overridden by a playbook's
``with:``); what was observed is kept as plain values, with the thresholds it was judged against
under ``limits``, so a report can state both.

    host.cpu_load        the load average per CPU (/proc/loadavg, nproc)
    host.memory          memory and swap in use (/proc/meminfo)
    host.filesystems     space and inodes of every real file system, or of listed paths
                         (df -P -B1, df -P -i)
    host.clock_offset    the clock's offset: chrony or ntpd where one runs, else the skew against
                         the orchestrator's clock, bracketed by the round trip
    host.failed_units    failed systemd units (a host without systemd is a note, not a finding)
    host.last_reboot     when the host booted (/proc/uptime, or uptime -s); a reboot since the
                         previous inspection is a finding
    host.log_errors      lines matching patterns in named log files since the last inspection

"Since the last inspection": a ``since`` parameter (an ISO time with its zone, or a duration
such as ``3d`` meaning that long ago), else the end of the previous inspection of the environment
(the engine finds it in the record store and passes it in: ``drills.engine.core``), else
``lookback`` ago.
"""

from __future__ import annotations

import math
import re
import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drills.model.durations import Duration, format_seconds, parse_duration
from drills.model.errors import ExecutorError, InputError
from verify.result import Observation, Probe

MIB = 1024 * 1024
SAMPLES = 5  # matching log lines kept per file
SAMPLE_CHARS = 200


class HostParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _node(probe: Probe, role: str) -> str:
    return probe.node(role)[0]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _size(n: float) -> str:
    if n >= 1024 * MIB:
        return f"{n / 1024 / MIB:.1f} GiB"
    return f"{n / MIB:.1f} MiB"


# -- CPU ---------------------------------------------------------------------------------------


class CpuParams(HostParams):
    max_load_per_cpu: float = Field(
        default=2.0, ge=0, le=1000, description="Highest load average per CPU."
    )
    average: Literal["1m", "5m", "15m"] = Field(
        default="5m", description="Which load average is judged."
    )


CPU_SCRIPT = (
    "cat /proc/loadavg && { nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null"
    " || grep -c ^processor /proc/cpuinfo; }"
)


def parse_cpu(text: str) -> tuple[tuple[float, float, float], int]:
    """(1, 5, 15-minute load averages), number of CPUs, from /proc/loadavg and nproc."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    try:
        loads = (float(lines[0][0]), float(lines[0][1]), float(lines[0][2]))
        cpus = int(lines[1][0])
    except (IndexError, ValueError) as exc:
        raise ExecutorError(f"cannot read the load average: {text[:120]!r}") from exc
    return loads, max(1, cpus)


def cpu_load(probe: Probe, role: str, params: CpuParams) -> Observation:
    """The load average per CPU is below its threshold (/proc/loadavg, nproc)."""
    out = probe.host(role).run(["sh", "-c", CPU_SCRIPT], timeout=15).stdout
    loads, cpus = parse_cpu(out)
    judged = loads[("1m", "5m", "15m").index(params.average)]
    per_cpu = round(judged / cpus, 2)
    observed = {
        "load_1m": loads[0],
        "load_5m": loads[1],
        "load_15m": loads[2],
        "cpus": cpus,
        "load_per_cpu": per_cpu,
        "average": params.average,
        "limits": {"max_load_per_cpu": params.max_load_per_cpu, "average": params.average},
    }
    expected = f"{params.average} load average <= {params.max_load_per_cpu:g} per CPU"
    detail = f"load {loads[0]:g} {loads[1]:g} {loads[2]:g} on {cpus} CPU(s)"
    return Observation(observed, expected, per_cpu <= params.max_load_per_cpu, detail)


# -- memory ------------------------------------------------------------------------------------


class MemoryParams(HostParams):
    max_used_percent: float = Field(
        default=90.0, ge=0, le=100, description="Largest share of memory in use (%)."
    )
    max_swap_used_percent: float = Field(
        default=50.0, ge=0, le=100, description="Largest share of swap in use (%)."
    )


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per field."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            found[name.strip()] = int(words[0]) * (1024 if words[1:2] == ["kB"] else 1)
    return found


def memory(probe: Probe, role: str, params: MemoryParams) -> Observation:
    """Memory and swap in use are below their thresholds (/proc/meminfo)."""
    info = parse_meminfo(probe.host(role).run(["cat", "/proc/meminfo"], timeout=15).stdout)
    total = info.get("MemTotal", 0)
    if not total:
        raise ExecutorError("/proc/meminfo names no MemTotal", host=_node(probe, role))
    available = info.get(
        "MemAvailable",
        info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0),
    )
    swap_total, swap_free = info.get("SwapTotal", 0), info.get("SwapFree", 0)
    used_percent = _pct(total - available, total)
    swap_percent = _pct(swap_total - swap_free, swap_total)
    observed = {
        "total_bytes": total,
        "available_bytes": available,
        "used_percent": used_percent,
        "swap_total_bytes": swap_total,
        "swap_used_bytes": swap_total - swap_free,
        "swap_used_percent": swap_percent,
        "limits": {
            "max_used_percent": params.max_used_percent,
            "max_swap_used_percent": params.max_swap_used_percent,
        },
    }
    held = used_percent <= params.max_used_percent and (
        swap_total == 0 or swap_percent <= params.max_swap_used_percent
    )
    expected = (
        f"<= {params.max_used_percent:g}% of memory and "
        f"<= {params.max_swap_used_percent:g}% of swap in use"
    )
    detail = f"{used_percent:g}% of {_size(total)} in use, {_size(available)} available; " + (
        f"swap {swap_percent:g}% of {_size(swap_total)}" if swap_total else "no swap"
    )
    return Observation(observed, expected, held, detail)


# -- file systems ------------------------------------------------------------------------------

# Types that hold no data of the host's own (memory, kernel views, read-only images): left out
# when every file system is inspected. A path named in ``paths`` is inspected whatever its type.
PSEUDO_TYPES = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
        "devtmpfs", "efivarfs", "fusectl", "fuse.lxcfs", "fuse.portal", "hugetlbfs", "mqueue",
        "nsfs", "proc", "pstore", "ramfs", "rpc_pipefs", "securityfs", "squashfs", "sysfs",
        "tmpfs", "tracefs", "iso9660",
    }
)  # fmt: skip


class FilesystemsParams(HostParams):
    paths: list[str] = Field(
        default_factory=list,
        description="Paths whose file systems are inspected; empty: every real file system "
        "(memory and kernel file systems such as tmpfs, proc, squashfs left out).",
    )
    max_used_percent: float = Field(
        default=85.0, ge=0, le=100, description="Largest share of a file system in use (%)."
    )
    max_inodes_used_percent: float = Field(
        default=85.0, ge=0, le=100, description="Largest share of a file system's inodes in use."
    )
    min_free_mib: int = Field(
        default=0, ge=0, description="Least space left on each file system (MiB)."
    )


@dataclass(frozen=True)
class DfRow:
    device: str
    type: str
    total: int
    used: int
    free: int
    mount: str


def parse_df_table(text: str) -> list[DfRow]:
    """``df -P -T`` output (blocks or inodes): one row per file system, the mount point last
    (it may hold spaces)."""
    rows: list[DfRow] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 7:
            continue
        try:
            total, used, free = int(fields[2]), int(fields[3]), int(fields[4])
        except ValueError:
            continue  # '-' for inodes a file system does not count
        rows.append(DfRow(fields[0], fields[1], total, used, free, " ".join(fields[6:])))
    return rows


def filesystems(probe: Probe, role: str, params: FilesystemsParams) -> Observation:
    """Every real file system (or those of the listed paths) has space and inodes to spare."""
    host = probe.host(role)
    paths = list(params.paths)
    blocks = host.run(["df", "-P", "-T", "-B1", *paths], timeout=30, check=False)
    inodes = host.run(["df", "-P", "-T", "-i", *paths], timeout=30, check=False)
    block_rows = parse_df_table(blocks.stdout)
    inode_rows = {row.mount: row for row in parse_df_table(inodes.stdout)}
    if not block_rows:
        raise ExecutorError(
            f"df answered nothing usable: {blocks.output[:200]!r}", host=_node(probe, role)
        )
    min_free = params.min_free_mib * MIB
    seen: set[str] = set()
    listed: list[dict[str, Any]] = []
    for row in block_rows:
        if row.mount in seen or (not paths and (row.type in PSEUDO_TYPES or row.total == 0)):
            continue
        seen.add(row.mount)
        inode = inode_rows.get(row.mount)
        inodes_used = (
            _pct(inode.used, inode.total) if inode is not None and inode.total > 0 else None
        )
        percent = _pct(row.used, row.used + row.free)
        over = (
            percent > params.max_used_percent
            or row.free < min_free
            or (inodes_used is not None and inodes_used > params.max_inodes_used_percent)
        )
        listed.append(
            {
                "mount": row.mount,
                "device": row.device,
                "type": row.type,
                "size_bytes": row.used + row.free,
                "used_bytes": row.used,
                "free_bytes": row.free,
                "used_percent": percent,
                "inodes_used_percent": inodes_used,
                "over": over,
            }
        )
    missing = []
    if paths and blocks.returncode != 0:
        missing = [line for line in blocks.stderr.splitlines() if line.strip()][:5]
    worst = max(listed, key=lambda f: f["used_percent"])
    inode_values = [
        f["inodes_used_percent"] for f in listed if f["inodes_used_percent"] is not None
    ]
    over_limit = [str(f["mount"]) for f in listed if f["over"]]
    observed = {
        "count": len(listed),
        "filesystems": listed,
        "worst_mount": worst["mount"],
        "worst_used_percent": worst["used_percent"],
        "worst_inodes_used_percent": max(inode_values) if inode_values else None,
        "over": over_limit,
        "problems": missing,
        "limits": {
            "max_used_percent": params.max_used_percent,
            "max_inodes_used_percent": params.max_inodes_used_percent,
            "min_free_bytes": min_free,
        },
    }
    expected = (
        f"every file system <= {params.max_used_percent:g}% used and "
        f"<= {params.max_inodes_used_percent:g}% of inodes used"
        + (f", >= {_size(min_free)} free" if min_free else "")
    )
    detail = (
        f"{len(listed)} file system(s); fullest {worst['mount']} at {worst['used_percent']:g}%"
        + (f"; over the limit: {', '.join(over_limit)}" if over_limit else "")
        + (f"; {'; '.join(missing)}" if missing else "")
    )
    return Observation(observed, expected, not over_limit and not missing, detail)


# -- clock -------------------------------------------------------------------------------------


class ClockParams(HostParams):
    max_offset: Duration = Field(
        default=1.0, description="Largest offset of the host's clock allowed."
    )


NTP_SCRIPT = (
    "if command -v chronyc >/dev/null 2>&1; then echo @chrony; chronyc -n tracking 2>&1;"
    " elif command -v ntpq >/dev/null 2>&1; then echo @ntpq; ntpq -nc 'rv 0 leap,offset' 2>&1;"
    " else echo @none; fi; exit 0"
)
_CHRONY_OFFSET = re.compile(r"System time\s*:\s*([\d.]+) seconds (fast|slow)")
_CHRONY_LEAP = re.compile(r"Leap status\s*:\s*(.+)")
_CHRONY_REF = re.compile(r"Reference ID\s*:\s*(.+)")
_NTPQ_OFFSET = re.compile(r"offset=(-?[\d.]+)")
_NTPQ_LEAP = re.compile(r"leap=(\d+)")


@dataclass(frozen=True)
class NtpState:
    source: str  # chrony, ntp
    offset: float | None  # seconds, the host's clock minus the reference's
    synchronised: bool
    reference: str = ""


def parse_ntp(text: str) -> NtpState | None:
    """What chronyc tracking or ntpq says, or None when neither answers (no daemon)."""
    head, _, body = text.partition("\n")
    if head.strip() == "@chrony":
        offset = _CHRONY_OFFSET.search(body)
        if offset is None:
            return None  # chronyc without chronyd: "506 Cannot talk to daemon"
        leap = _CHRONY_LEAP.search(body)
        ref = _CHRONY_REF.search(body)
        seconds = float(offset.group(1)) * (1 if offset.group(2) == "fast" else -1)
        synced = leap is not None and "not synchronised" not in leap.group(1).lower()
        return NtpState("chrony", seconds, synced, ref.group(1).strip() if ref else "")
    if head.strip() == "@ntpq":
        ntp_offset = _NTPQ_OFFSET.search(body)
        if ntp_offset is None:
            return None
        ntp_leap = _NTPQ_LEAP.search(body)
        synced = ntp_leap is None or ntp_leap.group(1) != "11"
        return NtpState("ntp", float(ntp_offset.group(1)) / 1000.0, synced)
    return None


def parse_epoch(text: str) -> tuple[float, float]:
    """``date +%s.%N``: the time, and its resolution (1 s where %N is not supported)."""
    value = text.strip()
    if re.fullmatch(r"\d+\.\d{9}", value):
        return float(value), 1e-9
    whole = value.split(".")[0]
    if whole.isdigit():
        return float(whole), 1.0
    raise ExecutorError(f"cannot read the host's time: {value[:60]!r}")


def clock_offset(probe: Probe, role: str, params: ClockParams) -> Observation:
    """The host's clock is within ``max_offset``: chrony's or ntpd's offset where one runs, else
    the skew against the orchestrator's clock, bracketed by the round trip."""
    host = probe.host(role)
    ntp = parse_ntp(host.run(["sh", "-c", NTP_SCRIPT], timeout=15).stdout)
    before = time.time()
    answer = host.run(["date", "+%s.%N"], timeout=15).stdout
    after = time.time()
    host_time, resolution = parse_epoch(answer)
    # The host read its clock at some moment between `before` and `after` on ours.
    low, high = host_time - after, host_time + resolution - before
    skew = round(host_time - (before + after) / 2, 6)
    bound = round(max(abs(low), abs(high)), 6)
    observed: dict[str, Any] = {
        "source": ntp.source if ntp else "nodes",
        "skew_seconds": skew,
        "skew_bound_seconds": bound,
        "round_trip_seconds": round(after - before, 6),
        "limits": {"max_offset_seconds": params.max_offset},
    }
    limit = format_seconds(params.max_offset)
    if ntp is not None:
        offset = ntp.offset if ntp.offset is not None else math.inf
        observed |= {
            "offset_seconds": ntp.offset,
            "synchronised": ntp.synchronised,
            "reference": ntp.reference,
        }
        held = ntp.synchronised and abs(offset) <= params.max_offset
        expected = f"synchronised by NTP, offset within {limit}"
        detail = (
            f"{ntp.source}: offset {offset:+.6f}s"
            + ("" if ntp.synchronised else ", not synchronised")
            + f"; {skew:+.3f}s from the orchestrator's clock"
        )
        return Observation(observed, expected, held, detail)
    observed["offset_seconds"] = skew
    expected = f"within {limit} of the orchestrator's clock"
    detail = (
        f"no NTP daemon answers; {skew:+.6f}s from the orchestrator's clock "
        f"(at most {bound:.6f}s, round trip {after - before:.3f}s)"
    )
    return Observation(observed, expected, bound <= params.max_offset, detail)


# -- systemd -----------------------------------------------------------------------------------


class FailedUnitsParams(HostParams):
    ignore: list[str] = Field(
        default_factory=list, description="Units whose failure is known and accepted."
    )


UNITS_SCRIPT = (
    "if [ -d /run/systemd/system ]; then echo @systemd;"
    " systemctl --failed --no-legend --plain --no-pager 2>&1; else echo @none; fi; exit 0"
)


def parse_failed_units(text: str) -> list[str] | None:
    """The failed units systemctl lists, or None when systemd does not run on the host."""
    head, _, body = text.partition("\n")
    if head.strip() != "@systemd":
        return None
    units = []
    for line in body.splitlines():
        words = line.replace("●", " ").split()
        if words and "." in words[0]:
            units.append(words[0])
    return units


def failed_units(probe: Probe, role: str, params: FailedUnitsParams) -> Observation:
    """No systemd unit has failed (a host where systemd does not run: a note, not a finding)."""
    units = parse_failed_units(probe.host(role).run(["sh", "-c", UNITS_SCRIPT], timeout=20).stdout)
    expected = "no failed systemd unit"
    if units is None:
        observed = {"systemd": False, "count": 0, "failed": [], "note": "systemd not running"}
        return Observation(observed, expected, True, "systemd not running: no units to check")
    failed = [u for u in units if u not in params.ignore]
    observed = {
        "systemd": True,
        "count": len(failed),
        "failed": failed,
        "ignored": [u for u in units if u in params.ignore],
        "limits": {"ignore": list(params.ignore)},
    }
    detail = f"failed: {', '.join(failed)}" if failed else "no failed unit"
    return Observation(observed, expected, not failed, detail)


# -- since when --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Since:
    """From when an item looks: an epoch, and where that moment came from."""

    epoch: float
    source: str  # "since parameter", "previous inspection <id>", "lookback 7d"
    record: str | None = None  # the previous inspection's record id

    @property
    def iso(self) -> str:
        return _iso(self.epoch)


def parse_since(text: str, now: float) -> float:
    """An ISO 8601 time with its zone, or a duration ago (``3d``): as an epoch."""
    value = text.strip()
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"since {text!r} is neither a time (2026-01-02T08:00:00+08:00) nor a duration (3d)"
        ) from None
    if moment.tzinfo is None:
        raise InputError(f"since {text!r} needs its time zone (e.g. +08:00 or Z)")
    return moment.timestamp()


def resolve_since(
    given: str | None, previous: Since | None, lookback: float, now: float | None = None
) -> Since:
    now = time.time() if now is None else now
    if given:
        return Since(parse_since(given, now), "since parameter")
    if previous is not None:
        return previous
    return Since(now - lookback, f"lookback {format_seconds(lookback)}")


# -- reboots -----------------------------------------------------------------------------------


class RebootParams(HostParams):
    since: str | None = Field(
        default=None,
        description="A reboot after this is a finding: an ISO time with its zone, or a duration "
        "ago (3d); default: the end of the previous inspection (none: not judged by it).",
    )
    min_uptime: Duration | None = Field(
        default=None, description="Shortest uptime that is not a finding (default: any)."
    )


BOOT_SCRIPT = "date +%s; cat /proc/uptime 2>/dev/null || { echo; uptime -s; }"


def boot_time(probe: Probe, role: str) -> tuple[float, float]:
    """(when the host booted, the host's time now), both as epochs on the host's clock."""
    out = probe.host(role).run(["sh", "-c", BOOT_SCRIPT], timeout=15).stdout.splitlines()
    try:
        now = float(out[0])
        if len(out) > 1 and out[1].split():
            return now - float(out[1].split()[0]), now
        started = datetime.fromisoformat(out[2].strip()).astimezone(UTC)
        return started.timestamp(), now
    except (IndexError, ValueError) as exc:
        raise ExecutorError(
            f"cannot tell when the host booted: {' '.join(out)[:120]!r}", host=_node(probe, role)
        ) from exc


def last_reboot(
    probe: Probe, role: str, params: RebootParams, previous: Since | None = None
) -> Observation:
    """When the host last booted: no reboot since the previous inspection (and up at least
    ``min_uptime``)."""
    booted, now = boot_time(probe, role)
    since = Since(parse_since(params.since, now), "since parameter") if params.since else previous
    uptime = round(now - booted, 1)
    rebooted = since is not None and booted > since.epoch
    short = params.min_uptime is not None and uptime < params.min_uptime
    observed: dict[str, Any] = {
        "booted_at": _iso(booted),
        "uptime_seconds": uptime,
        "since": since.iso if since else None,
        "since_source": since.source if since else None,
        "rebooted_since": rebooted,
        "limits": {"min_uptime_seconds": params.min_uptime},
    }
    expected = (
        f"no reboot since {since.iso}" if since else "the time of the last boot (not judged)"
    ) + (f", up at least {format_seconds(params.min_uptime)}" if params.min_uptime else "")
    detail = f"booted {_iso(booted)}, up {format_seconds(uptime)}" + (
        f"; rebooted since {since.iso} ({since.source})" if rebooted and since else ""
    )
    return Observation(observed, expected, not rebooted and not short, detail)


# -- log files ---------------------------------------------------------------------------------

DEFAULT_LOOKBACK = 7 * 86400.0

# Counts the lines matching the patterns in each file since a moment, on the host. Arguments:
# since (epoch), since (the same moment as the file's own timestamps show it, or '' to format it
# with the host's clock and zone), -i or '', then the files; the patterns come on stdin (grep -E,
# one per line). A file untouched since that moment is not read. A line belongs to the newest
# ISO timestamp ("YYYY-MM-DD HH:MM:SS" or with a T) that starts a line above it; lines before
# the first timestamp, or in a file without any, are all counted (the output says which).
SCAN_SCRIPT = r"""
epoch=$1; since=$2; icase=$3; shift 3
if [ -z "$since" ]; then
  f='+%Y-%m-%d %H:%M:%S'
  since=$(date -d "@$epoch" "$f" 2>/dev/null || date -r "$epoch" "$f")
fi
pf=$(mktemp) || exit 9
sf=$(mktemp) || { rm -f "$pf"; exit 9; }
trap 'rm -f "$pf" "$sf"' EXIT
cat > "$pf"
printf 'S\t%s\n' "$since"
for f in "$@"; do
  if [ ! -e "$f" ]; then printf 'F\t%s\tmissing\n' "$f"; continue; fi
  if [ ! -r "$f" ]; then printf 'F\t%s\tunreadable\n' "$f"; continue; fi
  m=$(stat -c %Y -- "$f" 2>/dev/null || date -r "$f" +%s)
  z=$(stat -c %s -- "$f" 2>/dev/null || wc -c < "$f")
  printf 'F\t%s\tok\t%s\t%s\n' "$f" "$m" "$z"
  if [ "$m" -lt "${epoch%.*}" ]; then printf 'C\t0\t-\n'; continue; fi
  awk -v since="$since" -v sf="$sf" '
    BEGIN { on = 1; seen = 0 }
    {
      s = substr($0, 1, 19)
      if (s ~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][ T][0-9][0-9]:[0-9][0-9]:[0-9][0-9]$/) {
        sub(/T/, " ", s); seen = 1; on = (s >= since)
      }
      if (on) print
    }
    END { printf "%d\n", seen > sf }' "$f" \
  | grep -E $icase -f "$pf" \
  | awk -v n="$SAMPLES" 'NR <= n { print "L\t" substr($0, 1, 400) } END { printf "C\t%d\t", NR }'
  cat "$sf"
done
exit 0
"""

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def scrub(line: str) -> str:
    """A log line as kept in a record: quoted values (which may be patient data) replaced by ?."""
    text = _QUOTED.sub("?", line.strip())
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"


def scan_logs(
    probe: Probe,
    role: str,
    files: list[str],
    patterns: list[str],
    since: Since,
    *,
    since_text: str = "",
    ignore_case: bool = False,
    user: str | None = None,
) -> dict[str, Any]:
    """Lines matching ``patterns`` in ``files`` on the role's host since ``since``: per file
    (its size, when it last changed, the count and a few scrubbed samples) and the total."""
    argv = ["sh", "-c", SCAN_SCRIPT.replace("$SAMPLES", str(SAMPLES)), "sh"]
    # Whole seconds, rounded down (file times and log timestamps are to the second): a line
    # written in the same second as `since` counts.
    argv += [str(math.floor(since.epoch)), since_text, "-i" if ignore_case else "", *files]
    result = probe.host(role).run(
        argv, user=user, timeout=300, input="\n".join(patterns) + "\n", check=False
    )
    if result.returncode != 0:
        raise ExecutorError(
            f"cannot scan {', '.join(files)}: {result.output[-300:]}", host=_node(probe, role)
        )
    shown_since = since.iso
    found: list[dict[str, Any]] = []
    for line in result.stdout.splitlines():
        kind, _, rest = line.partition("\t")
        fields = rest.split("\t")
        if kind == "S":
            shown_since = rest
        elif kind == "F":
            entry: dict[str, Any] = {"path": fields[0], "state": fields[1], "matches": 0}
            if fields[1] == "ok" and len(fields) >= 4:
                entry |= {
                    "modified_at": _iso(float(fields[2])) if fields[2].isdigit() else None,
                    "size_bytes": int(fields[3]) if fields[3].strip().isdigit() else None,
                    "samples": [],
                    "scanned": True,
                }
            found.append(entry)
        elif kind == "L" and found:
            found[-1].setdefault("samples", []).append(scrub(rest))
        elif kind == "C" and found:
            found[-1]["matches"] = int(fields[0]) if fields[0].isdigit() else 0
            stamped = fields[1].strip() if len(fields) > 1 else ""
            found[-1]["scanned"] = stamped != "-"
            found[-1]["timestamps"] = stamped == "1" if stamped != "-" else None
    total = sum(int(f["matches"]) for f in found)
    return {
        "since": since.iso,
        "since_as_logged": shown_since,
        "since_source": since.source,
        "previous_record": since.record,
        "files": found,
        "matches": total,
        "patterns": list(patterns),
    }


def log_observation(scan: dict[str, Any], max_lines: int, what: str) -> Observation:
    missing = [f["path"] for f in scan["files"] if f["state"] != "ok"]
    observed = scan | {
        "missing": missing,
        "limits": {"max_lines": max_lines, "patterns": scan["patterns"]},
    }
    expected = (
        f"<= {max_lines} line(s) matching {' | '.join(scan['patterns'])} since {scan['since']}"
    )
    held = not missing and scan["matches"] <= max_lines
    where = ", ".join(f"{f['path']}: {f['matches']}" for f in scan["files"] if f["state"] == "ok")
    detail = f"{scan['matches']} {what} line(s) since {scan['since']} ({scan['since_source']})"
    detail += f"; {where}" if where else ""
    detail += f"; not found: {', '.join(missing)}" if missing else ""
    return Observation(observed, expected, held, detail)


class LogErrorsParams(HostParams):
    files: list[str] = Field(min_length=1, description="Log files on the host, by path.")
    patterns: list[str] = Field(
        default_factory=lambda: ["ERROR", "FATAL", "PANIC", "CRITICAL"],
        min_length=1,
        description="Extended regular expressions (grep -E); a line matching any counts.",
    )
    ignore_case: bool = False
    max_lines: int = Field(default=0, ge=0, description="Matching lines that are not a finding.")
    since: str | None = Field(
        default=None,
        description="From when: an ISO time with its zone, or a duration ago (3d); default: "
        "the end of the previous inspection, else `lookback` ago.",
    )
    lookback: Duration = Field(
        default=DEFAULT_LOOKBACK, description="How far back when nothing says since when."
    )
    as_user: str | None = Field(default=None, description="Read the files as this user.")


def log_errors(
    probe: Probe, role: str, params: LogErrorsParams, previous: Since | None = None
) -> Observation:
    """No line matching the patterns in the named log files since the last inspection."""
    since = resolve_since(params.since, previous, params.lookback)
    scan = scan_logs(
        probe,
        role,
        list(params.files),
        list(params.patterns),
        since,
        ignore_case=params.ignore_case,
        user=params.as_user,
    )
    return log_observation(scan, params.max_lines, "matching")


def describe_scan(files: list[str], patterns: list[str]) -> str:
    return f"grep -E -c {shlex.join(patterns)} {shlex.join(files)}"
