"""`make faults`: every fault scenario on the one-host lab and on the two-site lab.

Each lab is brought up once, in a DRCTL_HOME of its own, reused across its scenarios (the pair
is put back between them) and taken down at the end; then nothing of it may be left running.
Prints a table (scenario, lab, what the record says, lost by the outside writer against counted
by the record, what was left running, the verdict) and ends with exactly one line::

    faults: N scenarios, N survived, N records complete, lost N counted N

Exit 0 only when every scenario survived its must-holds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def run_lab(env: str, only: list[str]) -> list[Any]:
    from tests.faults.scenarios import SCENARIOS
    from tests.faults.support import Context, Outcome, left_running, restore
    from tests.labs import AnyLab

    home = Path(tempfile.mkdtemp(prefix=f"drctl-faults-{env}-", dir="/tmp"))
    home.chmod(0o755)
    os.environ["DRCTL_HOME"] = str(home)
    outcomes: list[Outcome] = []
    lab: Any
    if env == "lab":
        from drills.lab.onehost import Lab

        lab = Lab(home)
    else:
        from drills.lab.sshd import sshd_available
        from drills.lab.twosite import TwoSiteLab

        problem = sshd_available()
        if problem is not None:
            print(f"{env}: not available here ({problem})", flush=True)
            return [Outcome("(two-site lab)", env, says=problem, available=False)]
        lab = TwoSiteLab(home)
    started = time.monotonic()
    try:
        lab.up()
        ctx = Context(AnyLab(home, env), home / "faults-tmp")
        ctx.tmp.mkdir()
        print(f"{env}: up in {time.monotonic() - started:.1f}s ({home})", flush=True)
        for scenario, labs in SCENARIOS:
            if env not in labs or (only and scenario.__name__ not in only):
                continue
            begun = time.monotonic()
            try:
                restore(ctx)
                outcome = scenario(ctx)
            except Exception as exc:
                outcome = Outcome(scenario.__name__, env, says=f"the scenario crashed: {exc}"[:70])
                outcome.problems.append(traceback.format_exc()[-700:])
            outcome.seconds = time.monotonic() - begun
            outcomes.append(outcome)
            verdict = "survived" if outcome.survived else "FAILED"
            print(f"  {outcome.seconds:5.1f}s {env:8} {outcome.scenario}: {verdict}", flush=True)
            for problem in outcome.problems:
                print(f"         - {problem.strip()[-700:]}", flush=True)
    finally:
        try:
            lab.down()
        finally:
            os.environ["DRCTL_HOME"] = str(home)
            ctx_left = left_running(Context(AnyLab(home, env), home))
            if ctx_left:
                print(f"{env}: left running after lab down: {ctx_left}", flush=True)
                outcomes.append(
                    Outcome("lab down: nothing left", env, says="; ".join(ctx_left)[:70])
                )
            shutil.rmtree(home, ignore_errors=True)
    print(f"{env}: {time.monotonic() - started:.1f}s in all", flush=True)
    return outcomes


def table(outcomes: list[Any]) -> str:
    rows = [("scenario", "lab", "the record says", "lost/counted", "left", "verdict")]
    for o in outcomes:
        figures = (
            "—" if o.lost is None else f"{o.lost}/{o.counted if o.counted is not None else '?'}"
        )
        verdict = "survived" if o.survived else ("not available" if not o.available else "FAILED")
        rows.append((o.scenario, o.lab, o.says, figures, str(len(o.left)), verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", choices=["lab", "lab-ssh"], action="append")
    parser.add_argument("--only", action="append", default=[], help="scenario function names")
    args = parser.parse_args(argv)
    started = time.monotonic()
    outcomes = []
    for env in args.lab or ["lab", "lab-ssh"]:
        outcomes += run_lab(env, args.only)
    print()
    print(table(outcomes))
    print(f"({time.monotonic() - started:.0f}s)")
    survived = sum(o.survived for o in outcomes)
    whole = sum(o.complete for o in outcomes)
    lost = sum(o.lost or 0 for o in outcomes)
    counted = sum(o.counted or 0 for o in outcomes if o.lost is not None)
    print(
        f"faults: {len(outcomes)} scenarios, {survived} survived, {whole} records complete, "
        f"lost {lost} counted {counted}"
    )
    return 0 if survived == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
