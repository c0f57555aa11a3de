"""The record store: sealed, hash-chained, signed, append-only; verified in place and offline.

Records come from the real runner (shell steps on a local node, no database), the store is a real
SQLite file (and, in test_records_pg.py, a real PostgreSQL), and the CLI runs as a user runs it.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drills.model.errors import RefusedError
from drills.model.record import Record
from drills.records.chain import GENESIS, canonical, sha256
from drills.records.signing import read_public_key
from drills.records.store import RecordStore
from drills.reports.export import export_bundle, verify_bundle
from tests.helpers import drctl
from tests.test_records_support import home_env, make_home, outcome_records


@pytest.fixture(scope="module")
def sealed_home() -> Iterator[tuple[Path, dict[str, Record]]]:
    """A home with four sealed records (passed, failed, rolled back, interrupted)."""
    home = make_home()
    with home_env(home):
        records = outcome_records(home)
    yield home, records
    shutil.rmtree(home, ignore_errors=True)


def store_of(home: Path) -> RecordStore:
    return RecordStore(home / "records", home / "locks", url="")


def copy_db(home: Path, target: Path) -> Path:
    """A consistent copy of the SQLite store (WAL included), with its triggers dropped so that
    a test can do what an intruder with file access could."""
    (target / "records").mkdir(parents=True)
    (target / "locks").mkdir()
    shutil.copytree(home / "keys", target / "keys")
    src = sqlite3.connect(home / "records" / "records.sqlite3")
    dst = sqlite3.connect(target / "records" / "records.sqlite3")
    src.backup(dst)
    src.close()
    for trigger in ("records_no_update", "records_no_delete", "evidence_no_update"):
        dst.execute(f"DROP TRIGGER IF EXISTS drctl_{trigger}")
    dst.execute("DROP TRIGGER IF EXISTS drctl_evidence_no_delete")
    dst.commit()
    dst.close()
    return target


def verify_copy(target: Path) -> list[str]:
    store = RecordStore(target / "records", target / "locks", url="", keys=target / "keys")
    verdict = store.verify()
    return [str(f) for f in verdict.failures]


def flip(text: str, index: int) -> str:
    char = text[index]
    return text[:index] + ("X" if char != "X" else "Y") + text[index + 1 :]


def test_every_record_is_sealed_into_one_signed_chain(
    sealed_home: tuple[Path, dict[str, Record]],
) -> None:
    home, records = sealed_home
    store = store_of(home)
    entries = list(store.entries(with_body=True))
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert [e.id for e in entries] == [r.id for r in records.values()]
    assert entries[0].fields["prev_hash"] == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.fields["prev_hash"] == before.hash == sha256(before.header)
    key = read_public_key(home / "keys" / "records-ed25519.pub")
    for entry, record in zip(entries, records.values(), strict=True):
        # The body is the canonical JSON of the record; the header carries its hash, signed.
        assert entry.body == canonical(json.loads(record.to_json()))
        assert entry.fields["record_hash"] == sha256(entry.body)
        assert entry.fields["key_id"] == key.key_id and key.verify(entry.signature, entry.header)
        assert entry.summary["status"] == record.status
        journal = store.journal_path(record.id).read_bytes()
        assert [e.as_dict() for e in entry.evidence] == [
            {"name": "journal.jsonl", "sha256": sha256(journal), "size": len(journal)}
        ]
        assert store.evidence(entry, "journal.jsonl") == journal
    verdict = store.verify()
    assert verdict.ok, verdict.failures
    assert (verdict.entries, verdict.bodies, verdict.evidence) == (4, 4, 4)
    assert (verdict.head_seq, verdict.head_hash) == (4, entries[-1].hash)


def test_one_byte_anywhere_a_deleted_record_and_a_reordered_pair_are_caught(
    sealed_home: tuple[Path, dict[str, Record]], tmp_path: Path
) -> None:
    home, records = sealed_home
    ids = [r.id for r in records.values()]
    cases: list[tuple[str, Callable[[sqlite3.Connection], None], str]] = []
    for seq, record_id in enumerate(ids, 1):
        row = (
            sqlite3.connect(home / "records" / "records.sqlite3")
            .execute("SELECT body, header FROM drctl_records WHERE seq = ?", (seq,))
            .fetchone()
        )
        body, header = row
        for where in (0, len(body) // 2, len(body) - 1):
            flipped = flip(body, where)
            cases.append(
                (
                    f"body byte {where} of seq {seq}",
                    lambda c, s=seq, b=flipped: c.execute(
                        "UPDATE drctl_records SET body = ? WHERE seq = ?", (b, s)
                    ),
                    f"seq {seq}, record {record_id}",
                )
            )
        forged = (
            header.replace('"passed"', '"PASSED"')
            .replace('"failed"', '"passed"')
            .replace('"interrupted"', '"passed"')
        )
        cases.append(
            (
                f"header of seq {seq}",
                lambda c, s=seq, h=forged: c.execute(
                    "UPDATE drctl_records SET header = ? WHERE seq = ?", (h, s)
                ),
                f"seq {seq}, record {record_id}",
            )
        )
        cases.append(
            (
                f"evidence of seq {seq}",
                lambda c, s=seq: c.execute(
                    "UPDATE drctl_evidence SET content = content || x'0a' WHERE seq = ?", (s,)
                ),
                f"seq {seq}, record {record_id}: its evidence journal.jsonl changed",
            )
        )
    cases += [
        (
            "a deleted record in the middle",
            lambda c: c.execute("DELETE FROM drctl_records WHERE seq = 2"),
            f"seq 3, record {ids[2]}: seq 2 is missing",
        ),
        (
            "the newest record deleted",
            lambda c: c.execute("DELETE FROM drctl_records WHERE seq = 4"),
            "the chain ends at seq 3 but its signed head says seq 4",
        ),
        ("a reordered pair", swap_rows(2, 3), f"seq 2, record {ids[2]}"),
    ]
    for number, (what, mutate, expected) in enumerate(cases):
        target = copy_db(home, tmp_path / f"case{number}")
        conn = sqlite3.connect(target / "records" / "records.sqlite3")
        mutate(conn)
        conn.commit()
        conn.close()
        failures = verify_copy(target)
        assert failures, f"{what}: not caught"
        assert failures[0].startswith(expected), f"{what}: {failures[0]!r}"


def swap_rows(a: int, b: int) -> Callable[[sqlite3.Connection], None]:
    def swap(conn: sqlite3.Connection) -> None:
        rows = {
            seq: conn.execute(
                "SELECT id, kind, ref, header, hash, signature, body FROM drctl_records "
                "WHERE seq = ?",
                (seq,),
            ).fetchone()
            for seq in (a, b)
        }
        conn.execute("DELETE FROM drctl_records WHERE seq IN (?, ?)", (a, b))
        for seq, other in ((a, b), (b, a)):
            conn.execute(
                "INSERT INTO drctl_records (seq, id, kind, ref, header, hash, signature, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, *rows[other]),
            )

    return swap


def test_records_are_append_only(sealed_home: tuple[Path, dict[str, Record]]) -> None:
    home, records = sealed_home
    conn = sqlite3.connect(home / "records" / "records.sqlite3")
    for statement in (
        "UPDATE drctl_records SET body = 'x' WHERE seq = 1",
        "DELETE FROM drctl_records WHERE seq = 1",
        "DELETE FROM drctl_evidence",
    ):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(statement)
    conn.close()
    store = store_of(home)
    passed = records["passed"]
    again = store.write(passed)  # the same record again: nothing new is sealed
    assert again is not None and again.seq == 1
    changed = passed.model_copy(update={"reason": "rewritten later"})
    with pytest.raises(RefusedError, match="never rewritten"):
        store.write(changed)
    assert [e.seq for e in store.entries()] == [1, 2, 3, 4]
    assert store.verify().ok


def test_verify_cli_names_the_first_bad_record(
    sealed_home: tuple[Path, dict[str, Record]], tmp_path: Path
) -> None:
    home, records = sealed_home
    ok = drctl("records", "verify", home=home)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: store" in ok.stdout and "4 record(s) in the chain" in ok.stdout
    one = drctl("records", "verify", records["failed"].id[:20], home=home)
    assert one.returncode == 0 and "1 checked in full" in one.stdout

    target = copy_db(home, tmp_path / "tampered")
    conn = sqlite3.connect(target / "records" / "records.sqlite3")
    conn.execute(
        "UPDATE drctl_records SET body = replace(body, 'steps check_app', 'steps') WHERE seq = 2"
    )
    conn.commit()
    conn.close()
    bad = drctl("records", "verify", "--all", home=target)
    assert bad.returncode == 1
    assert f"FAIL seq 2, record {records['failed'].id}: its content changed" in bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
    # A report of a tampered record is refused, not rendered.
    report = drctl("report", records["failed"].id, "--out", "-", home=target)
    assert report.returncode == 1 and "fails verification" in report.stderr

    other = make_home()
    try:
        assert drctl("keys", "init", home=other).returncode == 0
        wrong = drctl(
            "records",
            "verify",
            "--public-key",
            str(other / "keys" / "records-ed25519.pub"),
            home=home,
        )
        assert wrong.returncode == 1 and "not among the keys given" in wrong.stderr
    finally:
        shutil.rmtree(other, ignore_errors=True)
    assert drctl("records", "verify", "nope", home=home).returncode == 2


def test_a_bundle_verifies_offline_and_catches_every_change(
    sealed_home: tuple[Path, dict[str, Record]], tmp_path: Path
) -> None:
    home, records = sealed_home
    public = tmp_path / "trusted.pub"
    shutil.copy(home / "keys" / "records-ed25519.pub", public)
    failed = records["failed"].id
    bundle = tmp_path / "bundle"
    exported = drctl("records", "export", failed, "--out", str(bundle), home=home)
    assert exported.returncode == 0, exported.stderr
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert "README.md" in files and "chain.jsonl" in files and "manifest.sig" in files
    assert f"records/000002-{failed}.json" in files
    assert f"evidence/000002-{failed}/journal.jsonl" in files
    assert any(f.startswith("keys/") and f.endswith(".pub") for f in files)
    assert f"reports/{failed}.zh.html" in files
    # The bundle proves its record's place without carrying the other records' content.
    assert not any(records["passed"].id in f for f in files if f.startswith("records/"))
    readme = (bundle / "README.md").read_text(encoding="utf-8")
    assert "drctl records verify --bundle" in readme and "sha256sum" in readme

    offline = tmp_path / "offline"  # no DRCTL_HOME store at all: only the bundle and the key
    ok = drctl(
        "records", "verify", "--bundle", str(bundle), "--public-key", str(public), home=offline
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "4 record(s) in the chain, 1 checked in full" in ok.stdout
    assert not (offline / "records" / "records.sqlite3").exists()

    key = {read_public_key(public).key_id: read_public_key(public)}
    record_file = f"records/000002-{failed}.json"

    def chain_lines(path: Path) -> list[bytes]:
        return path.read_bytes().splitlines(keepends=True)

    def mutate_bytes(rel: str, index: int) -> Callable[[Path], None]:
        def run(root: Path) -> None:
            data = bytearray((root / rel).read_bytes())
            data[index] ^= 0x01
            (root / rel).write_bytes(bytes(data))

        return run

    def drop_line(n: int) -> Callable[[Path], None]:
        def run(root: Path) -> None:
            lines = chain_lines(root / "chain.jsonl")
            del lines[n]
            (root / "chain.jsonl").write_bytes(b"".join(lines))

        return run

    def swap_lines(root: Path) -> None:
        lines = chain_lines(root / "chain.jsonl")
        lines[0], lines[1] = lines[1], lines[0]
        (root / "chain.jsonl").write_bytes(b"".join(lines))

    size = len((bundle / record_file).read_bytes())
    cases: list[tuple[str, Callable[[Path], None]]] = [
        (f"record byte {i}", mutate_bytes(record_file, i)) for i in (0, size // 2, size - 1)
    ]
    cases += [
        ("evidence byte", mutate_bytes(f"evidence/000002-{failed}/journal.jsonl", 10)),
        ("another record's header", mutate_bytes("chain.jsonl", 40)),
        ("the record deleted", lambda root: (root / record_file).unlink()),
        ("a chain line deleted", drop_line(2)),
        ("the newest chain line deleted", drop_line(3)),
        ("a reordered pair", swap_lines),
        ("the manifest", mutate_bytes("manifest.json", 30)),
        ("the head", mutate_bytes("head.json", 20)),
    ]
    for what, mutate in cases:
        copy = tmp_path / f"case-{what.replace(' ', '-')}"
        shutil.copytree(bundle, copy)
        mutate(copy)
        verdict = verify_bundle(copy, key)
        assert not verdict.ok, f"{what}: not caught"
    assert verify_bundle(bundle, key).ok


def test_export_since_a_date_takes_every_drill_and_its_annotations(
    sealed_home: tuple[Path, dict[str, Record]], tmp_path: Path
) -> None:
    home, records = sealed_home
    with home_env(home):
        store = store_of(home)
        day = min(r.started_at for r in records.values())[:10]
        from datetime import date

        result = export_bundle(store, tmp_path / "all", since=date.fromisoformat(day))
    assert sorted(result.drills) == sorted(r.id for r in records.values())
    manifest = json.loads((tmp_path / "all" / "manifest.json").read_text())
    assert [r["seq"] for r in manifest["records"]][:4] == [1, 2, 3, 4]
    verdict = verify_bundle(tmp_path / "all")
    assert verdict.ok and verdict.bodies == len(manifest["records"])
    assert any("shipped in the bundle" in w for w in verdict.warnings)
    empty = drctl(
        "records", "export", "--since", "2999-01-01", "--out", str(tmp_path / "x"), home=home
    )
    assert empty.returncode == 2 and "no sealed drill records" in empty.stderr
    bad = drctl(
        "records", "export", "--since", "yesterday", "--out", str(tmp_path / "y"), home=home
    )
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def test_annotate_adds_a_signed_record_that_refers_to_the_drill(tmp_path: Path) -> None:
    home = make_home()
    try:
        with home_env(home):
            records = outcome_records(home)
        drill = records["rolled_back"].id
        evidence = tmp_path / "screenshot.txt"
        evidence.write_text("his login page answered after the switch\n")
        first = drctl(
            "records", "annotate", drill,
            "--participant", "张三:演练总指挥:信息科",
            "--participant", "Li Si:vendor engineer:Vendor Co",
            "--problem", "promote failed: the standby's recovery.signal was missing",
            "--rectify", "add a recovery.signal check to the preconditions;王五;2026-12-31",
            "--plan-revised", "--plan-note", "precondition added",
            "--planned-start", "2026-11-27T09:00+08:00",
            "--attach", str(evidence),
            "--by", "auditor-test",
            home=home,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert "as seq 5" in first.stdout
        second = drctl(
            "records", "annotate", drill[:22],
            "--problem", "promote failed: recovery.signal missing (corrected wording)",
            "--note", "corrects the wording of the problem",
            home=home,
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
        with home_env(home):
            store = store_of(home)
            sealed = store.sealed(drill)
            merged = sealed.merged
        assert [e.seq for e, _ in sealed.annotations] == [5, 6]
        assert all(e.refs == [drill] and e.kind == "annotation" for e, _ in sealed.annotations)
        assert [p.name for p in merged.participants] == ["张三", "Li Si"]
        assert merged.problems == ["promote failed: recovery.signal missing (corrected wording)"]
        assert merged.rectification[0].owner == "王五"
        assert merged.rectification[0].deadline.isoformat() == "2026-12-31"
        assert merged.plan_revised is True
        assert merged.attachments[0].name == "screenshot.txt"
        first_entry = sealed.annotations[0][0]
        assert store.evidence(first_entry, "screenshot.txt") == evidence.read_bytes()
        # The drill record itself was not touched.
        assert sealed.entry.seq == 3 and sealed.record == records["rolled_back"]
        assert drctl("records", "verify", home=home).returncode == 0

        bad = drctl("records", "annotate", drill, "--rectify", "fix it;someone;soon", home=home)
        assert bad.returncode == 2 and "deadline" in bad.stderr
        assert "Traceback" not in bad.stderr
        missing = drctl("records", "annotate", "no-such-drill", "--problem", "x", home=home)
        assert missing.returncode == 2 and "no record 'no-such-drill'" in missing.stderr
        nothing = drctl("records", "annotate", drill, home=home)
        assert nothing.returncode == 2 and "at least one field" in nothing.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_keys_init_rotate_and_old_records_still_verify(tmp_path: Path) -> None:
    home = make_home()
    try:
        made = drctl("keys", "init", home=home)
        assert made.returncode == 0
        private = home / "keys" / "records-ed25519.key"
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        first_id = read_public_key(home / "keys" / "records-ed25519.pub").key_id
        assert first_id in made.stdout
        again = drctl("keys", "init", home=home)
        assert again.returncode == 2 and "already exists" in again.stderr
        with home_env(home):
            outcome_records(home)
        rotated = drctl("keys", "init", "--rotate", home=home)
        assert rotated.returncode == 0 and f"retired key {first_id}" in rotated.stdout
        assert (home / "keys" / "retired" / f"{first_id}.pub").exists()
        with home_env(home):
            outcome_records(home)  # four more, signed with the new key
            verdict = store_of(home).verify()
        assert verdict.ok and verdict.entries == 8 and len(verdict.key_ids) == 2
        shown = drctl("keys", "show", home=home)
        assert "BEGIN PUBLIC KEY" in shown.stdout and first_id in shown.stdout
    finally:
        shutil.rmtree(home, ignore_errors=True)
