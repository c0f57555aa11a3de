"""Session-wide set-up: one DRCTL_HOME, one Prefect test harness, one lab for the drill tests.

Everything started here is stopped here, by the fixture that started it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# One home for the whole session, reachable by the lab's unprivileged OS user when we are root
# (pytest's own tmp dirs are 0700). Set before any drctl module reads it.
SESSION_HOME = Path(tempfile.mkdtemp(prefix="drctl-test-home-", dir="/tmp"))
SESSION_HOME.chmod(0o755)
os.environ["DRCTL_HOME"] = str(SESSION_HOME)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def pytest_unconfigure(config: pytest.Config) -> None:
    from drills.lab.onehost import Lab
    from drills.lab.twosite import TwoSiteLab

    try:
        try:
            Lab(SESSION_HOME).down()
        finally:
            TwoSiteLab(SESSION_HOME).down()
    finally:
        shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def home() -> Path:
    return SESSION_HOME


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect test harness per session (it takes ~25 s to build its database)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def lab(home: Path) -> Iterator[Path]:
    """The session's lab (environment `lab`), torn down at the end of the session."""
    from drills.lab.onehost import Lab

    lab = Lab(home)
    lab.up()
    try:
        yield home
    finally:
        lab.down()


@pytest.fixture(scope="session")
def lab_ssh(home: Path) -> Iterator[Path]:
    """The session's two-site lab (environment `lab-ssh`, reached over SSH), in the same home
    as the one-host lab; torn down at the end of the session. Skipped where sshd cannot run."""
    from drills.lab.sshd import sshd_available
    from drills.lab.twosite import TwoSiteLab

    problem = sshd_available()
    if problem is not None:
        pytest.skip(problem)
    lab = TwoSiteLab(home)
    lab.up()
    try:
        yield home
    finally:
        lab.down()


@pytest.fixture(params=["lab", "lab-ssh"])
def any_lab(request: pytest.FixtureRequest) -> object:
    """Each lab in turn: the one-host lab, then the two-site lab reached only over SSH. A test
    that takes it runs the same playbook unchanged on both."""
    from tests.labs import AnyLab

    fixture = "lab" if request.param == "lab" else "lab_ssh"
    return AnyLab(request.getfixturevalue(fixture), request.param)
