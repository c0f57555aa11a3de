"""A full, read-only or failing records disk, on real small file systems.

As root, each test mounts a tmpfs of a few hundred kilobytes over a records directory (and
remounts it read-only where it needs to), and unmounts it in a finally. The scenarios:

- the run is refused up front when the records directory has no room, or is read-only (exit 3,
  a sentence naming the directory, its free space and the need; nothing changed);
- the disk fills *during* a switchover on the one-host lab: the journal moves to its fallback
  place (named on stderr, in the record and in the final sentence), the step fails, the
  rollback runs, one primary is left, and the record is sealed later from the fallback journal;
- the readers (``records list``, ``records verify``, ``records status``, ``drctl status``)
  name an empty and a truncated journal and go on (not exit 2).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drills.engine.runner import Runner, RunRequest
from drills.model.errors import RefusedError
from drills.records.fallback import FALLBACK_ENV, fallback_dirs
from drills.records.journal import Journal, JournalMoved, inspect_journal
from drills.records.lock import lock_holders
from drills.records.room import MIN_FREE_ENV, room_problem
from drills.records.store import RecordStore
from tests.helpers import drctl
from tests.labs import AnyLab

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


# -- small file systems ------------------------------------------------------------------------


def _umount(directory: Path) -> None:
    for _ in range(50):
        done = subprocess.run(["umount", str(directory)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        time.sleep(0.1)  # a process of the test may still hold a file there for a moment
    subprocess.run(["umount", "-l", str(directory)], check=True)


@contextlib.contextmanager
def small_disk(directory: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory`` for the block; unmounted after, always."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
        check=True,
    )
    try:
        yield directory
    finally:
        _umount(directory)


def read_only(directory: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; the file."""
    path = directory / "filler"
    chunk = b"\0" * 4096
    with path.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return path


# -- the room check, and the journal itself ------------------------------------------------------


@needs_root
def test_room_names_the_directory_its_free_space_and_the_need(tmp_path: Path) -> None:
    with small_disk(tmp_path / "records") as records:
        assert room_problem(records, need=64 * 1024) is None
        problem = room_problem(records, need=16 * 1024 * 1024)
        assert problem is not None
        assert f"the records directory {records} has 256.0 KiB free" in problem
        assert "a run needs 16.0 MiB" in problem and MIN_FREE_ENV in problem
        fill(records)
        problem = room_problem(records, need=1)
        assert problem is not None and "has 0 B free" in problem
        assert sorted(p.name for p in records.iterdir()) == ["filler"]  # no probe left
    with small_disk(tmp_path / "records") as records:
        read_only(records)
        problem = room_problem(records, need=1)
        assert problem is not None
        assert f"the records directory {records} is read-only" in problem


@needs_root
def test_the_journal_moves_with_every_event_and_says_where(tmp_path: Path) -> None:
    fallback = tmp_path / "fallback"
    with small_disk(tmp_path / "records", "64k") as records:
        journal = Journal(records / "R.journal.jsonl", fallback=[fallback])
        journal.append({"event": "run_started", "n": 0})
        journal.append({"event": "note", "n": 1})
        fill(records)
        with pytest.raises(JournalMoved) as caught:
            journal.append({"event": "note", "n": 2, "pad": "x" * 8192})
        move = caught.value.move
        assert move.failed == records / "R.journal.jsonl" and "ENOSPC" in move.error
        assert move.path == fallback / "R.journal.jsonl" and move.events == 2
        assert str(move.path) in move.sentence() and str(move.failed) in move.sentence()
        journal.append({"event": "note", "n": 2})  # the runner appends it again, there
        journal.close()
        moved = inspect_journal(fallback / "R.journal.jsonl")
        assert [e["n"] for e in moved.events] == [0, 1, 2] and moved.problem is None
        assert [e["n"] for e in journal.events()] == [0, 1, 2]
        origin = (fallback / "ORIGIN").read_text()
        assert origin.startswith(f"{records}\n\nJournals of the drctl records directory {records}")


def test_a_journal_reopened_cuts_a_torn_line_and_goes_on_after_its_events(
    tmp_path: Path,
) -> None:
    """A resumed run reopens its journal (``Journal.reopen``): the events so far are read, a
    line the killed process left half-written is cut, the appends follow, and every event is
    read back, by the journal and by the readers."""
    path = tmp_path / "R.journal.jsonl"
    whole = b'{"event": "run_started", "n": 0}\n{"event": "note", "n": 1}\n'
    torn = b'{"event": "step", "to'
    path.write_bytes(whole + torn)
    assert inspect_journal(path).problem is not None  # cut short, as a killed run leaves it
    journal = Journal.reopen(path)
    assert journal.cut == len(torn) and path.read_bytes() == whole
    assert [e["n"] for e in journal.events()] == [0, 1]
    journal.append({"event": "note", "n": 2})
    journal.close()
    reading = inspect_journal(path)
    assert reading.problem is None and [e["n"] for e in reading.events] == [0, 1, 2]
    assert [e["n"] for e in journal.events()] == [0, 1, 2]
    again = Journal.reopen(path)  # a whole journal: nothing is cut
    assert again.cut == 0 and len(again.events()) == 3
    again.close()


@needs_root
def test_a_reopened_journal_that_moves_takes_every_event_along(tmp_path: Path) -> None:
    fallback = tmp_path / "fallback"
    with small_disk(tmp_path / "records", "64k") as records:
        path = records / "C.journal.jsonl"
        path.write_bytes(b'{"event": "run_started", "n": 0}\n{"event": "note", "n": 1}\n')
        journal = Journal.reopen(path, fallback=[fallback])
        fill(records)
        with pytest.raises(JournalMoved) as caught:
            journal.append({"event": "note", "n": 2, "pad": "x" * 8192})
        assert caught.value.move.events == 2  # those written before it was reopened
        journal.append({"event": "note", "n": 2})
        journal.close()
        moved = inspect_journal(fallback / "C.journal.jsonl")
        assert [e["n"] for e in moved.events] == [0, 1, 2] and moved.problem is None


@needs_root
def test_a_journal_that_no_place_takes_goes_on_in_memory(tmp_path: Path) -> None:
    with small_disk(tmp_path / "records", "64k") as records:
        journal = Journal(records / "M.journal.jsonl", fallback=[])
        journal.append({"event": "run_started"})
        fill(records)
        with pytest.raises(JournalMoved) as caught:
            journal.append({"event": "note", "pad": "x" * 8192})
        assert caught.value.move.path is None and journal.path is None
        assert "it is kept in memory only" in caught.value.move.sentence()
        journal.append({"event": "note", "pad": "x" * 8192})  # never raises again
        assert [e["event"] for e in journal.events()] == ["run_started", "note"]
        journal.close()


@needs_root
def test_the_fallback_is_on_another_file_system_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FALLBACK_ENV, raising=False)
    uid = os.geteuid()
    with small_disk(tmp_path / "other") as other:
        monkeypatch.setenv("TMPDIR", str(other))
        on_root_fs = fallback_dirs(tmp_path / "records")  # /var/tmp is on this device
        assert [d.parent for d in on_root_fs] == [
            other / f"drctl-journals-{uid}",
            Path("/var/tmp") / f"drctl-journals-{uid}",
        ]
        on_tmpfs = fallback_dirs(other / "records")
        assert [d.parent for d in on_tmpfs] == [
            Path("/var/tmp") / f"drctl-journals-{uid}",
            other / f"drctl-journals-{uid}",
        ]
        assert on_tmpfs[0].name != on_root_fs[0].name  # one directory per records directory


# -- refused up front, on the lab ------------------------------------------------------------------


def _lab(home: Path) -> AnyLab:
    any_lab = AnyLab(home, "lab")
    any_lab.wait_streaming()
    return any_lab


def _pids(home: Path) -> dict[str, int | None]:
    from drills.lab.onehost import Lab

    return {n.name: n.pid for n in Lab(home).status()}


@needs_root
def test_a_run_is_refused_when_the_records_disk_has_no_room(lab: Path, tmp_path: Path) -> None:
    any_lab = _lab(lab)
    roles, pids = any_lab.roles_now(), _pids(lab)
    with small_disk(lab / "records") as records:
        result = drctl("run", "pg-switchover", "--env", "lab", env={FALLBACK_ENV: str(tmp_path)})
        assert result.returncode == 3, result.stdout + result.stderr
        said = " ".join((result.stdout + result.stderr).split())
        assert f"the records directory {records} has 256.0 KiB free" in said
        assert "a run needs 16.0 MiB" in said and "nothing was changed" in said
        assert "Traceback" not in result.stderr
        assert list(records.iterdir()) == []  # no journal, no store, no probe
        # The Runner refuses it too, when called without the CLI (a Prefect flow does).
        with pytest.raises(RefusedError, match=r"has 256\.0 KiB free"):
            Runner(RunRequest(playbook="pg-switchover", environment="lab")).run()
        assert list(records.iterdir()) == []
    assert [h for h in lock_holders(lab / "locks") if h[0] == "lab"] == []
    assert any_lab.roles_now() == roles and _pids(lab) == pids


@needs_root
def test_a_run_is_refused_when_the_records_directory_is_read_only(
    lab: Path, tmp_path: Path
) -> None:
    any_lab = _lab(lab)
    roles, pids = any_lab.roles_now(), _pids(lab)
    with small_disk(lab / "records", "4m") as records:
        read_only(records)
        result = drctl(
            "run",
            "pg-switchover",
            "--env",
            "lab",
            env={FALLBACK_ENV: str(tmp_path), MIN_FREE_ENV: "64k"},
        )
        assert result.returncode == 3, result.stdout + result.stderr
        said = " ".join((result.stdout + result.stderr).split())
        assert f"the records directory {records} is read-only" in said
        assert "could not keep its journal there" in said and "nothing was changed" in said
        assert "Traceback" not in result.stderr
    assert any_lab.roles_now() == roles and _pids(lab) == pids
    assert not (tmp_path / "fallback").exists()


# -- the disk fills during a switchover ---------------------------------------------------------


def _fill_after_preconditions(records: Path, out: dict[str, Any]) -> None:
    """Wait for a journal whose preconditions were journaled, then fill the disk."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for journal in records.glob("*.journal.jsonl"):
            with contextlib.suppress(OSError):
                if b'"event": "preconditions"' in journal.read_bytes():
                    out["filler"] = fill(records)
                    out["run_id"] = journal.name.split(".")[0]
                    return
        time.sleep(0.005)


@needs_root
def test_the_disk_filling_during_a_switchover_moves_the_journal_and_rolls_back(
    lab: Path, tmp_path: Path
) -> None:
    any_lab = _lab(lab)
    primary = any_lab.role_of("primary")
    fallback = tmp_path / "fallback"
    env = {FALLBACK_ENV: str(fallback), MIN_FREE_ENV: "128k"}
    with small_disk(lab / "records", "1m") as records:
        out: dict[str, Any] = {}
        filler = threading.Thread(target=_fill_after_preconditions, args=(records, out))
        filler.start()
        result = drctl("run", "pg-switchover", "--env", "lab", env=env)
        filler.join(5)
        said = result.stdout + result.stderr
        assert "run_id" in out, said
        run_id = out["run_id"]
        moved = next(fallback.glob(f"*/{run_id}.journal.jsonl"))
        # Rolled back, so failed (exit 1); the journal's move is said on stderr and in the end.
        assert result.returncode == 1, said
        assert "Traceback" not in result.stderr
        stderr = " ".join(result.stderr.split())
        assert (
            f"drctl: the journal could not be written to {records}/{run_id}.journal.jsonl "
            f"(ENOSPC: No space left on device); it is kept at {moved}"
        ) in stderr
        stdout = " ".join(result.stdout.split())
        assert "the drill was rolled back" in stdout and str(moved) in stdout
        assert f"{moved} (journal; not sealed yet)" in stdout
        # The fallback journal holds every event, the rollback included.
        events = inspect_journal(moved).events
        kinds = [e["event"] for e in events]
        assert kinds[:4] == ["run_started", "milestone", "roles", "preconditions"]
        assert kinds[-1] == "run_ended" and events[-1]["rolled_back"] is True
        steps = [e["step"] for e in events if e["event"] == "step"]
        assert steps[0]["id"] == "stop_primary" and steps[0]["status"] == "failed"
        assert f"it is kept at {moved}" in steps[0]["reason"]
        undo = [s for s in steps if s["phase"] == "rollback"]
        assert [s["id"] for s in undo] == ["restart_old_primary"]
        assert undo[0]["status"] == "passed"
        notes = [e["text"] for e in events if e["event"] == "note"]
        assert any(str(moved) in n for n in notes)
        # One primary, the same as before, and its standby streaming again.
        any_lab.wait_streaming()
        assert any_lab.role_of("primary") == primary
        # Readable while unsealed, from the fallback journal.
        shown = drctl("records", "show", run_id, "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        record = json.loads(shown.stdout)
        assert record["status"] == "failed" and record["rolled_back"] is True
        assert any(str(moved) in n for n in record["notes"])
        status = drctl("status", env=env)
        assert str(moved) in " ".join(status.stdout.split())
        # No room yet: sealing is refused, and the journal stays where it is.
        refused = drctl("records", "seal", run_id, env=env)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert str(moved) in " ".join(refused.stderr.split())
        pending = drctl("records", "seal", "--pending", env=env)
        assert pending.returncode == 3, pending.stdout + pending.stderr
        assert "nothing was sealed" in pending.stderr and "Traceback" not in pending.stderr
        assert str(moved) in " ".join(pending.stderr.split())
        assert moved.exists()
        # Room again: sealed from the fallback journal, which is then removed.
        out["filler"].unlink()
        sealed = drctl("records", "seal", run_id, env=env)
        assert sealed.returncode == 0, sealed.stdout + sealed.stderr
        assert f"sealed {run_id} (failed)" in sealed.stdout
        assert not moved.exists()
        assert inspect_journal(records / f"{run_id}.journal.jsonl").events == events
        verified = drctl("records", "verify", run_id, env=env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        store = RecordStore(records, lab / "locks")
        assert store.sealed(run_id).record.rolled_back is True


# -- readers and damaged journals ---------------------------------------------------------------


def started(run_id: str) -> dict[str, Any]:
    return {
        "event": "run_started",
        "at": "2026-11-27T00:00:00.000Z",
        "offset": 0.0,
        "run_id": run_id,
        "mode": "drill",
        "playbook": {"name": "p", "sha256": "0" * 64},
        "environment": {"name": "e"},
        "objectives": {},
    }


def test_readers_name_an_empty_and_a_truncated_journal_and_go_on(tmp_path: Path) -> None:
    home = tmp_path / "home"
    records = home / "records"
    records.mkdir(parents=True)
    good = "20261127T000000Z-p-e-good"
    journal = Journal(records / f"{good}.journal.jsonl")
    journal.append(started(good))
    journal.append({"event": "run_ended", "at": "x", "offset": 1.0, "status": "passed",
                    "reason": "every step passed its checks"})  # fmt: skip
    journal.close()
    empty = records / "20261127T000001Z-p-e-empt.journal.jsonl"
    empty.write_bytes(b"")
    cut = records / "20261127T000002Z-p-e-cut0.journal.jsonl"
    cut.write_text(json.dumps(started("20261127T000002Z-p-e-cut0"))[:40])  # cut in its first line
    torn = records / "20261127T000003Z-p-e-torn.journal.jsonl"
    torn.write_text(json.dumps(started("20261127T000003Z-p-e-torn")) + '\n{"event": "st')
    env = {FALLBACK_ENV: str(tmp_path / "fallback")}

    listed = drctl("records", "list", "--json", home=home, env=env)
    assert listed.returncode == 0, listed.stderr
    ids = [r["id"] for r in json.loads(listed.stdout)]
    assert ids == ["20261127T000003Z-p-e-torn", good]  # the torn one is an interrupted run
    said = " ".join(listed.stderr.split())
    assert f"journal {empty}: it is empty (0 bytes)" in said
    assert f"journal {cut}: it is cut short at line 1" in said
    assert f"journal {torn}: it is cut short at line 2" in said and "1 event(s) before" in said

    for args in (["records", "verify"], ["records", "status"], ["status"]):
        result = drctl(*args, home=home, env=env)
        assert result.returncode != 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, args
        named = " ".join((result.stdout + result.stderr).split())
        assert str(empty) in named and "empty" in named, (args, named)
        assert str(cut) in named and "cut short" in named, (args, named)

    status = json.loads(drctl("status", "--json", home=home, env=env).stdout)
    damaged = {d["path"]: d["problem"] for d in status["journals"]["damaged"]}
    assert set(damaged) == {str(empty), str(cut), str(torn)}

    # Sealing what can be sealed leaves the damaged ones where they are, named.
    sealed = drctl("records", "seal", "--pending", home=home, env=env)
    assert sealed.returncode == 0, sealed.stderr
    assert f"sealed {good}" in sealed.stdout and "torn" in sealed.stdout
    assert empty.exists() and cut.exists()
    one = drctl("records", "seal", empty.name.split(".")[0], home=home, env=env)
    assert one.returncode == 2 and str(empty) in " ".join(one.stderr.split())
