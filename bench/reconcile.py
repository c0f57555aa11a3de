"""Benchmark: table reconciliation (``verify.reconcile``) against reladiff and a bare one-side
hash scan, on 1M and 10M rows.

Run it from the repository root (reladiff comes with the ``bench`` extra)::

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/reconcile.py [--sizes 1000000,10000000] [--rounds 2]

It makes a throw-away ``DRCTL_HOME`` under /tmp, brings up drctl's lab and promotes its standby,
so that source and target are two independent PostgreSQL servers on 127.0.0.1 (not two databases
in one server). For each size it builds the same table on both servers at once with ``INSERT ...
SELECT generate_series`` (bigint key; int, numeric, text, timestamptz, boolean, date and jsonb
columns, about 100 bytes a row), then changes one row and deletes another on the target. It always
takes the lab down and removes the directory, on error and on Ctrl-C too.

Per size and round (the order of the three rotates each round):

1. drctl: ``reconcile(source, target, tables=[t])`` in a fresh child process.
2. reladiff 0.6 (HashDiffer, every column compared, 4 threads per database and a pool of 8, the
   fastest setting measured here) in a fresh child process.
3. The one-side floor: ``SELECT sum(hashtextextended(t::text, 0)) FROM t`` on the source alone,
   with the server's defaults (parallel workers allowed) and with
   ``max_parallel_workers_per_gather = 0``; the faster one is the floor.

Peak memory is the child's own peak resident set (``VmHWM`` in /proc/self/status: imports and
libpq included; ``getrusage().ru_maxrss`` would report the parent's peak, which Linux carries
across exec), and its growth over the RSS measured right after the imports. Timings are medians
of the rounds; the targets are printed with PASS/MISS. The exit code is 0 whatever the figures
are; non-zero only when something breaks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

TARGET_VS_RELADIFF = 3.0  # reladiff seconds / drctl seconds, at least
TARGET_VS_SCAN = 1.5  # drctl seconds / one-side scan seconds, at most
FLAT_MEMORY_MB = 8.0  # peak RSS at the largest size minus at the smallest, at most
RELADIFF_THREADS = 4
RELADIFF_POOL = 8
CHILD_TIMEOUT = 3600

COLUMNS = ("n", "amount", "label", "created", "flag", "day", "doc")
CREATE = """
DROP TABLE IF EXISTS {t};
CREATE TABLE {t} (id bigint NOT NULL, n int NOT NULL, amount numeric(12,2), label text,
                  created timestamptz, flag boolean, day date, doc jsonb);
INSERT INTO {t}
SELECT i, (i * 7919) % 100000, round((i % 100000) / 7.0, 2),
       'name ' || i || repeat('x', (i % 20)::int),
       timestamptz '2020-01-01 00:00:00+00' + i * interval '1 second', i % 3 = 0,
       date '2000-01-01' + (i % 9000)::int, jsonb_build_object('k', i % 10, 'tag', 'w' || i % 7)
FROM generate_series(1::bigint, {n}) i;
ALTER TABLE {t} ADD PRIMARY KEY (id);
"""


def table_name(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"bench_{size // 1_000_000}m"
    if size % 1000 == 0:
        return f"bench_{size // 1000}k"
    return f"bench_{size}"


def differences(size: int) -> tuple[int, int]:
    """(the key of the changed row, the key of the row missing in the target)."""
    return size // 2, (size * 3) // 4 + 1


# ---------------------------------------------------------------------------------- children


def _status_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(kind: str, source: str, target: str, table: str) -> None:
    """One measured run in this fresh process; prints one JSON line."""
    found: list[list[Any]] = []
    extra: dict[str, Any] = {}
    if kind == "drctl":
        from verify.reconcile import reconcile

        start_rss = _status_kb("VmRSS")
        started = time.perf_counter()
        report = reconcile(source, target, tables=[table])
        seconds = time.perf_counter() - started
        found = [[d.kind, *d.key] for d in report.tables[0].diffs]
        extra = {"hash_mode": report.hash_mode, "rows": report.tables[0].source_rows}
    else:
        import logging

        logging.disable(logging.WARNING)  # reladiff warns that it compares jsonb as text
        from reladiff import Algorithm, connect_to_table, diff_tables

        start_rss = _status_kb("VmRSS")
        started = time.perf_counter()
        t1 = connect_to_table(source, table, "id", thread_count=RELADIFF_THREADS)
        t2 = connect_to_table(target, table, "id", thread_count=RELADIFF_THREADS)
        with diff_tables(
            t1,
            t2,
            extra_columns=COLUMNS,
            algorithm=Algorithm.HASHDIFF,
            threaded=True,
            max_threadpool_size=RELADIFF_POOL,
        ) as diff:
            signs: dict[int, set[str]] = {}
            for sign, row in diff:
                signs.setdefault(int(row[0]), set()).add(sign)
        seconds = time.perf_counter() - started
        for key, seen in sorted(signs.items()):
            if seen == {"+", "-"}:
                found.append(["changed", key])
            elif seen == {"-"}:
                found.append(["missing_in_target", key])
            else:
                found.append(["missing_in_source", key])
    # VmHWM: the peak RSS of this process's own address space. (getrusage's ru_maxrss would
    # do on most systems, but Linux carries the parent's high-water mark across exec.)
    peak = _status_kb("VmHWM")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_kb": peak,
                "start_kb": start_rss,
                "found": found,
                **extra,
            }
        )
    )


def run_child(kind: str, source: str, target: str, table: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", kind, source, target, table]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        cwd=Path(__file__).parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------------- setup


@dataclass
class Servers:
    source: str  # libpq DSNs
    target: str
    source_url: str  # for reladiff
    target_url: str
    version: str


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def start_servers(home: Path) -> Servers:
    import psycopg

    from drills.lab.onehost import Lab

    up = Lab(home).up()
    primary = next(n for n in up.nodes if n.role == "primary")
    standby = next(n for n in up.nodes if n.role == "standby")
    source = f"host=127.0.0.1 port={primary.port} user=postgres dbname=postgres"
    target = f"host=127.0.0.1 port={standby.port} user=postgres dbname=postgres"
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("SELECT pg_promote(wait => true)")
        row = conn.execute("SELECT pg_is_in_recovery(), version()").fetchone()
        if row is None or row[0]:
            raise RuntimeError("the standby did not leave recovery")
        version = str(row[1]).split(" on ")[0]
    return Servers(
        source,
        target,
        f"postgresql://postgres@127.0.0.1:{primary.port}/postgres",
        f"postgresql://postgres@127.0.0.1:{standby.port}/postgres",
        version,
    )


def build(servers: Servers, size: int) -> float:
    """The same table on both servers at once; then the target's two differences."""
    import psycopg

    table = table_name(size)
    changed, missing = differences(size)
    errors: list[BaseException] = []

    def load(dsn: str, is_target: bool) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SET maintenance_work_mem = '512MB'")
                conn.execute("SET synchronous_commit = off")
                conn.execute(CREATE.format(t=table, n=size))
                if is_target:
                    conn.execute(
                        f"UPDATE {table} SET label = label || ' (changed)' WHERE id = {changed}"
                    )
                    conn.execute(f"DELETE FROM {table} WHERE id = {missing}")
                conn.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
                conn.execute("CHECKPOINT")
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    threads = [
        threading.Thread(target=load, args=(servers.source, False)),
        threading.Thread(target=load, args=(servers.target, True)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started


def scan(dsn: str, table: str, *, serial: bool) -> float:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        if serial:
            conn.execute("SET max_parallel_workers_per_gather = 0")
        started = time.perf_counter()
        conn.execute(f"SELECT sum(hashtextextended(t::text, 0)) FROM {table} t").fetchall()
        return time.perf_counter() - started


def warm(servers: Servers, table: str) -> None:
    import psycopg

    for dsn in (servers.source, servers.target):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"SELECT count(*), sum(length(t::text)) FROM {table} t").fetchall()


# ---------------------------------------------------------------------------------- measuring


@dataclass
class SizeResult:
    size: int
    build_seconds: float
    drctl: list[dict[str, Any]] = field(default_factory=list)
    reladiff: list[dict[str, Any]] = field(default_factory=list)
    scan_default: list[float] = field(default_factory=list)
    scan_serial: list[float] = field(default_factory=list)

    def median(self, kind: str) -> float:
        runs: list[Any] = getattr(self, kind)
        values = [r["seconds"] if isinstance(r, dict) else r for r in runs]
        return statistics.median(values)

    @property
    def scan(self) -> float:
        return min(self.median("scan_default"), self.median("scan_serial"))

    def peak_mb(self, kind: str) -> float:
        runs: list[dict[str, Any]] = getattr(self, kind)
        return max(r["peak_kb"] for r in runs) / 1024

    def growth_mb(self, kind: str) -> float:
        runs: list[dict[str, Any]] = getattr(self, kind)
        return max(r["peak_kb"] - r["start_kb"] for r in runs) / 1024

    def expected(self) -> set[tuple[str, int]]:
        changed, missing = differences(self.size)
        return {("changed", changed), ("missing_in_target", missing)}

    def found(self, kind: str) -> bool:
        runs: list[dict[str, Any]] = getattr(self, kind)
        return all({(f[0], int(f[1])) for f in r["found"]} == self.expected() for r in runs)


def measure(servers: Servers, size: int, rounds: int) -> SizeResult:
    table = table_name(size)
    print(f"[{size:,} rows] building {table} on both servers ...", flush=True)
    result = SizeResult(size, build(servers, size))
    print(f"  built in {result.build_seconds:.1f}s; warming the page cache", flush=True)
    warm(servers, table)
    run_child("drctl", servers.source, servers.target, table)  # throw-away: imports, caches

    def run_drctl() -> None:
        r = run_child("drctl", servers.source, servers.target, table)
        result.drctl.append(r)
        print(f"  drctl     {r['seconds']:7.2f}s  peak {r['peak_kb'] / 1024:6.1f} MB", flush=True)

    def run_reladiff() -> None:
        r = run_child("reladiff", servers.source_url, servers.target_url, table)
        result.reladiff.append(r)
        print(f"  reladiff  {r['seconds']:7.2f}s  peak {r['peak_kb'] / 1024:6.1f} MB", flush=True)

    def run_scan() -> None:
        default = scan(servers.source, table, serial=False)
        serial = scan(servers.source, table, serial=True)
        result.scan_default.append(default)
        result.scan_serial.append(serial)
        print(f"  scan      {default:7.2f}s (parallel allowed), {serial:.2f}s (serial)", flush=True)

    order = [run_drctl, run_reladiff, run_scan]
    for index in range(rounds):
        print(f"  round {index + 1}/{rounds}", flush=True)
        for step in order[index % 3 :] + order[: index % 3]:
            step()
    return result


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(results: list[SizeResult], servers: Servers, rounds: int, load: str) -> None:
    print()
    print(f"table reconciliation benchmark: {rounds} round(s) per size, medians")
    print(f"  servers: two independent {servers.version} servers on 127.0.0.1 (drctl's lab,")
    print("  standby promoted), shared_buffers 32MB, data in the OS page cache")
    now = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"  machine: {os.cpu_count()} cores, shared with other jobs running tests (load average "
        f"{load} at the start, {now} at the end); timings are noisy"
    )
    print(
        "  table: bigint key + int, numeric(12,2), text, timestamptz, boolean, date, jsonb "
        "(~100 bytes a row); target: one row changed, one row deleted"
    )
    print(
        f"  reladiff {_reladiff_version()}: HashDiffer, all columns, {RELADIFF_THREADS} threads "
        f"per database, pool {RELADIFF_POOL}"
    )
    print(
        "  memory: peak RSS (VmHWM) of a fresh child process per run, imports included; growth ="
        " peak - RSS after imports"
    )
    print()
    head = (
        f"{'rows':>12} {'drctl s':>8} {'reladiff s':>11} {'scan s':>7} {'(par/ser)':>12} "
        f"{'reladiff/drctl':>15} {'drctl/scan':>11} {'drctl MB':>9} {'growth MB':>10} "
        f"{'reladiff MB':>12} found"
    )
    print(head)
    for r in results:
        d, rl, sc = r.median("drctl"), r.median("reladiff"), r.scan
        pair = f"{r.median('scan_default'):.2f}/{r.median('scan_serial'):.2f}"
        found = f"drctl {'yes' if r.found('drctl') else 'NO'}, reladiff "
        found += "yes" if r.found("reladiff") else "NO"
        print(
            f"{r.size:>12,} {d:>8.2f} {rl:>11.2f} {sc:>7.2f} {pair:>12} {rl / d:>15.1f} "
            f"{d / sc:>11.2f} {r.peak_mb('drctl'):>9.1f} {r.growth_mb('drctl'):>10.1f} "
            f"{r.peak_mb('reladiff'):>12.1f} {found}"
        )
    print()
    print("targets")
    for r in results:
        d, rl = r.median("drctl"), r.median("reladiff")
        print(
            f"  {r.size:>12,} rows: >= {TARGET_VS_RELADIFF:g}x faster than reladiff "
            f"{rl / d:6.1f}x   {_verdict(rl / d >= TARGET_VS_RELADIFF)}"
        )
        print(
            f"  {r.size:>12,} rows: within {TARGET_VS_SCAN:g}x of the one-side scan "
            f"{d / r.scan:6.2f}x   {_verdict(d / r.scan <= TARGET_VS_SCAN)}"
        )
        print(
            f"  {r.size:>12,} rows: both differences found (changed id={differences(r.size)[0]}, "
            f"missing id={differences(r.size)[1]})   {_verdict(r.found('drctl'))}"
        )
    if len(results) > 1:
        small, large = results[0], results[-1]
        delta = large.peak_mb("drctl") - small.peak_mb("drctl")
        print(
            f"  peak memory flat from {small.size:,} to {large.size:,} rows "
            f"({small.peak_mb('drctl'):.1f} -> {large.peak_mb('drctl'):.1f} MB, "
            f"{delta:+.1f} MB; limit +{FLAT_MEMORY_MB:g} MB)   {_verdict(delta <= FLAT_MEMORY_MB)}"
        )


def _reladiff_version() -> str:
    try:
        from importlib.metadata import version

        return version("reladiff")
    except Exception:
        return "?"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(*argv[1:5])
        return 0
    parser = argparse.ArgumentParser(
        description="Table reconciliation: drctl vs reladiff vs a one-side hash scan "
        "(two PostgreSQL servers on 127.0.0.1)."
    )
    parser.add_argument(
        "--sizes",
        default="1000000,10000000",
        help="comma-separated row counts (default 1000000,10000000)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each (default 2)")
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error("--sizes must be comma-separated integers")
    if not sizes or sizes[0] < 1000 or args.rounds < 1:
        parser.error("sizes must be >= 1000 and --rounds >= 1")
    try:
        import psycopg2  # noqa: F401
        import reladiff  # noqa: F401
    except ImportError:
        parser.error("reladiff is not installed: .venv/bin/pip install -e '.[bench]'")

    home = Path(tempfile.mkdtemp(prefix="drctl-bench-reconcile-", dir="/tmp"))
    home.chmod(0o755)  # as root the lab's PostgreSQL runs as drctl-pg, which must reach it
    os.environ["DRCTL_HOME"] = str(home)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    status = 0
    try:
        print(f"DRCTL_HOME={home}: bringing up two servers ...", flush=True)
        servers = start_servers(home)
        results = [measure(servers, size, args.rounds) for size in sizes]
        report(results, servers, args.rounds, load)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        status = 130
    except Exception:
        traceback.print_exc()
        print("benchmark failed: cleaning up", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            from drills.lab.onehost import Lab

            Lab(home).down()
        except Exception as exc:
            print(f"taking the lab down failed: {exc}", file=sys.stderr)
            status = status or 1
        shutil.rmtree(home, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return status


if __name__ == "__main__":
    sys.exit(main())
