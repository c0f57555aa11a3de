"""Helpers for tests (no side effects on import, unlike conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

REPO = Path(__file__).resolve().parent.parent


def drctl(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real console script, as a user would."""
    exe = Path(sys.executable).parent / "drctl"
    full_env = env if env is not None and "DRCTL_HOME" in env else {**os.environ, **(env or {})}
    if home is not None:
        full_env["DRCTL_HOME"] = str(home)
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def run_in_thread(request: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run the drill flow in a thread; ``out`` gets the record id, or the error it raised."""
    from flows.drill import run_drill

    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["id"] = run_drill(request)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def paused_flow_run(name_part: str, deadline: float = 90) -> UUID:
    """The id of the paused flow run whose name contains ``name_part``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    end = time.monotonic() + deadline
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            for run in runs:
                if name_part in run.name:
                    return run.id
            time.sleep(0.2)
    raise AssertionError(f"no paused flow run named like {name_part!r} within {deadline:g}s")
