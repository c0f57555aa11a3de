"""Benchmark: verifying 10,000 sealed drill records (target: under 2 s), against its floors.

Run it from the repository root::

    .venv/bin/python bench/verify_records.py [--records 10000] [--rounds 3] [--no-bundle]

It makes a throw-away ``DRCTL_HOME`` under /tmp (removed at the end, on errors too), seals
``--records`` realistic switchover records (four steps with checks, milestones, objectives and
canary measurements, ~6 KB each, each with its ~6 KB journal as evidence) into a SQLite record
store with the real sealing code, then times, round by round:

1. ``store.verify()`` — what ``drctl records verify --all`` does: every header, link, signature,
   record body and piece of evidence, and the signed head;
2. its floors, measured in the same run on the same data: reading every row and piece of evidence
   from SQLite; SHA-256 of every header, body and piece of evidence; one Ed25519 verification per
   record. Their sum is what any verifier of this format must spend; the ratio says how much the
   chain logic adds on top;
3. (unless ``--no-bundle``) exporting every record as a bundle and verifying the bundle offline.

The exit code is 0 whatever the figures are; non-zero only on errors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_SECONDS = 2.0


def journal_events(run_id: str, start: datetime) -> list[dict[str, Any]]:
    """A switchover's journal, shaped like the runner's."""

    def at(offset: float) -> str:
        return (start + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def check(name: str, node: str, offset: float, observed: str, expected: str) -> dict[str, Any]:
        return {
            "check": name,
            "target": "standby",
            "node": node,
            "observed": observed,
            "expected": expected,
            "verdict": "held",
            "detail": "",
            "at": at(offset),
            "offset": offset,
        }

    events: list[dict[str, Any]] = [
        {
            "event": "run_started",
            "at": at(0),
            "offset": 0.0,
            "run_id": run_id,
            "mode": "drill",
            "playbook": {
                "name": "pg-switchover",
                "version": 1,
                "kind": "switchover",
                "title": {"en": "Planned PostgreSQL switchover", "zh": "PostgreSQL 计划内主备切换"},
                "sha256": "ab" * 32,
                "path": "/opt/drctl/playbooks/pg-switchover.yaml",
            },
            "environment": {
                "name": "his-prod",
                "protected": False,
                "nodes": {
                    "db1": {
                        "configured_role": "primary",
                        "host": "127.0.0.1",
                        "port": 5432,
                        "executor": "local",
                    },
                    "db2": {
                        "configured_role": "standby",
                        "host": "127.0.0.1",
                        "port": 5433,
                        "executor": "local",
                    },
                },
            },
            "request": {"operator": "oncall", "ticket": "CHG-1234", "mode": "drill"},
            "objectives": {
                "rto": {"target": 60, "from": "outage_started", "to": "writes_restored"},
                "rpo": {"target": 0, "measure": "rpo"},
            },
            "orchestrator": {"host": "drctl-1", "pid": 4242, "drctl": "0.1.0"},
        },
        {
            "event": "roles",
            "at": at(0.01),
            "offset": 0.01,
            "roles": {"primary": "db1", "standby": "db2"},
        },
        {
            "event": "preconditions",
            "at": at(0.05),
            "offset": 0.05,
            "checks": [
                check("pg.is_primary", "db1", 0.02, "primary", "primary"),
                check("pg.streaming", "db2", 0.03, "streaming from 127.0.0.1:5432", "streaming"),
                check("pg.replay_lag", "db2", 0.04, "0 bytes", "<= 1048576 bytes"),
            ],
        },
    ]
    offset = 0.1
    for index, (step_id, node) in enumerate(
        [
            ("stop_primary", "db1"),
            ("confirm_standby_caught_up", "db2"),
            ("promote_standby", "db2"),
            ("rejoin_old_primary", "db1"),
        ]
    ):
        took = 0.05 + 0.03 * index
        events.append(
            {
                "event": "step",
                "at": at(offset + took),
                "offset": offset + took,
                "step": {
                    "id": step_id,
                    "phase": "main",
                    "title": {"en": step_id.replace("_", " "), "zh": "步骤"},
                    "action": "pg.stop",
                    "target": "primary",
                    "node": node,
                    "status": "passed",
                    "attempts": 1,
                    "started_at": at(offset),
                    "returned_at": at(offset + took / 2),
                    "converged_at": at(offset + took),
                    "ended_at": at(offset + took),
                    "offsets": {
                        "started": offset,
                        "returned": offset + took / 2,
                        "converged": offset + took,
                        "ended": offset + took,
                    },
                    "duration_seconds": took,
                    "output": "waiting for server to shut down.... done\nserver stopped\n" * 3,
                    "data": {"lsn": "0/3000028"},
                    "checks": [check("pg.down", node, offset + took, "not running", "down")],
                    "milestone": "outage_started" if index == 0 else None,
                },
            }
        )
        if index in (0, 2):
            name = "outage_started" if index == 0 else "writes_restored"
            events.append(
                {
                    "event": "milestone",
                    "at": at(offset),
                    "offset": offset,
                    "milestone": {
                        "name": name,
                        "at": at(offset),
                        "offset": offset,
                        "step": step_id,
                    },
                }
            )
        offset += took + 0.01
    events += [
        {
            "event": "measurements",
            "at": at(offset),
            "offset": offset,
            "measurements": {
                "write_outage_seconds": 0.21,
                "lost_writes": 0,
                "rpo_seconds": 0.0,
                "canary": {
                    "written": 40,
                    "acknowledged": 40,
                    "lost": 0,
                    "lost_seqs": [],
                    "checked_on": "db2",
                    "rpo_seconds": 0.0,
                },
            },
        },
        {
            "event": "run_ended",
            "at": at(offset + 0.01),
            "offset": offset + 0.01,
            "status": "passed",
            "reason": "every step passed its checks",
        },
    ]
    return events


def build(home: Path, count: int) -> Any:
    import json

    from drills.model.record import build_record
    from drills.records.store import RecordStore

    store = RecordStore(home / "records", home / "locks", url="")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch = []
    for n in range(count):
        moment = start + timedelta(hours=n)
        run_id = f"{moment.strftime('%Y%m%dT%H%M%SZ')}-pg-switchover-his-prod-{n:05x}"
        events = journal_events(run_id, moment)
        store.journal_path(run_id).write_text(
            "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8"
        )
        batch.append(build_record(events))
        if len(batch) == 1000:
            store.write_many(batch)
            batch = []
    if batch:
        store.write_many(batch)
    for journal in (home / "records").glob("*.journal.jsonl"):
        journal.unlink()  # the store holds them as evidence now
    return store


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-bundle", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="drctl-bench-verify-", dir="/tmp"))
    os.environ["DRCTL_HOME"] = str(home)
    os.environ.pop("DRCTL_RECORDS_URL", None)
    try:
        from drills.records.chain import sha256
        from drills.records.signing import init_keys

        init_keys()
        seconds, store = timed(lambda: build(home, args.records))
        size = (home / "records" / "records.sqlite3").stat().st_size
        print(
            f"sealed {args.records} records in {seconds:.1f}s "
            f"({size / 1e6:.1f} MB store, {size / args.records / 1e3:.1f} kB per record)"
        )
        keys = store.public_keys()
        key = next(iter(keys.values()))

        def read_all() -> tuple[list[Any], dict[Any, bytes]]:
            return list(store.entries(with_body=True)), store.backend.all_evidence()

        def hash_all(rows: tuple[list[Any], dict[Any, bytes]]) -> int:
            entries, evidence = rows
            for e in entries:
                sha256(e.header)
                sha256(e.body)
            for data in evidence.values():
                sha256(data)
            return len(entries)

        def sign_all(entries: list[Any]) -> int:
            return sum(key.verify(e.signature, e.header) for e in entries)

        full, read, hashing, signatures = [], [], [], []
        for _ in range(args.rounds):
            seconds, verdict = timed(lambda: store.verify(keys))
            if not verdict.ok or verdict.bodies != args.records:
                raise SystemExit(f"verification failed: {verdict.failures[:3]}")
            full.append(seconds)
            seconds, rows = timed(read_all)
            read.append(seconds)
            hashing.append(timed(lambda rows=rows: hash_all(rows))[0])  # type: ignore[misc]
            signatures.append(timed(lambda rows=rows: sign_all(rows[0]))[0])  # type: ignore[misc]
        m_full = statistics.median(full)
        floor = statistics.median(read) + statistics.median(hashing) + statistics.median(signatures)
        print(f"\nverify {args.records} records (store, {args.rounds} rounds, median):")
        print(
            f"  drctl records verify --all   {m_full:.3f}s   (rounds: "
            + ", ".join(f"{s:.3f}" for s in full)
            + ")"
        )
        print(f"  floor: read rows + evidence  {statistics.median(read):.3f}s")
        print(f"  floor: SHA-256 of everything {statistics.median(hashing):.3f}s")
        print(f"  floor: Ed25519 verify each   {statistics.median(signatures):.3f}s")
        print(f"  ratio to the floors' sum     {m_full / floor:.2f}x")
        verdict_word = "PASS" if m_full < TARGET_SECONDS else "MISS"
        print(
            f"  target < {TARGET_SECONDS:g}s: {verdict_word} ({m_full / TARGET_SECONDS:.2f} of it)"
        )

        if not args.no_bundle:
            from drills.reports.export import export_bundle, verify_bundle

            out = home / "bundle"
            seconds, _ = timed(
                lambda: export_bundle(store, out, since=date(2000, 1, 1), reports=False)
            )
            print(f"\nexported a bundle of {args.records} records in {seconds:.1f}s")
            times = []
            for _ in range(args.rounds):
                seconds, verdict = timed(lambda: verify_bundle(out, keys))
                if not verdict.ok:
                    raise SystemExit(f"bundle verification failed: {verdict.failures[:3]}")
                times.append(seconds)
            m_bundle = statistics.median(times)
            print(
                f"  drctl records verify --bundle  {m_bundle:.3f}s "
                f"({m_bundle / m_full:.2f}x the store; reads {args.records * 2 + 4} files)"
            )
        return 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
