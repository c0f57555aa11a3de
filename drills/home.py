"""Where drctl keeps its state: one directory, ``DRCTL_HOME``.

Layout::

    $DRCTL_HOME/
      lab/            the lab's state file, data directories and logs
      environments/   environment files that ``--env NAME`` finds
      records/        one JSON record and one journal per run
      locks/          one lock file per environment
      prefect/        PREFECT_HOME for the ephemeral Prefect API, unless the user set one

By default it is the user's data directory (``~/.local/share/drctl``). For root it is
``/var/lib/drctl``: the lab's PostgreSQL then runs as an unprivileged system user, which must be
able to reach its data directories, and root's home directory is not reachable by other users.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def drctl_home() -> Path:
    configured = os.environ.get("DRCTL_HOME")
    if configured:
        home = Path(configured).expanduser().resolve()
    elif os.geteuid() == 0:
        home = Path("/var/lib/drctl")
    else:
        home = Path(platformdirs.user_data_dir("drctl", appauthor=False))
    home.mkdir(parents=True, exist_ok=True)
    return home


def subdir(name: str) -> Path:
    path = drctl_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
