"""Benchmark: ``drctl run`` without a Prefect server, from the command to its first step
(target: <= 1 s), against the path it replaced (the flow on Prefect's temporary API) and the floors
under it.

Run it from the repository root::

    .venv/bin/python bench/cli_start.py [--rounds 7] [--baseline-rounds 2]

It makes a throw-away ``DRCTL_HOME`` under /tmp (removed at the end, on errors too) and a one-step
drill on one local node (``true``; no database, so what is measured is drctl's start, not a
server's answer). Each round starts ``drctl run PLAYBOOK --env ENV --json`` as a new process, as an
on-call engineer does, and takes the time from just before the process is started to the first
step's ``started_at`` in the record (the runner's own clock):

1. **No server configured** (no ``PREFECT_API_URL``): the drill runs at once without Prefect.
2. **The configured server does not answer** (``PREFECT_API_URL`` on a free 127.0.0.1 port: the
   connection is refused at once; a server that does not answer at all costs up to
   ``DRCTL_PREFECT_HEALTH_TIMEOUT``, 1 s by default, more).
3. **Baseline: Prefect's temporary API** (``DRCTL_PREFECT_EPHEMERAL=1``), what every ``drctl run``
   did before: the flow waits for a temporary Prefect server to start. The first round builds its
   database; the median is of the later rounds.

Floors, measured in the same run: the interpreter's start (``python -c pass``), and importing the
runner and building the catalogue of actions and checks (every engine: ``default_catalogue()``),
which any drill pays before it can act.

The exit code is 0 whatever the figures are; non-zero only on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_drill(where: Path) -> tuple[Path, Path]:
    env = where / "cli-env.yaml"
    env.write_text(
        yaml.safe_dump(
            {"name": "cli-env", "nodes": {"app1": {"role": "local", "host": "127.0.0.1"}}}
        )
    )
    playbook = where / "cli-start.yaml"
    playbook.write_text(
        yaml.safe_dump(
            {
                "name": "cli-start",
                "version": 1,
                "kind": "inspection",
                "title": {"en": "CLI start", "zh": "命令启动"},
                "roles": ["local"],
                "steps": [
                    {
                        "id": "first",
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


def one_run(argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, object]]:
    began = time.time()
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise RuntimeError(f"drctl run failed ({result.returncode}): {result.stderr[-2000:]}")
    record = json.loads(result.stdout)
    steps = record["steps"]
    at = datetime.fromisoformat(str(steps[0]["started_at"]).replace("Z", "+00:00")).timestamp()
    return at - began, record


def wall(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline-rounds", type=int, default=2)
    args = parser.parse_args()

    where = Path(tempfile.mkdtemp(prefix="drctl-bench-cli-", dir="/tmp"))
    try:
        playbook, environment = write_drill(where)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRCTL_"))}
        base.update(
            DRCTL_HOME=str(where / "home"),
            PREFECT_HOME=str(where / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        )
        argv = [str(BIN / "drctl"), "run", str(playbook), "--env", str(environment), "--json"]
        one_run(argv, base)  # the first run makes the site's signing key: not counted
        dead = f"http://127.0.0.1:{free_port()}/api"
        kinds = [
            ("no Prefect server configured", base, args.rounds),
            (
                "configured server refuses (127.0.0.1)",
                {**base, "PREFECT_API_URL": dead},
                args.rounds,
            ),
            (
                "baseline: Prefect's temporary API",
                {**base, "DRCTL_PREFECT_EPHEMERAL": "1"},
                args.baseline_rounds + 1,
            ),
        ]
        medians: dict[str, float] = {}
        for label, env, rounds in kinds:
            times = []
            for index in range(rounds):
                took, record = one_run(argv, env)
                orchestrator = record["orchestrator"]
                assert isinstance(orchestrator, dict)
                if label.startswith("baseline") and index == 0:
                    continue  # it built the temporary API's database
                times.append(took)
            times.sort()
            medians[label] = statistics.median(times)
            print(
                f"  {label:<40} first step: median {medians[label]:6.3f}s  min {times[0]:6.3f}s  "
                f"max {times[-1]:6.3f}s   (prefect_api: {orchestrator.get('prefect_api')})"
            )
        python = [wall([sys.executable, "-c", "pass"], base) for _ in range(5)]
        engines = [
            wall(
                [
                    sys.executable,
                    "-c",
                    "import drills.engine.runner; from drills.engine.catalogue import "
                    "default_catalogue; default_catalogue()",
                ],
                base,
            )
            for _ in range(3)
        ]
        print(f"  floor: the interpreter's start             {statistics.median(python):6.3f}s")
        print(f"  floor: the runner and every engine loaded  {statistics.median(engines):6.3f}s")
        print()
        for label in ("no Prefect server configured", "configured server refuses (127.0.0.1)"):
            verdict = "PASS" if medians[label] <= TARGET else "FAIL"
            print(f"{verdict}: {label}: median {medians[label]:.3f}s (target <= {TARGET:g}s)")
        baseline = medians["baseline: Prefect's temporary API"]
        ratio = medians["no Prefect server configured"] / baseline
        print(f"ratio no server / Prefect's temporary API: {ratio:.2f}")
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
