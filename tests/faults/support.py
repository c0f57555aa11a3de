"""What the fault scenarios share: the lab they run on, an outside writer, drctl as a process
that a scenario signals at a chosen moment of its journal, the scan for what was left
running, and putting the pair back between scenarios."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from drills.lab import link
from drills.model.record import Record
from drills.records.lock import force_unlock
from tests.helpers import REPO, alive
from tests.labs import AnyLab
from tests.test_real_failover import ensure_sshd, restore_pair

DRCTL = str(Path(sys.executable).parent / "drctl")


@dataclass
class Outcome:
    """One scenario on one lab, as the table shows it."""

    scenario: str
    lab: str
    says: str = ""  # what the record says: status and the start of its reason
    lost: int | None = None  # acknowledged writes the outside writer lost
    counted: int | None = None  # what the record counted (None: no figure)
    left: list[str] = field(default_factory=list)  # processes left running
    survived: bool = False
    complete: bool = False  # the record is whole: sealed or read from its journal, a status
    problems: list[str] = field(default_factory=list)  # the must-holds that failed
    available: bool = True
    seconds: float = 0.0


@dataclass
class Context:
    lab: AnyLab
    tmp: Path

    @property
    def home(self) -> Path:
        return self.lab.home

    @property
    def lab_dir(self) -> Path:
        return self.home / ("lab-ssh" if self.lab.over_ssh else "lab")

    def playbook(self, name: str, body: dict[str, Any]) -> Path:
        path = self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(body, allow_unicode=True, sort_keys=False))
        return path

    def shipped(self, name: str, drop_checks: tuple[str, ...] = ()) -> Path:
        """A shipped playbook, some preconditions left out."""
        data = yaml.safe_load((REPO / "playbooks" / f"{name}.yaml").read_text())
        data["preconditions"] = [p for p in data["preconditions"] if p["check"] not in drop_checks]
        return self.playbook(name, data)


# -- the outside writer ---------------------------------------------------------------------------


class Writer:
    """Our own connection, outside drctl: rows each in its own transaction, acknowledged when the
    commit returned, to whichever node takes writes (libpq multi-host, read-write)."""

    TABLE = "public.fault_writes"

    def __init__(self, lab: AnyLab, pause: float = 0.02) -> None:
        self.lab = lab
        self.pause = pause
        self.acked: list[int] = []
        self.base = int(time.time() * 1000) * 1000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        nodes = [n for n in lab.environment.nodes.values() if n.postgres is not None]
        self.dsn = psycopg.conninfo.make_conninfo(
            host=",".join(n.host for n in nodes),
            port=",".join(str(n.port) for n in nodes),
            user="postgres",
            dbname="postgres",
            target_session_attrs="read-write",
            connect_timeout=1,
        )
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                f"create table if not exists {self.TABLE} (id bigint primary key,"
                " at timestamptz not null default clock_timestamp())"
            )

    def write(self, rows: int) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for _ in range(rows):
                key = self.base + len(self.acked)
                conn.execute(f"insert into {self.TABLE} (id) values (%s)", (key,))
                self.acked.append(key)

    def start(self) -> Writer:
        def loop() -> None:
            conn: psycopg.Connection | None = None
            deadline = time.monotonic() + 120  # bounded
            while not self._stop.is_set() and time.monotonic() < deadline:
                key = self.base + len(self.acked) + 10_000_000
                try:
                    if conn is None:
                        conn = psycopg.connect(self.dsn, autocommit=True)
                    conn.execute(f"insert into {self.TABLE} (id) values (%s)", (key,))
                    self.acked.append(key)
                except psycopg.Error:
                    if conn is not None:
                        with contextlib.suppress(psycopg.Error):
                            conn.close()
                    conn = None
                    time.sleep(0.05)
                self._stop.wait(self.pause)
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def lost(self) -> int:
        """Acknowledged rows not on the primary of now."""
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    rows = conn.execute(
                        f"select id from {self.TABLE} where id >= %s", (self.base,)
                    ).fetchall()
                break
            except psycopg.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        have = {int(r[0]) for r in rows}
        return len([k for k in self.acked if k not in have])


def counted(record: Record | None) -> int | None:
    """What the record counted of the writer's table: the WAL's exact count when it has one,
    else its lost writes (a lower bound, or the canary's figure)."""
    if record is None:
        return None
    lost = record.measurements.lost_transactions
    if lost is not None and lost.loss_accounting == "exact":
        return int(lost.tables.get(Writer.TABLE, 0))
    return record.measurements.lost_writes


# -- drctl as a process ---------------------------------------------------------------------------


def journals(home: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in (home / "records").glob("*.journal.jsonl")}


@dataclass
class Run:
    proc: subprocess.Popen[str]
    run_id: str | None = None
    signalled_at: float | None = None
    returncode: int | None = None
    output: str = ""
    exit_seconds: float | None = None  # from the signal to the exit


def start_drctl(ctx: Context, *args: str) -> tuple[subprocess.Popen[str], set[Path]]:
    before = set(journals(ctx.home))
    proc = subprocess.Popen(
        [DRCTL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "DRCTL_HOME": str(ctx.home), "COLUMNS": "200"},
        start_new_session=True,  # its own group: a Ctrl-C is sent to it, not to us
    )
    return proc, before


def new_journal(ctx: Context, before: set[Path]) -> Path | None:
    fresh = [p for p in journals(ctx.home) if p not in before]
    return max(fresh, key=lambda p: p.stat().st_mtime) if fresh else None


def run_until(
    ctx: Context,
    args: list[str],
    when: str,
    sig: signal.Signals,
    delay: float = 0.0,
    group: bool = False,
    deadline: float = 60,
) -> Run:
    """Run drctl; once its journal has a line containing ``when``, wait ``delay`` and send
    ``sig`` (to its process group when ``group``: a Ctrl-C in a terminal). Waits for the exit."""
    proc, before = start_drctl(ctx, *args)
    run = Run(proc)
    end = time.monotonic() + deadline
    while time.monotonic() < end and proc.poll() is None:
        journal = new_journal(ctx, before)
        if journal is not None:
            run.run_id = journal.name.removesuffix(".journal.jsonl")
            with contextlib.suppress(OSError):
                if when in journal.read_text():
                    time.sleep(delay)
                    run.signalled_at = time.monotonic()
                    with contextlib.suppress(ProcessLookupError):
                        if group:
                            os.killpg(proc.pid, sig)
                        else:
                            proc.send_signal(sig)
                    break
        time.sleep(0.005)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        out += "\n[the fault suite killed it: no exit within 60 s of the signal]"
    run.returncode, run.output = proc.returncode, out
    if run.signalled_at is not None:
        run.exit_seconds = time.monotonic() - run.signalled_at
    if run.run_id is None:
        journal = new_journal(ctx, before)
        run.run_id = journal.name.removesuffix(".journal.jsonl") if journal else None
    return run


def drctl(ctx: Context, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DRCTL, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env={**os.environ, "DRCTL_HOME": str(ctx.home), "COLUMNS": "200"},
    )


def has_command(ctx: Context, name: str) -> bool:
    return drctl(ctx, name, "--help", timeout=60).returncode == 0


def load(ctx: Context, run_id: str | None) -> Record | None:
    if run_id is None:
        return None
    try:
        return ctx.lab.store.load(run_id)
    except Exception:  # an unreadable record is what the table shows
        return None


def says(record: Record | None, limit: int = 70) -> str:
    if record is None:
        return "no record"
    text = f"{record.status}: {record.reason}" if record.reason else record.status
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def complete(record: Record | None) -> bool:
    if record is None or record.status == "running":
        return False
    return record.status == "passed" or bool(record.reason)


# -- what is left running -------------------------------------------------------------------------


def _environ_home(pid: int) -> str | None:
    try:
        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if item.startswith(b"DRCTL_HOME="):
                return item[len(b"DRCTL_HOME=") :].decode(errors="replace")
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def lab_processes(ctx: Context) -> set[int]:
    """The lab's own processes: its servers (and their children), sshd, HIS, link proxy."""
    keep: set[int] = set()
    try:
        nodes = list(ctx.lab.environment.nodes.values())
    except Exception:  # no lab (any more): nothing of it is to be kept
        nodes = []
    data_dirs = {os.path.realpath(n.postgres.data_dir) for n in nodes if n.postgres is not None}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        line = _cmdline(pid)
        if cwd in data_dirs or "drills.lab.his" in line or "drills.lab.linkproxy" in line:
            keep.add(pid)
        elif "sshd" in line and str(ctx.lab_dir) in line:
            keep.add(pid)  # a site's sshd master (its sessions are not the lab's)
    return keep


def left_running(ctx: Context, markers: tuple[str, ...] = ()) -> list[str]:
    """Processes of the scenario still alive: any with our DRCTL_HOME in its environment (drctl,
    what it started) or a command line naming a marker, but not the lab's own, nor us."""
    keep = lab_processes(ctx) | {os.getpid()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep or not alive(int(entry)):
            continue
        pid = int(entry)
        line = _cmdline(pid)
        mine = _environ_home(pid) == str(ctx.home) or any(m in line for m in markers)
        if mine and line:
            found.append(f"{pid} {line[:80].strip()}")
    return found


def settle_left(ctx: Context, markers: tuple[str, ...] = (), wait: float = 3.0) -> list[str]:
    """Left running after ``wait`` s (a process that is on its way out is given the time)."""
    end = time.monotonic() + wait
    while True:
        left = left_running(ctx, markers)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


def kill_left(ctx: Context, markers: tuple[str, ...] = ()) -> None:
    """The suite cleans up after a scenario that left processes (it has reported them)."""
    for line in left_running(ctx, markers):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


# -- the pair again -------------------------------------------------------------------------------


def restore(ctx: Context) -> None:
    """One primary and one streaming standby again, straight (no proxy), no lock held."""
    lab = ctx.lab
    if lab.over_ssh:
        ensure_sshd(lab.home)
    force_unlock(lab.home / "locks", lab.env)
    try:
        lab.wait_streaming(3)
    except AssertionError:
        try:
            if "primary" not in lab.roles_now().values():
                lab_of(ctx).up()  # starts the node that was primary, then its standby
            restore_pair(lab, ctx.tmp)
        except Exception:  # whatever a scenario broke: the next one needs a pair
            rebuild(ctx)
    if link.proxy_of(ctx.lab_dir) is not None:
        link.route_direct(lab.environment, ctx.lab_dir)
    force_unlock(lab.home / "locks", lab.env)


def lab_of(ctx: Context) -> Any:
    from drills.lab.onehost import Lab
    from drills.lab.twosite import TwoSiteLab

    return TwoSiteLab(ctx.home) if ctx.lab.over_ssh else Lab(ctx.home)


def rebuild(ctx: Context) -> None:
    """Last resort: the lab down and up again (a half-rewound node that would not rejoin)."""
    lab = lab_of(ctx)
    lab.down()
    lab.up()
    ctx.lab.wait_streaming(60)


def pair_state(ctx: Context, record: Record | None) -> str:
    """'' when one node is primary and the other streams from it, or the record says why not
    (names the node that is not streaming); else what is wrong."""
    try:
        roles = ctx.lab.roles_now()
    except Exception as exc:
        return f"roles unreadable: {exc}"
    primaries = [n for n, r in roles.items() if r == "primary"]
    reason = record.reason if record is not None else ""
    if len(primaries) > 1:
        return f"{len(primaries)} primaries: {roles}"
    if not primaries:
        named = record is not None and all(n in reason for n in roles)
        return "" if named else f"no primary, and the record does not say why ({roles})"
    try:
        ctx.lab.wait_streaming(10)
        return ""
    except AssertionError:
        pass
    others = [n for n in roles if n not in primaries]
    if record is not None and any(n in reason for n in others):
        return ""
    return f"{', '.join(others)} not streaming and the record does not say why ({roles})"
