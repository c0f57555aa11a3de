"""The replication-link proxy: a loopback TCP proxy the lab puts between the standby and the
primary, so that tests can cut the link and slow it down.

toxiproxy's server binary cannot be installed here, and what a drill needs of it is small: one
listening port that forwards to the primary, and three faults, each set and cleared at any time
from another process:

- ``cut``: every open connection is dropped and new ones are refused (accepted, then closed at
  once, as a dead link looks to the standby's WAL receiver), until ``restore``;
- ``throttle``: at most ``rate`` bytes per second in each direction of each connection, and/or
  ``latency`` seconds added to every chunk (pipelined: a delay, not a stop-and-wait);
- ``target``: forward new connections elsewhere (the primary moved after a switchover).

It runs as its own process (``python -m drills.lab.linkproxy``), started by ``drctl lab up
--link-proxy`` or :func:`start`, and stopped by ``drctl lab down`` through the pid it records in
its state file. The control API is a line protocol on a second loopback port: one command per
line, one JSON object per answer::

    status                          {"ok": true, "cut": false, "rate": null, "latency": 0.0, ...}
    cut                             {"ok": true, "cut": true, "dropped": 1, ...}
    restore                         {"ok": true, "cut": false, "rate": null, "latency": 0.0, ...}
    throttle rate=65536 latency=0.2 {"ok": true, "rate": 65536.0, "latency": 0.2, ...}
    target 127.0.0.1:5433           {"ok": true, "target": "127.0.0.1:5433", ...}

asyncio's streams are enough for this; it listens and connects on 127.0.0.0/8 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drills.lab.processes import process_alive, terminate

CHUNK = 16384
START_TIMEOUT = 15.0  # seconds for a started proxy to write its state file
CONTROL_TIMEOUT = 5.0


def _loopback(address: str, what: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host.startswith("127."):
        raise ValueError(f"{what} {address!r} is not on a loopback address (127.0.0.0/8)")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{what} {address!r} has no port number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{what} {address!r}: port {number} is out of range")
    return host, number


# -- the proxy itself ------------------------------------------------------------------------


class Link:
    """The proxy's faults and open connections (one event loop, no locks needed)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cut = False
        self.rate: float | None = None  # bytes per second per direction; None: unlimited
        self.latency = 0.0  # seconds added to each chunk
        self.connections: set[asyncio.StreamWriter] = set()
        self.accepted = 0
        self.refused = 0
        self.forwarded = 0  # bytes, both directions

    def describe(self) -> dict[str, Any]:
        return {
            "ok": True,
            "cut": self.cut,
            "rate": self.rate,
            "latency": self.latency,
            "target": f"{self.target[0]}:{self.target[1]}",
            "connections": len(self.connections) // 2,
            "accepted": self.accepted,
            "refused": self.refused,
            "forwarded_bytes": self.forwarded,
        }

    def drop_all(self) -> int:
        dropped = len(self.connections) // 2
        for writer in list(self.connections):
            writer.transport.abort()  # an RST, as a link that died; no FIN handshake
        self.connections.clear()
        return dropped

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.cut:
            self.refused += 1
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            self.refused += 1
            client_w.transport.abort()
            return
        self.accepted += 1
        self.connections |= {client_w, server_w}
        try:
            await asyncio.gather(
                self._pump(client_r, server_w, client_w), self._pump(server_r, client_w, server_w)
            )
        except asyncio.CancelledError:
            pass  # the proxy is stopping: its connections go with it
        finally:
            for writer in (client_w, server_w):
                self.connections.discard(writer)
                writer.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
    ) -> None:
        """Copy one direction: a reader task queues chunks stamped with their delivery time, a
        writer task delivers them at that time and at the rate (latency stays a delay)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)

        async def read() -> None:
            try:
                while data := await reader.read(CHUNK):
                    await queue.put((time.monotonic() + self.latency, data))
            except (ConnectionError, OSError):
                pass
            await queue.put((0.0, b""))

        async def deliver() -> None:
            sent_at = time.monotonic()
            try:
                while True:
                    due, data = await queue.get()
                    if not data:
                        break
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if self.rate:
                        # Pace: this chunk may leave only len/rate after the previous one did.
                        sent_at = max(sent_at + len(data) / self.rate, time.monotonic())
                        await asyncio.sleep(max(0.0, sent_at - time.monotonic()))
                    writer.write(data)
                    await writer.drain()
                    self.forwarded += len(data)
            except (ConnectionError, OSError):
                pass
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()

        reading = asyncio.ensure_future(read())
        try:
            await deliver()
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            other.transport.abort()
            writer.transport.abort()

    # -- the control API ----------------------------------------------------------------------

    def command(self, line: str) -> dict[str, Any]:
        words = line.split()
        if not words:
            return {"ok": False, "error": "empty command"}
        verb, args = words[0].lower(), words[1:]
        try:
            if verb == "status":
                return self.describe()
            if verb == "cut":
                self.cut = True
                return {**self.describe(), "dropped": self.drop_all()}
            if verb == "restore":
                self.cut, self.rate, self.latency = False, None, 0.0
                return self.describe()
            if verb == "throttle":
                return self._throttle(args)
            if verb == "target" and len(args) == 1:
                self.target = _loopback(args[0], "target")
                return self.describe()
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown command {line.strip()!r}"}

    def _throttle(self, args: list[str]) -> dict[str, Any]:
        rate, latency = self.rate, self.latency
        for arg in args:
            key, _, value = arg.partition("=")
            number = float(value)  # ValueError: the answer names it
            if number < 0 or number != number or number == float("inf"):
                raise ValueError(f"{key} must be a finite number >= 0, not {value}")
            if key == "rate":
                rate = number or None
            elif key == "latency":
                latency = number
            else:
                raise ValueError(
                    f"throttle takes rate=BYTES_PER_SECOND and latency=SECONDS, not {arg}"
                )
        self.rate, self.latency = rate, latency
        return self.describe()

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = self.command(line.decode(errors="replace"))
                writer.write((json.dumps(answer) + "\n").encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


async def serve(
    listen: tuple[str, int],
    control: tuple[str, int],
    target: tuple[str, int],
    ready: Callable[[int, int], None],
) -> None:
    link = Link(target)
    proxy = await asyncio.start_server(link.handle, *listen, reuse_address=True)
    controller = await asyncio.start_server(link.control, *control, reuse_address=True)
    ready(proxy.sockets[0].getsockname()[1], controller.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    proxy.close()
    controller.close()
    link.drop_all()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The lab's replication-link proxy.")
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on (port 0: free)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to (the primary)")
    parser.add_argument("--control", required=True, help="HOST:PORT of the control API")
    parser.add_argument("--state", required=True, help="file to write the bound ports to")
    args = parser.parse_args(argv)
    try:
        listen = _loopback(args.listen, "--listen")
        control = _loopback(args.control, "--control")
        target = _loopback(args.target, "--target")
    except ValueError as exc:
        parser.error(str(exc))
    state = Path(args.state)

    def ready(port: int, control_port: int) -> None:
        data = {
            "pid": os.getpid(),
            "listen": f"{listen[0]}:{port}",
            "control": f"{control[0]}:{control_port}",
            "target": f"{target[0]}:{target[1]}",
        }
        tmp = state.with_name(state.name + ".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        tmp.replace(state)

    asyncio.run(serve(listen, control, target, ready))


# -- running it as the lab's process -----------------------------------------------------------


@dataclass(frozen=True)
class LinkProxy:
    """A running proxy, as its state file names it: the standby connects to ``listen``."""

    pid: int
    listen: str
    control: str
    target: str
    state_file: Path

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def send(self, command: str) -> dict[str, Any]:
        """One control command; its JSON answer. RuntimeError when it fails or is refused."""
        host, port = _loopback(self.control, "control")
        try:
            with socket.create_connection((host, port), timeout=CONTROL_TIMEOUT) as sock:
                sock.sendall(command.encode() + b"\n")
                answer = sock.makefile("rb").readline()
        except OSError as exc:
            raise RuntimeError(f"the link proxy's control port {self.control}: {exc}") from exc
        try:
            data: dict[str, Any] = json.loads(answer)
        except ValueError:
            raise RuntimeError(
                f"the link proxy on {self.control} answered {answer[:200]!r} to {command!r}"
            ) from None
        if not data.get("ok"):
            raise RuntimeError(f"the link proxy refused {command!r}: {data.get('error')}")
        return data

    def status(self) -> dict[str, Any]:
        return self.send("status")

    def cut(self) -> dict[str, Any]:
        return self.send("cut")

    def restore(self) -> dict[str, Any]:
        return self.send("restore")

    def throttle(self, rate: float | None = None, latency: float | None = None) -> dict[str, Any]:
        parts = ["throttle"]
        if rate is not None:
            parts.append(f"rate={rate:g}")
        if latency is not None:
            parts.append(f"latency={latency:g}")
        return self.send(" ".join(parts))

    def retarget(self, host: str, port: int) -> dict[str, Any]:
        return self.send(f"target {host}:{port}")


def start(
    state_file: Path,
    log_file: Path,
    target: tuple[str, int],
    listen: tuple[str, int] = ("127.0.0.1", 0),
    control: tuple[str, int] = ("127.0.0.1", 0),
) -> LinkProxy:
    """Start the proxy in the background (its own session: it outlives `drctl lab up`, as the
    lab's servers do) and wait until it has bound its ports."""
    state_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "drills.lab.linkproxy"]
    argv += ["--listen", f"{listen[0]}:{listen[1]}", "--control", f"{control[0]}:{control[1]}"]
    argv += ["--target", f"{target[0]}:{target[1]}", "--state", str(state_file)]
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = running(state_file)
        if found is not None and found.pid == proc.pid:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait(5)
    state_file.unlink(missing_ok=True)
    tail = log_file.read_text(errors="replace")[-1500:] if log_file.exists() else ""
    raise RuntimeError(
        f"the link proxy did not start on {listen[0]}:{listen[1]} (exit {proc.returncode})\n{tail}"
    )


def recorded(state_file: Path) -> LinkProxy | None:
    """The proxy the state file names, alive or not."""
    try:
        data = json.loads(state_file.read_text())
        return LinkProxy(
            int(data["pid"]),
            str(data["listen"]),
            str(data["control"]),
            str(data["target"]),
            state_file,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running(state_file: Path) -> LinkProxy | None:
    """The proxy the state file names, if that pid is alive and is this proxy (not a reused
    pid)."""
    proxy = recorded(state_file)
    if proxy is None:
        return None
    try:
        cmdline = Path(f"/proc/{proxy.pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not process_alive(proxy.pid):  # a zombie: exited, not yet reaped
        return None
    return (
        proxy
        if b"drills.lab.linkproxy" in cmdline and str(state_file).encode() in cmdline
        else None
    )


def stop(state_file: Path) -> int | None:
    """Stop the proxy its state file names (SIGTERM, then SIGKILL); the pid stopped, or None."""
    proxy = running(state_file)
    if proxy is not None:
        terminate(proxy.pid, lambda: running(state_file) is None)
    state_file.unlink(missing_ok=True)
    return proxy.pid if proxy is not None else None


if __name__ == "__main__":
    main()
