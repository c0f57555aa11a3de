"""The lab's application tier: the HIS stand-in, a real HTTP service over real PostgreSQL, and
the checks that use it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from drills.engine.checking import run_check
from drills.engine.loader import resolve_environment
from drills.engine.targets import Targets
from drills.lab import his
from drills.lab.onehost import Lab
from drills.model.clock import Clock
from tests.helpers import drctl

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def app(lab: Path) -> str:
    env = resolve_environment("lab")
    node = env.nodes["app"]
    assert node.role == "app" and node.http is not None
    return node.http.base_url


def test_lab_up_starts_the_stand_in_and_it_registers_patients(lab: Path, app: str) -> None:
    assert app.startswith("http://127.0.0.1:")
    assert httpx.get(f"{app}/health", trust_env=False).json() == {"status": "ok"}
    created = httpx.post(
        f"{app}/registrations",
        json={"patient_name": "张三", "department": "儿科"},
        trust_env=False,
    )
    assert created.status_code == 201
    body = created.json()
    back = httpx.get(f"{app}/registrations/{body['id']}", trust_env=False).json()
    assert back["patient_name"] == "张三" and back["department"] == "儿科"
    primary = next(n for n in Lab(lab).status() if n.role == "primary")
    assert back["served_by_port"] == primary.port  # it follows the primary
    assert httpx.get(f"{app}/registrations/999999999", trust_env=False).status_code == 404
    status = json.loads(drctl("lab", "status", "--json").stdout)
    assert status["app"]["url"] == app and status["app"]["health"] == 200
    bad = httpx.post(f"{app}/registrations", json={"nobody": 1}, trust_env=False)
    assert bad.status_code == 400


def targets_for(*roles: str) -> Targets:
    env = resolve_environment("lab")
    live = {n.role: n.name for n in Lab(Path(os.environ["DRCTL_HOME"])).status()}
    mapping = {r: ("app" if r == "app" else live[r]) for r in roles}
    return Targets(env, mapping)


def test_http_checks_observe_status_and_latency(lab: Path, app: str) -> None:
    targets = targets_for("app")
    try:
        ok = run_check("http.answers", "app", {}, targets, Clock())
        assert ok.verdict == "held" and ok.observed["status"] == 200
        wrong = run_check("http.answers", "app", {"path": "/nowhere"}, targets, Clock())
        assert wrong.verdict == "deviated" and wrong.observed["status"] == 404
        impossible = run_check("http.answers", "app", {"max_latency": "1ms"}, targets, Clock())
        assert impossible.verdict == "deviated" and "within 1 ms" in impossible.expected
        roundtrip = run_check("his.registration_roundtrip", "app", {}, targets, Clock())
        assert roundtrip.held and "written and read back" in roundtrip.observed
    finally:
        targets.close()


def test_the_roundtrip_fails_while_no_database_takes_writes(lab: Path, app: str) -> None:
    """With the primary stopped the application answers 503, and the check says so."""
    home = Path(os.environ["DRCTL_HOME"])
    primary = next(n for n in Lab(home).status() if n.role == "primary")
    env = resolve_environment("lab")
    pg = env.nodes[primary.name].postgres
    assert pg is not None
    from drills.executors.local import LocalExecutor

    ctl = [f"{pg.bin_dir}/pg_ctl", "-D", pg.data_dir]
    LocalExecutor().run([*ctl, "stop", "-m", "fast", "-w"], user=pg.os_user)
    targets = targets_for("app")
    try:
        result = run_check("his.registration_roundtrip", "app", {}, targets, Clock())
        assert result.verdict == "deviated"
        assert "HTTP 503" in result.observed
        health = run_check("http.answers", "app", {}, targets, Clock())
        assert health.observed["status"] == 503
    finally:
        targets.close()
        LocalExecutor().run(
            [*ctl, "start", "-w", "-l", pg.log_file or f"{pg.data_dir}.log"], user=pg.os_user
        )
    assert run_check("his.registration_roundtrip", "app", {}, targets_for("app"), Clock()).held


def test_the_stand_in_stops_with_the_lab(tmp_path: Path) -> None:
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="drctl-app-test-", dir="/tmp"))
    home.chmod(0o755)
    lab = Lab(home)
    try:
        lab.up()
        running = his.running(home / "lab" / "his.json")
        assert running is not None
        down = lab.down()
        assert f"HIS stand-in (pid {running.pid})" in down.stopped
        assert not Path(f"/proc/{running.pid}/cmdline").exists() or (
            b"drills.lab.his" not in Path(f"/proc/{running.pid}/cmdline").read_bytes()
        )
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{running.base_url}/health", timeout=1, trust_env=False)
    finally:
        lab.down()
        import shutil

        shutil.rmtree(home, ignore_errors=True)
