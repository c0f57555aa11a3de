"""What the commands share: the consoles, exit codes, Prefect's settings for a CLI run, and
running one request: as a Prefect flow when a Prefect server answers, else at once without one."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from drills.home import subdir

console = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

EXIT = {"passed": 0, "failed": 1, "aborted": 3, "interrupted": 3, "running": 3}


def prepare_prefect(verbose: bool = False) -> None:
    """Prefect settings for a CLI run, unless the user set them: state under DRCTL_HOME, a
    startup timeout that a fresh ephemeral API fits in, the run's logs (INFO) to the Prefect API,
    and a quiet terminal unless ``verbose``."""
    os.environ.setdefault("PREFECT_HOME", str(subdir("prefect")))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault(
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "WARNING"
    )
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

    Any HTTP answer below 500 counts (Prefect Cloud wants a key even for /health). An address
    that cannot be connected to is known before httpx is even imported, and costs ``timeout``
    once."""
    refused = _refused_at_once(url, timeout)
    if refused is not None:
        return refused
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if response.status_code >= 500:
        return f"its health check answered HTTP {response.status_code}"
    return None


def _refused_at_once(url: str, timeout: float) -> str | None:
    """What went wrong when the URL's address cannot be connected to (no proxy in the way);
    None when it can (its health check then says the rest)."""
    import socket
    from urllib.parse import urlsplit

    if any(k.lower().endswith("_proxy") and v for k, v in os.environ.items()):
        return None  # the proxy decides: ask through httpx
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if not parts.hostname:
        return None
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"ConnectTimeout: no answer within {timeout:g}s"
    except OSError as exc:  # refused, unreachable, a name that does not resolve
        return f"ConnectError: {exc}"


HEALTH_TIMEOUT_ENV = "DRCTL_PREFECT_HEALTH_TIMEOUT"
EPHEMERAL_ENV = "DRCTL_PREFECT_EPHEMERAL"


def health_timeout() -> float:
    """Seconds ``drctl run`` gives the configured Prefect server to answer (default 1)."""
    try:
        return min(max(float(os.environ.get(HEALTH_TIMEOUT_ENV) or 1.0), 0.1), 30.0)
    except ValueError:
        return 1.0


def without_prefect(out: Console, timeout: float | None = None) -> dict[str, Any] | None:
    """None when the drill runs as a Prefect flow: on the configured server, which answered, or
    (``DRCTL_PREFECT_EPHEMERAL=1`` and no server configured) on Prefect's temporary API. Else
    what the record's ``orchestrator`` must say of a run without Prefect, which starts at once:
    no server is configured, or the configured one did not answer (it may be in the site that
    failed), which is said here and in the record.

    It reads the configuration without importing Prefect, whose settings are fixed once it is."""
    url = configured_prefect_api_url()
    if not url:
        if os.environ.get(EPHEMERAL_ENV, "").strip().lower() in ("1", "true", "yes"):
            return None
        return {"prefect_fallback": "no Prefect server is configured (PREFECT_API_URL)"}
    problem = prefect_server_problem(url, health_timeout() if timeout is None else timeout)
    if problem is None:
        return None
    fallback = f"server at {url} did not answer: {problem}"
    out.print(
        f"[yellow]the Prefect {escape(fallback)}; running the drill without Prefect (the "
        "record says so)[/]"
    )
    return {"prefect_fallback": fallback}


def refuse_if_locked(environment: str) -> None:
    """Refuse at once, before Prefect or anything else starts, an environment that another
    run holds, or that a run stopped without finishing left locked (read only)."""
    from drills.model.errors import RefusedError
    from drills.records.lock import refusal

    problem = refusal(subdir("locks"), environment)
    if problem is not None:
        raise RefusedError(problem)


def print_interruption(out: Console, record: Any) -> None:
    """What an interrupted run left, or a run that changed something and did not pass
    (``record.left``), and the commands that come next, one per line."""
    if record.status == "interrupted" and record.interruptions:
        last = record.interruptions[-1]
    elif record.status in ("failed", "aborted") and getattr(record, "left", None):
        last = record.left
    else:
        return
    state = last.get("state") or {}
    for name in state.get("down") or []:
        out.print(f"[magenta]left: {escape(name)} is down[/]")
    for role in state.get("unfilled") or []:
        out.print(f"[magenta]left: role {escape(role)} is unfilled[/]")
    for name, stream in (state.get("streaming") or {}).items():
        if not stream.get("held"):
            out.print(f"[magenta]left: {escape(name)} does not stream[/]")
    if state.get("split_brain"):
        both = ", ".join(state["split_brain"])
        out.print(f"[red]left: {escape(both)} all accept writes (split brain)[/]")
    for command in last.get("next") or []:
        out.print(f"next: {escape(command['command'])}  ({escape(command['does'])})")


def run_request(request: Any, *, verbose: bool = False, quiet: bool = False) -> Any:
    """Run one request: as a Prefect flow when a Prefect server answers, else at once without
    Prefect (``flows.direct``); print the record unless ``quiet``.

    Ctrl-C and SIGTERM stop the run at a safe place (``drills.engine.stopping``): at once while
    it waits, else at the end of the step in progress; the record says where and what it left,
    and the lock stays for ``drctl resume``/``abort``."""
    from drills.engine.loader import resolve_environment
    from drills.engine.stopping import install_handlers

    install_handlers()
    # Everything that can be refused is refused here, before anything starts; a busy or
    # left-locked environment first, before even the runner is loaded (a second or so).
    environment = resolve_environment(request.environment)
    refuse_if_locked(environment.name)

    from drills.cli.console import ConsoleProgress, print_record
    from drills.engine.loader import load_playbook, resolve_playbook
    from drills.engine.runner import check_request
    from drills.records.store import RecordStore

    loaded = load_playbook(resolve_playbook(request.playbook))
    check_request(loaded, environment, request)
    from drills.records.room import ensure_room

    ensure_room(subdir("records"))  # a full or read-only records disk: refused (exit 3)
    out = Console(stderr=True, highlight=False, emoji=False) if quiet else console
    direct = without_prefect(out)
    if direct is not None:
        # A failover must not wait for a Prefect server, nor for a temporary one to start.
        from flows.direct import run_direct

        if verbose:  # the steps' log lines (commands, checks, output), as a flow run logs them
            import logging

            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(message)s"))
            logging.getLogger("drctl").addHandler(handler)
            logging.getLogger("drctl").setLevel(logging.INFO)

        run_id = run_direct(
            request,
            progress=ConsoleProgress(out),
            orchestrator=direct,
            loaded=loaded,
            env=environment,
        )
    else:
        prepare_prefect(verbose)
        from flows.drill import run_drill

        if not configured_prefect_api_url():
            from drills.cli.ephemeral import start_ephemeral_api

            if not quiet:
                console.print(
                    "[dim]starting Prefect's temporary API (the first time takes ~20 s)…[/]"
                )
            start_ephemeral_api()  # drctl's child: it dies with drctl, SIGKILL included
        run_id = run_drill(request, progress=ConsoleProgress(out))
    store = RecordStore(subdir("records"), subdir("locks"))
    record = store.load(run_id)
    if not quiet:
        print_record(console, record, store.describe(record.id))
        print_interruption(console, record)
    return record
