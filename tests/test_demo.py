"""The README's main command, as a new user runs it: `drctl demo` on a fresh DRCTL_HOME, with
Prefect's own temporary API (no test harness), leaving nothing running behind it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers import drctl

pytestmark = [pytest.mark.lab, pytest.mark.prefect]


def processes_under(home: Path) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if str(home) in cmdline or cwd.startswith(str(home)):
            found.append(f"{entry}: {cmdline[:120]}")
    return found


def test_demo_runs_both_drills_and_leaves_nothing_running() -> None:
    home = Path(tempfile.mkdtemp(prefix="drctl-demo-test-", dir="/tmp"))
    home.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "DRCTL_HOME": str(home),
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        }
    )
    try:
        result = drctl("demo", env=env, timeout=600)
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        assert "Traceback" not in out + result.stderr
        for expected in (
            "pg-switchover",
            "pg-failover",
            "write outage",
            "lost writes",
            f"records: {home / 'records'}",
            "lab down: stopped HIS stand-in (pid",
            "pg1 (pid",
        ):
            assert expected in out
        listed = json.loads(drctl("records", "list", "--json", env=env).stdout)
        # Both drills, newest first by start time (without Prefect both can start within one
        # second, and a run id's stamp has whole seconds only).
        assert sorted(r["playbook"] for r in listed) == ["pg-failover", "pg-switchover"]
        starts = [r["started_at"] for r in listed]
        assert starts == sorted(starts, reverse=True) or len(set(s[:19] for s in starts)) == 1
        assert all(r["status"] == "passed" for r in listed)
        for summary in listed:
            record = json.loads(drctl("records", "show", summary["id"], "--json", env=env).stdout)
            # No Prefect server here: the CLI runs the drill at once, without an API, and the
            # record says so (flows/direct.py).
            assert record["orchestrator"]["prefect_api"] == "none"
            assert record["measurements"]["lost_writes"] is not None
        assert "there is no lab" in drctl("lab", "down", env=env).stdout
        assert processes_under(home) == []
    finally:
        drctl("lab", "down", env=env)
        shutil.rmtree(home, ignore_errors=True)
