"""``drctl --version`` and ``drctl status``: a held lock, a stale one, the labs, the Prefect API."""

from __future__ import annotations

import json
from pathlib import Path

from drills.records.lock import EnvironmentLock
from tests.helpers import drctl


def test_version_is_the_package_version() -> None:
    import drills

    shown = drctl("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"drctl {drills.__version__}"


def test_status_shows_a_running_lock_and_a_stale_one(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    # A lock a dead run left: it names the run, nobody holds it.
    (locks / "dead-env.lock").write_text(
        json.dumps({"run_id": "r-dead", "pid": 1, "host": "h", "since": "2026-11-30T00:00:00Z"})
    )
    held = EnvironmentLock(locks, "busy-env")
    held.acquire("r-busy", 1_764_547_200.0)
    try:
        shown = drctl("status", "--json", home=tmp_path, env={"PREFECT_API_URL": ""})
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        by_env = {lock["environment"]: lock for lock in data["locks"]}
        assert by_env["busy-env"]["state"] == "running" and by_env["busy-env"]["run_id"] == "r-busy"
        assert by_env["dead-env"]["state"] == "left by a run that died"
        assert [r["run_id"] for r in data["runs_in_progress"]] == ["r-busy"]
        assert data["labs"] == []
        text = drctl("status", home=tmp_path, env={"PREFECT_API_URL": ""}).stdout
        assert "drctl unlock dead-env" in text and "r-busy" in text
    finally:
        held.release()
