"""Helpers for tests (no side effects on import, unlike conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
