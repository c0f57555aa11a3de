"""What a failover lost, counted from the old primary's WAL before it is rewound:
``pg.count_lost_transactions``.

The canary writer samples the writes; the WAL holds them all. Every transaction the old primary
committed past the point where the new primary's timeline forked from its own is lost, and its
COMMIT record is still in the old primary's ``pg_wal`` until ``pg_rewind`` (or a rebuild)
discards it. So, with the old primary fenced and before it rejoins:

1. the switch point: the new primary's timeline (the name of its current WAL file) and its
   history file ``pg_wal/<TLI>.history`` (read on its host, or with ``pg_read_file``): the line
   of the old primary's timeline says where the new one forked;
2. the old primary's WAL past that point, read with ``pg_waldump`` on its host as the owner of
   its files (``--path <data_dir>/pg_wal --start <switch> --timeline <old>``, page by page): each
   COMMIT record is a lost transaction (its xid, its commit time, its LSN), and the relations
   the records of that xid (and of its subtransactions) touched are resolved to table names in
   the new primary's catalogue (``pg_filenode_relation``; an index or TOAST relation is named by
   its table);
3. the RPO: from the last COMMIT before the switch point (the last transaction that survived)
   to the last COMMIT of the old primary, both read from the WAL;
4. the WAL segments from the switch point to the end of the old primary's WAL, copied through
   its host executor (base64, in pieces) into ``$DRCTL_HOME/evidence/<run_id>/wal/`` with their
   sha256, up to a size cap, so a DBA can read the lost data back with pg_waldump.

The step's data carries ``measurements.lost_transactions`` (``exact``), which the runner merges
into the run's measurements. When the old primary's WAL cannot be read (its host is lost, its
segments are gone, the timelines do not meet), the result says so and why, and the run gives the
canary's figures as a lower bound (``lower_bound``).

The parsing and the accounting are pure functions (``parse_waldump``, ``parse_history``,
``account``), tested on pg_waldump's own output.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from drills.engine.catalogue import ActionResult, ActionSpec, Params
from drills.engine.targets import Targets
from drills.executors.host import STREAM_LIMIT, HostExecutor
from drills.home import drctl_home
from drills.model.errors import DrillError, ExecutorError
from drills.model.record import (
    MAX_LISTED_TRANSACTIONS,
    LostTransaction,
    LostTransactions,
    WalSegmentCopy,
)

ENGINE = "postgres"
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
PAGE_RECORDS = 2000  # records per pg_waldump call; fewer if a page would not fit the output
CHUNK = 512 * 1024  # bytes of a WAL segment per copying command (its base64 fits the output)
PAGE_HEADER = 64  # bytes: a segment's first record starts after its long page header (40)
LOOK_BACK_SEGMENTS = 4  # segments before the switch point searched for the last surviving commit

_LSN = r"[0-9A-Fa-f]+/[0-9A-Fa-f]+"
_RECORD = re.compile(
    rf"^rmgr: (?P<rmgr>\S+)\s+len \(rec/tot\):\s*\d+/\s*\d+, tx:\s*(?P<xid>\d+), "
    rf"lsn: (?P<lsn>{_LSN}), prev (?:{_LSN}), desc: (?P<desc>.*)$"
)
_COMMIT = re.compile(
    r"^COMMIT(?:_PREPARED (?P<prepared>\d+):)? (?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)"
    r"(?: (?P<zone>[A-Za-z+\-0-9]+))?"
)
_SUBXACTS = re.compile(r"subxacts:((?: \d+)+)")
_REL = re.compile(r"\brel (\d+)/(\d+)/(\d+)")
_LSN_IN_TEXT = re.compile(rf"\b({_LSN})\b")
_MISSING_FILE = re.compile(r'could not (?:find|open) file "(?:[^"]*/)?([0-9A-F]{24})"')
_HISTORY = re.compile(rf"^\s*(\d+)\s+({_LSN})\s*(.*)$")


# -- LSNs, timelines, segments ------------------------------------------------------------------


def lsn_int(lsn: str) -> int:
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:08X}"


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    per_id = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def segment_of(name: str, segment_size: int) -> tuple[int, int] | None:
    """(timeline, segment number) of a WAL segment file name, or None."""
    if not re.fullmatch(r"[0-9A-F]{24}", name):
        return None
    per_id = 0x100000000 // segment_size
    return int(name[:8], 16), int(name[8:16], 16) * per_id + int(name[16:], 16)


def parse_history(text: str) -> list[tuple[int, int, str]]:
    """A timeline history file: (parent timeline, switch point, reason) per line."""
    found = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        match = _HISTORY.match(line)
        if match:
            found.append((int(match.group(1)), lsn_int(match.group(2)), match.group(3).strip()))
    return found


# -- pg_waldump's output ------------------------------------------------------------------------


@dataclass(frozen=True)
class WalRecord:
    rmgr: str
    xid: int
    lsn: int
    desc: str


@dataclass(frozen=True)
class Commit:
    xid: int
    lsn: int
    at: datetime | None
    subxacts: tuple[int, ...] = ()


def parse_waldump(text: str) -> list[WalRecord]:
    """The records of pg_waldump's output (other lines, its messages, are skipped)."""
    found = []
    for line in text.splitlines():
        match = _RECORD.match(line)
        if match:
            found.append(
                WalRecord(
                    match.group("rmgr"),
                    int(match.group("xid")),
                    lsn_int(match.group("lsn")),
                    match.group("desc"),
                )
            )
    return found


def commit_of(record: WalRecord) -> Commit | None:
    """The commit a Transaction record stands for (COMMIT or COMMIT_PREPARED), or None."""
    if record.rmgr != "Transaction":
        return None
    match = _COMMIT.match(record.desc)
    if match is None:
        return None
    at: datetime | None = None
    try:
        at = datetime.strptime(match.group("at"), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError:
        try:
            at = datetime.strptime(match.group("at"), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            at = None
    if match.group("zone") not in (None, "UTC", "GMT", "+00", "Z"):
        at = None  # pg_waldump runs with TZ=UTC; a time in any other zone is not trusted
    xid = int(match.group("prepared")) if match.group("prepared") else record.xid
    subs = _SUBXACTS.search(record.desc)
    subxacts = tuple(int(x) for x in subs.group(1).split()) if subs else ()
    return Commit(xid, record.lsn, at, subxacts)


def relations_of(record: WalRecord) -> set[tuple[int, int, int]]:
    """(tablespace, database, relfilenode) of every block the record references."""
    return {(int(a), int(b), int(c)) for a, b, c in _REL.findall(record.desc)}


def end_of_wal(messages: str) -> int | None:
    """Where pg_waldump found the end of the valid WAL: the furthest LSN its closing error names
    ("error in WAL record at A: invalid record length at B: ..."), or None."""
    errors = [line for line in messages.splitlines() if "error" in line]
    found = [lsn_int(m) for m in _LSN_IN_TEXT.findall(errors[-1])] if errors else []
    return max(found) if found else None


def missing_segment(messages: str) -> str | None:
    """The WAL segment file pg_waldump could not find, if that is why it stopped."""
    match = _MISSING_FILE.search(messages)
    return match.group(1) if match else None


@dataclass
class Accounting:
    """The lost commits past the switch point and the relations their xids touched."""

    commits: list[Commit] = field(default_factory=list)
    relations: dict[int, set[tuple[int, int, int]]] = field(default_factory=dict)
    last_lsn: int | None = None


def account(
    records: Iterable[WalRecord], switch: int, into: Accounting | None = None
) -> Accounting:
    """Every COMMIT at or past ``switch`` (the new primary never replayed it), and the
    relations touched by the records of each xid at or past ``switch``."""
    found = into or Accounting()
    for record in records:
        if record.lsn < switch:
            continue
        found.last_lsn = record.lsn if found.last_lsn is None else max(found.last_lsn, record.lsn)
        commit = commit_of(record)
        if commit is not None:
            found.commits.append(commit)
        elif record.xid:
            rels = relations_of(record)
            if rels:
                found.relations.setdefault(record.xid, set()).update(rels)
    return found


def last_commit_before(records: Iterable[WalRecord], switch: int) -> Commit | None:
    last = None
    for record in records:
        if record.lsn >= switch:
            continue
        commit = commit_of(record)
        if commit is not None and commit.at is not None and (last is None or commit.lsn > last.lsn):
            last = commit
    return last


# -- reading the old primary's WAL --------------------------------------------------------------


class WalUnreadable(Exception):
    """The old primary's WAL could not be read; ``reason`` says why, as a clause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class OldPrimary:
    """How to reach the old primary's WAL on its host."""

    name: str
    host: HostExecutor
    user: str | None
    data_dir: str
    bin_dir: str

    @property
    def pg_wal(self) -> str:
        return f"{self.data_dir.rstrip('/')}/pg_wal"

    def waldump(
        self, args: list[str], *, timeout: float, tail: int | None = None
    ) -> tuple[str, str]:
        """pg_waldump's (records, messages); with ``tail`` only its last lines, together."""
        argv = [f"{self.bin_dir}/pg_waldump", "--path", self.pg_wal, *args]
        if tail is not None:
            argv = ["sh", "-c", f'"$@" 2>&1 | tail -n {int(tail)}', "sh", *argv]
        try:
            result = self.host.run(
                argv, user=self.user, timeout=timeout, check=False, env={"TZ": "UTC"}
            )
        except ExecutorError as exc:
            raise WalUnreadable(f"pg_waldump could not run on its host: {exc.message}") from exc
        if result.returncode in (126, 127) or "not found" in result.stderr[:300].lower():
            raise WalUnreadable(
                f"pg_waldump could not run on its host ({self.bin_dir}/pg_waldump): "
                f"{result.output[-200:]}"
            )
        return result.stdout, result.stderr

    def segments(self, timeline: int, segment_size: int) -> dict[int, tuple[str, int]]:
        """The WAL segment files of ``timeline`` in pg_wal: segment number -> (name, size)."""
        try:
            listing = self.host.run(["ls", "-ln", self.pg_wal], user=self.user, timeout=30).stdout
        except ExecutorError as exc:
            raise WalUnreadable(f"its pg_wal could not be listed: {exc.message}") from exc
        found = {}
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) < 9 or not fields[4].isdigit():
                continue
            seg = segment_of(fields[-1], segment_size)
            if seg is not None and seg[0] == timeline:
                found[seg[1]] = (fields[-1], int(fields[4]))
        return found

    def timelines(self, segment_size: int) -> set[int]:
        try:
            listing = self.host.run(["ls", "-1", self.pg_wal], user=self.user, timeout=30).stdout
        except ExecutorError as exc:
            raise WalUnreadable(f"its pg_wal could not be listed: {exc.message}") from exc
        return {seg[0] for name in listing.split() if (seg := segment_of(name, segment_size))}


def read_lost(
    old: OldPrimary,
    timeline: int,
    switch: int,
    segments: dict[int, tuple[str, int]],
    segment_size: int,
    deadline: float,
) -> tuple[Accounting, int]:
    """Every record of ``timeline`` from ``switch`` on, page by page: (accounting, end of WAL).

    The WAL ends where pg_waldump finds no valid record, or at the last segment file there is;
    a segment missing before another that is there is a gap, and the count would not be whole.
    """
    into = Accounting()
    start, page = switch, PAGE_RECORDS
    while True:
        args = ["--start", lsn_text(start), "--timeline", str(timeline), "--limit", str(page)]
        out, messages = old.waldump(args, timeout=max(5.0, deadline - time.monotonic()))
        if len(out) >= STREAM_LIMIT - 1:  # kept only in part: read it in smaller pages
            if page <= 10:
                raise WalUnreadable(f"pg_waldump's output from {lsn_text(start)} is too long")
            page //= 4
            continue
        records = parse_waldump(out)
        missing = missing_segment(messages)
        if missing is not None:
            seg = segment_of(missing, segment_size)
            later = seg is not None and any(n > seg[1] for n in segments)
            if later:
                raise WalUnreadable(
                    f"its WAL past the switch point {lsn_text(switch)} is not all there "
                    f"(segment {missing} is missing)"
                )
        elif (
            not records
            and "could not find a valid record after" not in messages
            and end_of_wal(messages) is None
            and messages.strip()
        ):
            raise WalUnreadable(
                f"pg_waldump could not read its WAL from {lsn_text(start)}: "
                f"{messages.strip()[-200:]}"
            )
        account(records, switch, into)
        if len(records) < page or missing is not None:
            end = end_of_wal(messages)
            return into, max(end or 0, into.last_lsn or switch)
        start = records[-1].lsn + 1
        if time.monotonic() > deadline:
            raise WalUnreadable("reading its WAL took longer than the step's timeout")


def read_last_surviving(
    old: OldPrimary, timeline: int, switch: int, segment_size: int, deadline: float
) -> Commit | None:
    """The last COMMIT before the switch point, searched back a few segments."""
    segno = switch // segment_size
    for back in range(LOOK_BACK_SEGMENTS + 1):
        start = (segno - back) * segment_size
        if start < 0:
            break
        if start >= switch:
            continue
        args = [
            *("--start", lsn_text(start), "--end", lsn_text(switch)),
            *("--timeline", str(timeline), "--rmgr", "Transaction"),
        ]
        out, _ = old.waldump(args, timeout=max(5.0, deadline - time.monotonic()), tail=60)
        found = last_commit_before(parse_waldump(out), switch)
        if found is not None:
            return found
    return None


# -- the catalogue, the evidence ----------------------------------------------------------------

RESOLVE_SQL = """
select f.spc::bigint, f.rfn::bigint, n.nspname || '.' || t.relname
from unnest(%s::oid[], %s::oid[]) as f(spc, rfn)
left join lateral (select pg_filenode_relation(f.spc, f.rfn) as rel) r on true
left join pg_index ix on ix.indexrelid = r.rel
left join pg_class own on own.reltoastrelid = coalesce(ix.indrelid, r.rel)
left join pg_class t on t.oid = coalesce(own.oid, ix.indrelid, r.rel)
left join pg_namespace n on n.oid = t.relnamespace
"""


def resolve_tables(
    targets: Targets, source: str, relations: set[tuple[int, int, int]]
) -> dict[tuple[int, int, int], str]:
    """Table names for (tablespace, database, relfilenode), in the new primary's catalogue."""
    if not relations:
        return {}
    sql = targets.sql(source)
    rows = sql.query("select oid::bigint, datname from pg_database", timeout=10)
    databases = {int(oid): str(name) for oid, name in rows}
    current = int(
        sql.scalar("select oid::bigint from pg_database where datname = current_database()")
    )
    here = sorted({(spc, rfn) for spc, db, rfn in relations if db in (current, 0)})
    named: dict[tuple[int, int], str] = {}
    if here:
        found = sql.query(RESOLVE_SQL, ([s for s, _ in here], [r for _, r in here]), timeout=30)
        named = {(int(s), int(r)): str(t) for s, r, t in found if t is not None}
    result = {}
    for spc, db, rfn in relations:
        if db in (current, 0) and (spc, rfn) in named:
            result[(spc, db, rfn)] = named[(spc, rfn)]
        elif db in (current, 0):
            result[(spc, db, rfn)] = (
                f"relfilenode {spc}/{db}/{rfn} (not in the new primary's catalogue)"
            )
        else:
            result[(spc, db, rfn)] = f"database {databases.get(db, db)}: relfilenode {rfn}"
    return result


def copy_segment(old: OldPrimary, name: str, size: int, into: Path) -> WalSegmentCopy:
    """One WAL segment, copied from the old primary's host through its executor."""
    path = f"{old.pg_wal}/{name}"
    digest = hashlib.sha256()
    target = into / name
    offset = 0
    try:
        with target.open("wb") as out:
            while offset < size:
                script = (
                    f'dd if="$1" bs={CHUNK} skip={offset // CHUNK} count=1 2>/dev/null | base64'
                )
                text = old.host.run(
                    ["sh", "-c", script, "sh", path], user=old.user, timeout=60
                ).stdout
                chunk = base64.b64decode(text)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                offset += len(chunk)
        if offset != size:
            raise WalUnreadable(f"{name} could not be copied whole ({offset} of {size} bytes)")
        sha256 = digest.hexdigest()
        remote = old.host.run(["sha256sum", path], user=old.user, timeout=60, check=False)
        if remote.returncode == 0 and remote.stdout.split()[:1] != [sha256]:
            raise WalUnreadable(f"the copy of {name} does not match its sha256 on the host")
    except BaseException:
        target.unlink(missing_ok=True)  # no half copy is left to be taken for evidence
        raise
    return WalSegmentCopy(name=name, path=str(target), size=size, sha256=sha256)


# -- pg.count_lost_transactions -----------------------------------------------------------------


class LostParams(Params):
    source: str = Field(
        description="Role of the new primary: its timeline history gives the switch point, its "
        "catalogue the table names."
    )
    max_evidence_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Bytes of WAL segments copied into the evidence at most (0: none).",
    )


def _iso(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if at is not None else None


def _new_timeline(targets: Targets, source: str) -> int:
    try:
        name = targets.sql(source).scalar(
            "select pg_walfile_name(pg_current_wal_lsn())", timeout=10
        )
    except DrillError as exc:
        raise WalUnreadable(f"the new primary's timeline could not be read: {exc.message}") from exc
    return int(str(name)[:8], 16)


def _history(targets: Targets, source: str, timeline: int) -> list[tuple[int, int, str]]:
    file = f"{timeline:08X}.history"
    _, _, pg = targets.postgres(source)
    text: str | None = None
    try:
        text = targets.read_file(source, f"{pg.data_dir.rstrip('/')}/pg_wal/{file}")
    except DrillError:
        text = None
    if text is None:
        try:
            text = targets.sql(source).scalar("select pg_read_file('pg_wal/' || %s)", (file,))
        except DrillError as exc:
            raise WalUnreadable(
                f"the new primary's timeline history {file} could not be read: {exc.message}"
            ) from exc
    return parse_history(str(text or ""))


def _segment_size(targets: Targets, source: str) -> int:
    try:
        value = targets.sql(source).scalar(
            "select setting::bigint from pg_settings where name = 'wal_segment_size'", timeout=10
        )
        return int(value) if value else DEFAULT_SEGMENT_SIZE
    except DrillError:
        return DEFAULT_SEGMENT_SIZE


def _evidence_dir(targets: Targets) -> Path:
    run = targets.run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-unnamed")
    path = drctl_home() / "evidence" / run / "wal"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Counted:
    lost: LostTransactions
    sentence: str


def count_lost(targets: Targets, role: str, params: LostParams, timeout: float) -> Counted:
    """The exact accounting; raises WalUnreadable when it cannot be done."""
    deadline = time.monotonic() + timeout
    name, _, pg = targets.postgres(role)
    new_name, _ = targets.node(params.source)
    old = OldPrimary(name, targets.host(role), targets.os_user(role), pg.data_dir, pg.bin_dir)
    try:
        old.host.connect()
    except ExecutorError as exc:
        raise WalUnreadable(f"its host cannot be reached ({exc.message})") from exc
    new_tl = _new_timeline(targets, params.source)
    segment_size = _segment_size(targets, params.source)
    history = _history(targets, params.source, new_tl)
    present = old.timelines(segment_size)
    if not present:
        raise WalUnreadable(f"no WAL segment is left in {old.pg_wal}")
    old_tl = max(present)
    if old_tl >= new_tl:
        raise WalUnreadable(
            f"its WAL is already on timeline {old_tl}, not behind the new primary's {new_tl} "
            "(it was rewound or rebuilt before the count)"
        )
    forks = {parent: switch for parent, switch, _ in history}
    if old_tl not in forks:
        raise WalUnreadable(
            f"the new primary's timeline history ({new_tl:08X}.history) does not contain the "
            f"old primary's timeline {old_tl}"
        )
    switch = forks[old_tl]
    files = old.segments(old_tl, segment_size)
    if switch // segment_size not in files and switch % segment_size > PAGE_HEADER:
        raise WalUnreadable(
            f"segment {segment_name(old_tl, switch // segment_size, segment_size)}, which holds "
            f"the switch point {lsn_text(switch)}, is gone from {old.pg_wal}"
        )
    found, end = read_lost(old, old_tl, switch, files, segment_size, deadline)
    surviving = read_last_surviving(old, old_tl, switch, segment_size, deadline)
    note: list[str] = []
    surviving_at = surviving.at if surviving is not None else None
    if surviving_at is None and found.commits:
        replayed = targets.sql(params.source).scalar(
            "select pg_last_xact_replay_timestamp()", timeout=10
        )
        if isinstance(replayed, datetime):
            surviving_at = replayed.astimezone(UTC)
            note.append(
                "the last surviving commit was not found in the old primary's WAL before the "
                "switch point: its time is the new primary's last replayed commit"
            )
    # Each lost xid's tables: its own records and its subtransactions'.
    owner = {}
    for commit in found.commits:
        owner[commit.xid] = commit.xid
        for sub in commit.subxacts:
            owner[sub] = commit.xid
    touched: dict[int, set[tuple[int, int, int]]] = {}
    for xid, rels in found.relations.items():
        if xid in owner:
            touched.setdefault(owner[xid], set()).update(rels)
    every: set[tuple[int, int, int]] = set()
    for rels in touched.values():
        every |= rels
    try:
        names = resolve_tables(targets, params.source, every)
    except DrillError as exc:
        names = {r: f"relfilenode {r[0]}/{r[1]}/{r[2]}" for r in every}
        note.append(f"the tables could not be named in the new primary's catalogue: {exc}")
    transactions: list[LostTransaction] = []
    per_table: dict[str, int] = {}
    for commit in found.commits:
        tables = sorted({names[r] for r in touched.get(commit.xid, set())})
        for table in tables:
            per_table[table] = per_table.get(table, 0) + 1
        if len(transactions) < MAX_LISTED_TRANSACTIONS:
            transactions.append(
                LostTransaction(
                    xid=commit.xid,
                    committed_at=_iso(commit.at),
                    lsn=lsn_text(commit.lsn),
                    tables=tables,
                )
            )
    last_lost = max((c.at for c in found.commits if c.at is not None), default=None)
    rpo: float | None = 0.0
    if found.commits:
        rpo = (
            round((last_lost - surviving_at).total_seconds(), 3)
            if last_lost is not None and surviving_at is not None
            else None
        )
        if rpo is None:
            note.append("the RPO could not be read from the WAL (a commit time is missing)")
    if len(found.commits) > MAX_LISTED_TRANSACTIONS:
        note.append(f"the first {MAX_LISTED_TRANSACTIONS} lost transactions are listed")
    end_lsn = end
    segments = _keep_segments(targets, old, files, switch, end_lsn, segment_size, params, note)
    lost = LostTransactions(
        loss_accounting="exact",
        count=len(found.commits),
        transactions=transactions,
        tables=dict(sorted(per_table.items())),
        node=name,
        timeline=old_tl,
        new_timeline=new_tl,
        switch_lsn=lsn_text(switch),
        end_lsn=lsn_text(end_lsn),
        last_surviving_commit_at=_iso(surviving_at),
        last_lost_commit_at=_iso(last_lost),
        rpo_seconds=rpo,
        wal_segments=segments,
        note="; ".join(note),
    )
    if found.commits:
        sentence = (
            f"{name} lost {len(found.commits)} transaction(s) past the switch point "
            f"{lsn_text(switch)} (timeline {old_tl} → {new_tl} on {new_name}), read from its WAL; "
            f"RPO {rpo if rpo is not None else '?'}s"
        )
    else:
        sentence = (
            f"{name} lost no transaction: its WAL has no commit past the switch point "
            f"{lsn_text(switch)} (timeline {old_tl} → {new_tl} on {new_name})"
        )
    return Counted(lost, sentence)


def _keep_segments(
    targets: Targets,
    old: OldPrimary,
    files: dict[int, tuple[str, int]],
    switch: int,
    end: int,
    segment_size: int,
    params: LostParams,
    note: list[str],
) -> list[WalSegmentCopy]:
    """Copy the segments from the switch point to the end of the WAL into the evidence."""
    wanted = [
        files[n] for n in range(switch // segment_size, end // segment_size + 1) if n in files
    ]
    if not wanted:
        return []
    copied: list[WalSegmentCopy] = []
    budget = params.max_evidence_bytes
    into = _evidence_dir(targets)
    for name, size in wanted:
        if size > budget:
            left = [n for n, _ in wanted[len(copied) :]]
            note.append(
                f"WAL segments {', '.join(left)} were not copied into the evidence (the cap is "
                f"{params.max_evidence_bytes} bytes): keep them from {old.pg_wal} before the "
                "old primary is rewound"
            )
            break
        try:
            copied.append(copy_segment(old, name, size, into))
        except (DrillError, WalUnreadable, ValueError) as exc:
            note.append(f"WAL segment {name} could not be copied into the evidence: {exc}")
            break
        budget -= size
    return copied


def count_run(targets: Targets, role: str, params: LostParams, timeout: float) -> ActionResult:
    name, _, _ = targets.postgres(role)
    try:
        counted = count_lost(targets, role, params, timeout)
    except (WalUnreadable, DrillError) as exc:
        reason = exc.reason if isinstance(exc, WalUnreadable) else str(exc)
        lost = LostTransactions(
            loss_accounting="lower_bound",
            count=None,
            node=name,
            note=f"the WAL of {name} could not be read: {reason}",
        )
        counted = Counted(
            lost,
            f"the WAL of {name} could not be read ({reason}): the loss is given as the "
            "canary's lower bound",
        )
    data: dict[str, Any] = {
        "measurements": {"lost_transactions": counted.lost.model_dump()},
        "wal_segments": [s.model_dump() for s in counted.lost.wal_segments],
        "loss_accounting": counted.lost.loss_accounting,
    }
    return ActionResult(counted.sentence, data)


def count_describe(targets: Targets, role: str, params: LostParams) -> list[str]:
    name, _, pg = targets.postgres(role)
    new_name, _ = targets.node(params.source)
    wal = f"{pg.data_dir.rstrip('/')}/pg_wal"
    return [
        f"SQL on {new_name}: select pg_walfile_name(pg_current_wal_lsn()); read its "
        "pg_wal/<timeline>.history (the switch point)",
        targets.describe(
            role,
            [
                f"{pg.bin_dir}/pg_waldump",
                "--path",
                wal,
                "--start",
                "<switch point>",
                "--timeline",
                "<old timeline>",
            ],
        ),
        f"SQL on {new_name}: pg_filenode_relation() for each relation the lost transactions "
        "touched",
        f"copy the WAL segments past the switch point from {name} into "
        "$DRCTL_HOME/evidence/<run>/wal/ (at most "
        f"{params.max_evidence_bytes} bytes)",
    ]


def walloss_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            "pg.count_lost_transactions",
            LostParams,
            count_run,
            count_describe,
            False,
            "Count every transaction the old primary committed past the switch point, from its "
            "WAL (pg_waldump) before it is rewound, and keep those WAL segments as evidence.",
            ENGINE,
        )
    ]
