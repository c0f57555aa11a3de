"""Prefect's temporary API (``DRCTL_PREFECT_EPHEMERAL=1``), started by drctl so that it never
outlives drctl.

Prefect starts its temporary API server (``SubprocessASGIServer``) as a plain child process: in
drctl's process group, so that a Ctrl-C in the terminal kills it too, in the middle of the run
(drctl then waited for an API that was gone), and with nothing to stop it when drctl is killed
with SIGKILL (its ``atexit`` never runs: the server ran on after drctl). drctl starts the same
server, with Prefect's own command, itself:

- in a session of its own (``setsid``): a terminal's Ctrl-C reaches drctl, not the API, and
  drctl stops the run with the API still there to record it;
- with a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, Linux): when drctl dies, of
  anything, SIGKILL included, the kernel kills the server. The signal follows the thread that
  started the child, so it is started from the main thread, which lives as long as drctl.

It then stands in Prefect's own registry of temporary servers (the one for "no port"), so every
Prefect client in this process (the flow engine, events, logs) uses it instead of starting
another. drctl stops it at exit as Prefect would (``atexit``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when the thread that started it dies (Linux),
    and exits at once should that have happened already (between the fork and now)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl  # looked up before the fork: the child only calls it

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def start_ephemeral_api() -> Any:
    """Start Prefect's temporary API as described above (idempotent); returns the server."""
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class OwnedServer(SubprocessASGIServer):
        """Prefect's temporary server, in its own session, dying with drctl."""

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            # Prefect's own command and environment (prefect.server.api.server), with a
            # session of its own and a parent-death signal.
            server_env = {
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
            }
            return subprocess.Popen(
                args=[
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(prefect.__module_path__.parent),
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env={
                    **os.environ,
                    **server_env,
                    **get_current_settings().to_environment_variables(exclude_unset=True),
                },
                start_new_session=True,
                preexec_fn=die_with(os.getpid()),
            )

    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("the temporary API is started from the main thread (its death signal)")
    existing = SubprocessASGIServer._instances.get(None)
    if existing is not None and existing.running:
        return existing
    SubprocessASGIServer._instances.pop(None, None)
    server = OwnedServer()  # takes Prefect's "no port" place in its registry
    server.start()
    return server
