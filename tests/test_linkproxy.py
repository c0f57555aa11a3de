"""The replication-link proxy (drills/lab/linkproxy.py): on its own against a loopback echo
server (forwarding, rate, latency, cut, restore, its control API's refusals, stopping by pid),
then on both session labs between the standby and the primary (cut: the standby stops
receiving and falls behind; restore: it catches up), and `drctl lab up --link-proxy` / `lab
down` on a lab of its own (down stops the proxy by the pid it recorded)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drills.lab import link, linkproxy
from drills.lab.linkproxy import LinkProxy
from tests.helpers import alive, drctl, wait_until
from tests.labs import AnyLab
from tests.pg_fixtures import postgres_processes_under, private_home


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue

            def echo(conn: socket.socket = conn) -> None:
                with conn:
                    while data := conn.recv(65536):
                        conn.sendall(data)

            threading.Thread(target=echo, daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()
    done.set()
    thread.join(2)
    server.close()


@pytest.fixture
def proxy(tmp_path: Path, echo_server: tuple[str, int]) -> Iterator[LinkProxy]:
    started = linkproxy.start(tmp_path / "proxy.json", tmp_path / "proxy.log", echo_server)
    try:
        yield started
    finally:
        linkproxy.stop(tmp_path / "proxy.json")
    assert not alive(started.pid)


def roundtrip(proxy: LinkProxy, payload: bytes, timeout: float = 10) -> tuple[bytes, float]:
    start = time.monotonic()
    with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # refused: accepted, then reset
                break
            if not chunk:
                break
            got += chunk
    return got, time.monotonic() - start


def closed_by_peer(sock: socket.socket) -> bool:
    """The peer closed or reset the connection (an echo sent before that is read past)."""
    try:
        while sock.recv(10):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_the_proxy_forwards_throttles_delays_cuts_and_restores(proxy: LinkProxy) -> None:
    got, _ = roundtrip(proxy, b"wal record")
    assert got == b"wal record"
    # 40 kB at 20 kB/s each way: the echo comes back after about 2 s, not at once.
    proxy.throttle(rate=20000)
    got, took = roundtrip(proxy, b"x" * 40000)
    assert got == b"x" * 40000 and 1.7 < took < 6, took
    # 0.3 s added each way, rate unlimited again.
    status = proxy.throttle(rate=0, latency=0.3)
    assert (status["rate"], status["latency"]) == (None, 0.3)
    got, took = roundtrip(proxy, b"ping")
    assert got == b"ping" and 0.55 < took < 3, took
    # Cut: the open connection is dropped, new ones are refused (closed at once).
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as open_one:
        open_one.sendall(b"a")
        wait_until(lambda: proxy.status()["connections"] == 1, 5, "the connection to be open")
        cut = proxy.cut()
        assert cut["cut"] is True and cut["dropped"] == 1
        assert closed_by_peer(open_one)
    got, _ = roundtrip(proxy, b"refused?")
    assert got == b""
    assert proxy.status()["refused"] >= 1
    restored = proxy.restore()
    assert (restored["cut"], restored["rate"], restored["latency"]) == (False, None, 0.0)
    assert roundtrip(proxy, b"back")[0] == b"back"


def test_the_control_api_refuses_what_it_cannot_do(proxy: LinkProxy) -> None:
    for command, words in [
        ("throttle rate=-1", "finite number >= 0"),
        ("throttle latency=inf", "finite number >= 0"),
        ("throttle speed=3", "rate=BYTES_PER_SECOND and latency=SECONDS"),
        ("target 10.0.0.1:5432", "not on a loopback address"),
        ("explode", "unknown command"),
    ]:
        with pytest.raises(RuntimeError, match=words):
            proxy.send(command)
    assert proxy.status()["cut"] is False  # nothing changed


def test_the_proxy_listens_and_forwards_on_loopback_only(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "drills.lab.linkproxy", "--listen", "0.0.0.0:0"),
            *(
                "--target",
                "127.0.0.1:1",
                "--control",
                "127.0.0.1:0",
                "--state",
                str(tmp_path / "s"),
            ),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "not on a loopback address" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s").exists()


# -- on the labs ----------------------------------------------------------------------------------


def lag_bytes(lab: AnyLab, primary: str, standby: str) -> int:
    with psycopg.connect(lab.dsn(primary), autocommit=True) as conn:
        lsn = conn.execute("select pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(lab.dsn(standby), autocommit=True) as conn:
        row = conn.execute(
            "select pg_wal_lsn_diff(%s::pg_lsn, coalesce(pg_last_wal_receive_lsn(), '0/0'))",
            (lsn,),
        ).fetchone()
    return int(row[0]) if row else -1


@pytest.mark.lab
def test_the_standby_streams_through_the_proxy_and_a_cut_stops_it(any_lab: AnyLab) -> None:
    lab = any_lab
    with lab.active():
        lab.wait_streaming()
        lab_dir = lab.environment_file.parent.parent / ("lab-ssh" if lab.over_ssh else "lab")
        route = link.route_standby(lab.environment, lab_dir)
        try:
            assert link.standby_route(lab.environment, lab_dir) == "proxy"
            primary, standby = route.primary, route.standby
            assert (primary, standby) == (lab.role_of("primary"), lab.role_of("standby"))
            with psycopg.connect(lab.dsn(primary), autocommit=True) as conn:
                conn.execute("create table if not exists public.link_test (n int)")
            wait_until(lambda: lag_bytes(lab, primary, standby) == 0, 20, "the standby to catch up")
            route.proxy.cut()
            with psycopg.connect(lab.dsn(primary), autocommit=True) as conn:
                for _ in range(50):
                    conn.execute("insert into public.link_test select generate_series(1, 200)")
            time.sleep(1.0)
            assert lag_bytes(lab, primary, standby) > 0  # nothing reaches the standby
            with psycopg.connect(lab.dsn(standby), autocommit=True) as conn:
                receiver = conn.execute("select status from pg_stat_wal_receiver").fetchall()
            assert receiver != [("streaming",)]
            route.proxy.restore()
            wait_until(lambda: lag_bytes(lab, primary, standby) == 0, 30, "the standby to catch up")
            assert link.standby_route(lab.environment, lab_dir) == "proxy"
        finally:
            message = link.route_direct(lab.environment, lab_dir)
        assert "streams straight from" in message and "stopped the link proxy" in message
        assert not alive(route.proxy.pid)
        assert link.standby_route(lab.environment, lab_dir) == "direct"
        lab.wait_streaming()


@pytest.mark.lab
def test_lab_up_link_proxy_and_lab_down_stops_it_by_its_pid() -> None:
    with private_home("drctl-linkproxy-") as home:
        try:
            up = drctl("lab", "up", "--link-proxy", home=home, timeout=180)
            assert up.returncode == 0, up.stdout + up.stderr
            proxy = link.proxy_of(home / "lab")
            assert proxy is not None and alive(proxy.pid)
            assert f"started the link proxy on {proxy.listen} (pid {proxy.pid}" in up.stdout
            again = drctl("lab", "up", home=home, timeout=120)  # still through the proxy
            assert again.returncode == 0 and "pg2 streams from pg1" in again.stdout, again.stdout
        finally:
            down = drctl("lab", "down", home=home, timeout=180)
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"link proxy (pid {proxy.pid})" in down.stdout
        assert not alive(proxy.pid)
        assert postgres_processes_under(home) == []
