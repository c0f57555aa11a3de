"""What the commands share: the consoles, exit codes, Prefect's settings for a CLI run, the
fallback to the ephemeral API, and running one request as a Prefect flow."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from drills.home import subdir

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT = {"passed": 0, "failed": 1, "aborted": 3, "interrupted": 3, "running": 3}


def prepare_prefect(verbose: bool = False) -> None:
    """Prefect settings for a CLI run, unless the user set them: state under DRCTL_HOME, a
    startup timeout that a fresh ephemeral API fits in, and quiet logs."""
    os.environ.setdefault("PREFECT_HOME", str(subdir("prefect")))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "drctl")


def configured_prefect_api_url() -> str | None:
    """PREFECT_API_URL from the environment, else from the active Prefect profile.

    Read without importing Prefect, whose settings are fixed once it is imported."""
    if "PREFECT_API_URL" in os.environ:
        return os.environ["PREFECT_API_URL"].strip() or None
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active")
    profile = data.get("profiles", {}).get(active, {}) if isinstance(active, str) else {}
    url = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    return str(url) if url else None


def prefect_server_problem(url: str, timeout: float = 3.0) -> str | None:
    """None when the Prefect API at ``url`` answers its health check; else what went wrong.

    Any HTTP answer below 500 counts (Prefect Cloud wants a key even for /health)."""
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if response.status_code >= 500:
        return f"its health check answered HTTP {response.status_code}"
    return None


_fallback: dict[str, Any] = {}


def prefect_api_or_fallback(out: Console, timeout: float = 3.0) -> dict[str, Any]:
    """Keep the configured Prefect server if it answers; else switch this process to the
    ephemeral API, say so, and return what the record's ``orchestrator`` must say.

    It must run before Prefect is imported: Prefect reads its settings once."""
    if _fallback:  # an earlier run of this process fell back already
        return dict(_fallback)
    url = configured_prefect_api_url()
    if not url:
        return {}
    problem = prefect_server_problem(url, timeout)
    if problem is None:
        return {}
    fallback = f"server at {url} did not answer: {problem}"
    if "prefect" in sys.modules:
        out.print(f"[red]the Prefect {escape(fallback)}; too late to switch in this process[/]")
        return {}
    if os.environ.pop("PREFECT_API_URL", None) is None:
        # It came from a Prefect profile: use an empty one (an empty PREFECT_API_URL would not
        # do: Prefect takes "" for a server's address).
        from drills.home import subdir

        profiles = subdir("prefect") / "profiles-ephemeral.toml"
        profiles.write_text(
            'active = "ephemeral"\n\n[profiles.ephemeral]\n'
            'PREFECT_SERVER_ALLOW_EPHEMERAL_MODE = "true"\n',
            encoding="utf-8",
        )
        os.environ["PREFECT_PROFILES_PATH"] = str(profiles)
        os.environ["PREFECT_PROFILE"] = "ephemeral"
    out.print(
        f"[yellow]the Prefect {escape(fallback)}; running on the ephemeral API instead "
        "(the record says so)[/]"
    )
    _fallback.update({"prefect_api": "ephemeral", "prefect_fallback": fallback})
    return dict(_fallback)


def run_request(request: Any, *, verbose: bool = False, quiet: bool = False) -> Any:
    from drills.cli.console import ConsoleProgress, print_record
    from drills.engine.loader import load_playbook, resolve_environment, resolve_playbook
    from drills.engine.runner import check_request
    from drills.records.store import RecordStore

    # Everything that can be refused is refused here, before Prefect starts.
    loaded = load_playbook(resolve_playbook(request.playbook))
    check_request(loaded, resolve_environment(request.environment), request)
    prepare_prefect(verbose)
    out = Console(stderr=True, highlight=False) if quiet else console
    # A failover must run when the Prefect server is down: then on the ephemeral API.
    orchestrator = prefect_api_or_fallback(out)
    from flows.drill import run_drill

    if not quiet:
        console.print("[dim]starting Prefect (the first run on a machine takes ~20 s)…[/]")
    run_id = run_drill(request, progress=ConsoleProgress(out), orchestrator=orchestrator)
    store = RecordStore(subdir("records"), subdir("locks"))
    record = store.load(run_id)
    if not quiet:
        print_record(console, record, store.describe(record.id))
    return record
