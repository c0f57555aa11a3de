"""No Prefect server: the CLI runs the drill at once, without Prefect, and the record says so.

The configured server is a URL on a free 127.0.0.1 port where nothing listens (or none is
configured). The drill needs no database (one local node), so this runs without the lab. With
``DRCTL_PREFECT_EPHEMERAL=1`` and no server configured, it runs on Prefect's temporary API, as
``drctl run`` did before.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from drills.cli.common import configured_prefect_api_url, prefect_server_problem
from tests.helpers import drctl

pytestmark = [pytest.mark.prefect]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fresh_home() -> Iterator[Path]:
    """Its own DRCTL_HOME (and so its own Prefect home, should one be needed)."""
    home = Path(tempfile.mkdtemp(prefix="drctl-fallback-test-", dir="/tmp"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def local_drill(where: Path) -> tuple[Path, Path]:
    env = where / "fallback-env.yaml"
    env.write_text(
        yaml.safe_dump(
            {"name": "fallback-env", "nodes": {"app1": {"role": "local", "host": "127.0.0.1"}}}
        )
    )
    playbook = where / "fallback-test.yaml"
    playbook.write_text(
        yaml.safe_dump(
            {
                "name": "fallback-test",
                "version": 1,
                "kind": "inspection",
                "title": {"en": "Fallback test", "zh": "回退测试"},
                "roles": ["local"],
                "steps": [
                    {
                        "id": "look",
                        "action": "shell",
                        "target": "local",
                        "with": {"command": "true"},
                    }
                ],
            },
            allow_unicode=True,
        )
    )
    return playbook, env


def test_health_check_of_the_configured_url(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert prefect_server_problem(prefect_api) is None
    dead = f"http://127.0.0.1:{free_port()}/api"
    problem = prefect_server_problem(dead, timeout=1)
    assert problem is not None and problem.startswith("ConnectError")
    monkeypatch.setenv("PREFECT_API_URL", dead)
    assert configured_prefect_api_url() == dead


def run_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "DRCTL_HOME": str(home),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **extra,
        }
    )
    return env


def first_step_after(record: dict[str, object], began: float) -> float:
    steps = record["steps"]
    assert isinstance(steps, list) and steps
    at = str(steps[0]["started_at"]).replace("Z", "+00:00")
    return datetime.fromisoformat(at).timestamp() - began


def test_no_prefect_server_runs_at_once_without_prefect_and_the_record_says_so(
    fresh_home: Path,
) -> None:
    playbook, environment = local_drill(fresh_home)
    dead = f"http://127.0.0.1:{free_port()}/api"
    began = time.time()
    result = drctl(
        "run",
        str(playbook),
        "--env",
        str(environment),
        "--json",
        env=run_env(fresh_home, PREFECT_API_URL=dead),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert f"the Prefect server at {dead} did not answer" in said
    assert "running the drill without Prefect (the record says so)" in said
    assert "Traceback" not in result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "passed"
    orchestrator = record["orchestrator"]
    assert orchestrator["prefect_api"] == "none"
    assert orchestrator["watched_by"] == "drctl, in process (no Prefect API)"
    assert orchestrator["prefect_fallback"].startswith(f"server at {dead} did not answer: ")
    assert "ConnectError" in orchestrator["prefect_fallback"]
    assert "prefect_flow_run_id" not in orchestrator  # no Prefect flow run
    assert orchestrator["os_user"] == getpass.getuser()
    assert record["request"]["operator"] == getpass.getuser()  # the CLI's default: you
    # Nothing waited for a Prefect API to start (bench/cli_start.py measures it closely).
    assert first_step_after(record, began) < 10


def test_no_server_configured_runs_without_prefect_unless_asked_for_the_temporary_api(
    fresh_home: Path,
) -> None:
    playbook, environment = local_drill(fresh_home)
    args = ("run", str(playbook), "--env", str(environment), "--json")
    direct = drctl(*args, env=run_env(fresh_home, PREFECT_HOME=str(fresh_home / "p-none")))
    assert direct.returncode == 0, direct.stdout + direct.stderr
    orchestrator = json.loads(direct.stdout)["orchestrator"]
    assert orchestrator["prefect_api"] == "none"
    assert orchestrator["prefect_fallback"] == "no Prefect server is configured (PREFECT_API_URL)"
    ephemeral = drctl(
        *args,
        env=run_env(
            fresh_home, PREFECT_HOME=str(fresh_home / "p-eph"), DRCTL_PREFECT_EPHEMERAL="1"
        ),
    )
    assert ephemeral.returncode == 0, ephemeral.stdout + ephemeral.stderr
    orchestrator = json.loads(ephemeral.stdout)["orchestrator"]
    assert orchestrator["prefect_api"] == "ephemeral"
    assert orchestrator["prefect_flow_run_id"]  # it did run as a Prefect flow
    assert orchestrator["watched_by"] == "prefect"


def test_a_dead_server_in_the_prefect_profile_falls_back_too(fresh_home: Path) -> None:
    playbook, environment = local_drill(fresh_home)
    dead = f"http://127.0.0.1:{free_port()}/api"
    prefect_home = fresh_home / "prefect"
    prefect_home.mkdir(exist_ok=True)
    (prefect_home / "profiles.toml").write_text(
        f'active = "team"\n\n[profiles.team]\nPREFECT_API_URL = "{dead}"\n'
    )
    result = drctl(
        "run",
        str(playbook),
        "--env",
        str(environment),
        "--json",
        env=run_env(fresh_home, PREFECT_HOME=str(prefect_home)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    orchestrator = json.loads(result.stdout)["orchestrator"]
    assert orchestrator["prefect_api"] == "none"
    assert orchestrator["prefect_fallback"].startswith(f"server at {dead} did not answer")
