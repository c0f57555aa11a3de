"""The record store on PostgreSQL (``DRCTL_RECORDS_URL``), on a scratch server of its own.

The module starts its own lab (a PostgreSQL primary and standby on 127.0.0.1) in its own home
and takes it down at the end; it never touches the session's lab.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drills.lab.onehost import Lab
from drills.records.store import RecordStore
from tests.helpers import drctl
from tests.test_records_support import (
    PASSED_STEPS,
    environment_file,
    home_env,
    make_home,
    outcome_records,
    playbook_file,
    run,
)

pytestmark = [pytest.mark.lab]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[tuple[Path, str]]:
    home = make_home()
    lab = Lab(home)
    try:
        up = lab.up()
        primary = next(n for n in up.nodes if n.role == "primary")
        url = f"postgresql://postgres@127.0.0.1:{primary.port}/postgres"
        yield home, url
    finally:
        lab.down()
        shutil.rmtree(home, ignore_errors=True)


def test_records_seal_verify_and_stay_append_only_in_postgresql(
    pg_url: tuple[Path, str], tmp_path: Path
) -> None:
    _, url = pg_url
    home = make_home()
    try:
        with home_env(home, DRCTL_RECORDS_URL=url):
            records = outcome_records(home)
            store = RecordStore(home / "records", home / "locks")
            assert store.location.startswith("postgresql: ")
            assert [e.id for e in store.entries()] == [r.id for r in records.values()]
            verdict = store.verify()
            assert verdict.ok and verdict.bodies == 4 and verdict.evidence == 4
            assert store.sealed(records["failed"].id).record == records["failed"]
        assert not (home / "records" / "records.sqlite3").exists()

        listed = drctl("records", "list", "--json", home=home, env={"DRCTL_RECORDS_URL": url})
        assert listed.returncode == 0, listed.stderr
        assert {r["id"] for r in json.loads(listed.stdout)} == {r.id for r in records.values()}
        bundle = tmp_path / "bundle"
        exported = drctl(
            "records", "export", records["passed"].id, "--out", str(bundle),
            home=home, env={"DRCTL_RECORDS_URL": url},
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        assert drctl("records", "verify", "--bundle", str(bundle), home=tmp_path).returncode == 0

        with psycopg.connect(url, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute("UPDATE drctl_records SET body = 'x' WHERE seq = 1")
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute("DELETE FROM drctl_records WHERE seq = 2")
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute("TRUNCATE drctl_evidence")
            # Whoever owns the database can still switch the triggers off: the chain shows it.
            conn.execute("ALTER TABLE drctl_records DISABLE TRIGGER drctl_records_append_only")
            conn.execute(
                "UPDATE drctl_records SET body = replace(body, 'every step passed', "
                "'every step passed!') WHERE seq = 1"
            )
        bad = drctl("records", "verify", home=home, env={"DRCTL_RECORDS_URL": url})
        assert bad.returncode == 1
        assert f"FAIL seq 1, record {records['passed'].id}: its content changed" in bad.stderr
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS drctl_records, drctl_evidence, drctl_head")
        shutil.rmtree(home, ignore_errors=True)


def test_an_unreachable_store_keeps_the_run_and_it_is_sealed_explicitly_later(
    pg_url: tuple[Path, str],
) -> None:
    _, url = pg_url
    home = make_home()
    try:
        env = environment_file(home)
        with home_env(home, DRCTL_RECORDS_URL="postgresql://postgres@127.0.0.1:9/postgres"):
            record = run(playbook_file(home, "offline", PASSED_STEPS), env)
            assert record.status == "passed"  # the drill is not lost for want of its store
            assert (home / "records" / f"{record.id}.journal.jsonl").exists()
            down = drctl("records", "show", record.id, "--json", home=home)
            assert down.returncode == 0 and json.loads(down.stdout)["status"] == "passed"
            assert "cannot reach the record store" in down.stderr
        listed = drctl("records", "list", "--json", home=home, env={"DRCTL_RECORDS_URL": url})
        assert listed.returncode == 0, listed.stderr
        assert record.id in listed.stdout
        with home_env(home, DRCTL_RECORDS_URL=url):
            store = RecordStore(home / "records", home / "locks")
            assert list(store.entries()) == [], "reading the records sealed one"
            assert store.unsealed() == [record.id]
        sealed = drctl("records", "seal", "--pending", home=home, env={"DRCTL_RECORDS_URL": url})
        assert sealed.returncode == 0 and record.id in sealed.stdout, sealed.stderr
        with home_env(home, DRCTL_RECORDS_URL=url):
            store = RecordStore(home / "records", home / "locks")
            assert [e.id for e in store.entries()] == [record.id]
            assert store.verify().ok
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS drctl_records, drctl_evidence, drctl_head")
        shutil.rmtree(home, ignore_errors=True)
