"""The Docker two-site lab (docker-compose.yml, docker/): sites A and B, each one container with
sshd and PostgreSQL, and the HIS stand-in; drctl reaches the sites over SSH only.

The docker-marked tests start the compose file's ``site-a``, ``site-b`` and ``his`` with
pytest-docker, under a project name of their own and on free loopback ports, with a key and a
password made for the session, so a lab already up on the default ports is left alone. Where no
Docker engine (or no ``docker compose``) answers they skip with the reason, before pytest-docker
runs a command: its fixtures error instead of skipping. The first tests need no Docker: the
example environment files must agree with the compose file they describe.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_docker.plugin import Services

from drills.engine.loader import load_environment_file
from drills.model.environment import Environment

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
HOST_ENVIRONMENT = REPO / "playbooks" / "environments" / "docker-two-site.yaml"
WORKER_ENVIRONMENT = REPO / "docker" / "worker" / "environments" / "docker-two-site.yaml"
SERVICES = ("site-a", "site-b", "his")  # what the tests start: no Prefect, no Oracle
SITES = {"pg1": "site-a", "pg2": "site-b"}  # node -> compose service
PORT_VARIABLES = {  # compose variable -> (node, what)
    "SITE_A_SSH_PORT": ("pg1", "ssh"),
    "SITE_B_SSH_PORT": ("pg2", "ssh"),
    "SITE_A_PG_PORT": ("pg1", "postgres"),
    "SITE_B_PG_PORT": ("pg2", "postgres"),
    "HIS_PORT": ("app", "http"),
}
PASSWORD_VARIABLE = "DRCTL_DOCKER_PG_PASSWORD"
SETUP_TIMEOUT = 1800  # the first run builds the images (Debian packages, drctl and Prefect)

# ------------------------------------------------------------------ the files, without Docker

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def compose_defaults(value: Any) -> Any:
    """The compose file's values with every ``${NAME:-default}`` replaced by its default."""
    if isinstance(value, dict):
        return {key: compose_defaults(item) for key, item in value.items()}
    if isinstance(value, list):
        return [compose_defaults(item) for item in value]
    if isinstance(value, str):
        return INTERPOLATION.sub(lambda m: m.group(2) or "", value).replace("$$", "$")
    return value


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = compose_defaults(yaml.safe_load(COMPOSE_FILE.read_text()))[
        "services"
    ]
    return services


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port) of a service's short-syntax ports."""
    ports: dict[int, tuple[str, int]] = {}
    for entry in service.get("ports", []):
        address, host_port, container_port = str(entry).split(":")
        ports[int(container_port)] = (address, int(host_port))
    return ports


def test_every_port_is_published_on_loopback_only() -> None:
    for name, service in compose_services().items():
        for container_port, (address, _) in published(service).items():
            assert address == "127.0.0.1", f"{name} publishes {container_port} on {address}"


def test_example_environments_match_the_compose_lab() -> None:
    services = compose_services()
    host = load_environment_file(HOST_ENVIRONMENT)
    worker = load_environment_file(WORKER_ENVIRONMENT)
    assert host.name == worker.name == "docker-two-site"
    assert not host.protected and not worker.protected
    his_ports = published(services["his"])

    for node_name, service_name in SITES.items():
        service = services[service_name]
        settings = service["environment"]
        ports = published(service)
        pg_port = int(settings["PG_PORT"])
        major = service["build"]["args"]["PG_MAJOR"]
        data_volume = next(
            v for v in service["volumes"] if str(v).endswith(":/var/lib/postgresql/data")
        )
        for env in (host, worker):
            node = env.nodes[node_name]
            assert node.executor == "ssh" and node.ssh is not None and node.postgres is not None
            assert node.ssh.user == "postgres"
            assert node.port == pg_port, f"{env.name}/{node_name}: PostgreSQL listens on {pg_port}"
            assert node.postgres.bin_dir == f"/usr/lib/postgresql/{major}/bin"
            assert node.postgres.data_dir == data_volume.split(":", 1)[1]
            assert node.postgres.password_env == PASSWORD_VARIABLE
            assert node.postgres.application_name == settings["NODE_NAME"] == node_name
        # From the Docker host: the published ports, the same number as inside the container
        # (drctl writes the node's port into a rejoined standby's configuration).
        node = host.nodes[node_name]
        assert node.ssh is not None
        assert ports[22] == ("127.0.0.1", node.ssh.port)
        assert ports[pg_port] == ("127.0.0.1", pg_port)
        assert node.host == node.ssh.address == "127.0.0.1"
        # From the compose network: the service names.
        inside = worker.nodes[node_name]
        assert inside.ssh is not None
        assert inside.host == service_name and inside.ssh.port == 22
    # Each site relays the other's port to it, so 127.0.0.1:<peer port> is the peer everywhere.
    site_a, site_b = services["site-a"]["environment"], services["site-b"]["environment"]
    assert (site_a["PEER_HOST"], site_a["PEER_PORT"]) == ("site-b", site_b["PG_PORT"])
    assert (site_b["PEER_HOST"], site_b["PEER_PORT"]) == ("site-a", site_a["PG_PORT"])
    assert (site_a["SITE_ROLE"], site_b["SITE_ROLE"]) == ("primary", "standby")
    for env, base_url in (
        (host, f"http://127.0.0.1:{his_ports[8080][1]}"),
        (worker, "http://his:8080"),
    ):
        app = env.nodes["app"]
        assert app.role == "app" and app.http is not None and app.http.base_url == base_url
    # The HIS stand-in follows the primary over both sites' ports.
    dsn = services["his"]["environment"]["HIS_DSN"]
    assert "host=site-a,site-b" in dsn and "target_session_attrs=read-write" in dsn
    assert f"port={host.nodes['pg1'].port},{host.nodes['pg2'].port}" in dsn


# ------------------------------------------------------------------ the lab, with Docker


def compose_unavailable() -> str | None:
    """Why the docker-marked tests cannot run here, or None: the project's guard (the engine
    answers `docker info`), then the compose plugin."""
    from tests.test_reconcile import _docker_unavailable

    reason = _docker_unavailable()
    if reason:
        return reason
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker compose does not answer ({exc})"
    if probe.returncode != 0:
        return "no docker compose plugin: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
    return None


@dataclass(frozen=True)
class LabSettings:
    ports: dict[str, int]  # compose variable -> port on 127.0.0.1
    key_file: Path
    password: str


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def write_key_pair(key_file: Path) -> None:
    """An Ed25519 key pair in OpenSSH format (what `ssh-keygen -t ed25519` makes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    key_file.write_bytes(private)
    key_file.chmod(0o600)
    key_file.with_suffix(".pub").write_bytes(public + b" drctl-docker-lab-test\n")


@pytest.fixture(scope="session")
def docker_lab_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSettings]:
    """Skips where no engine answers; else a key, a password and free ports for the lab, in
    the variables docker-compose.yml reads (set for the session, restored after)."""
    reason = compose_unavailable()
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("docker-lab")
    key_file = directory / "drctl_ed25519"
    write_key_pair(key_file)
    settings = LabSettings(
        ports=dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True)),
        key_file=key_file,
        password=secrets.token_urlsafe(18),
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, port in settings.ports.items():
            patch.setenv(name, str(port))
        patch.setenv("DRCTL_SSH_PUBLIC_KEY", str(key_file.with_suffix(".pub")))
        patch.setenv(PASSWORD_VARIABLE, settings.password)
        yield settings


# pytest-docker's fixtures, overridden: the repository's compose file, our own project, and only
# the services the tests need.


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"drctl-test-{os.getpid()}"


@pytest.fixture(scope="session")
def docker_compose_file(
    docker_lab_settings: LabSettings, docker_compose_project_name: str
) -> Iterator[str]:
    yield str(COMPOSE_FILE)
    # pytest-docker runs no `down` when its `up` failed: leave nothing behind either way.
    compose(docker_compose_project_name, "down", "-v", "--remove-orphans", check=False)


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return [f"up --build --wait {' '.join(SERVICES)}"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v --remove-orphans"]


def compose(project: str, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", project, *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker compose {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def ssh_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(3)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def postgres_role(port: int, password: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname="postgres",
            password=password,
            connect_timeout=2,
        ) as conn:
            in_recovery = conn.execute("select pg_is_in_recovery()").fetchone()
    except psycopg.Error:
        return None
    return None if in_recovery is None else "standby" if in_recovery[0] else "primary"


def wait_for(
    services: Services, project: str, what: str, check: Callable[[], bool], timeout: float = 180
) -> None:
    try:
        services.wait_until_responsive(check=check, timeout=timeout, pause=0.5)
    except Exception as exc:  # pytest-docker raises a bare Exception on its timeout
        logs = compose(project, "logs", "--no-color", "--tail", "40", check=False)
        raise AssertionError(f"{what} did not answer within {timeout:g}s\n{logs}") from exc


@pytest.fixture(scope="session")
def docker_lab(
    docker_lab_settings: LabSettings,
    docker_services: Services,
    docker_compose_project_name: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The lab up: sshd and PostgreSQL answer on both sites; the environment file for it."""
    settings, project = docker_lab_settings, docker_compose_project_name
    ports = settings.ports
    for site, ssh_port, pg_port, role in (
        ("site-a", ports["SITE_A_SSH_PORT"], ports["SITE_A_PG_PORT"], "primary"),
        ("site-b", ports["SITE_B_SSH_PORT"], ports["SITE_B_PG_PORT"], "standby"),
    ):
        wait_for(docker_services, project, f"sshd of {site}", lambda p=ssh_port: ssh_answers(p))
        wait_for(
            docker_services,
            project,
            f"PostgreSQL of {site} as {role}",
            lambda p=pg_port, r=role: postgres_role(p, settings.password) == r,
        )
    directory = tmp_path_factory.mktemp("docker-lab-env")
    # known_hosts from the sites' own host keys, read through Docker: never from a scan.
    known_hosts = directory / "known_hosts"
    lines = []
    for site, variable in (("site-a", "SITE_A_SSH_PORT"), ("site-b", "SITE_B_SSH_PORT")):
        key = compose(project, "exec", "-T", site, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
        key_type, key_data = key.split()[:2]
        lines.append(f"[127.0.0.1]:{ports[variable]} {key_type} {key_data}")
    known_hosts.write_text("\n".join(lines) + "\n")
    # The example environment, pointed at this lab's ports, key and known_hosts.
    data = yaml.safe_load(HOST_ENVIRONMENT.read_text())
    for variable, (node_name, what) in PORT_VARIABLES.items():
        node = data["nodes"][node_name]
        if what == "ssh":
            node["ssh"]["port"] = ports[variable]
            node["ssh"]["key_file"] = str(settings.key_file)
            node["ssh"]["known_hosts"] = str(known_hosts)
        elif what == "postgres":
            node["port"] = ports[variable]
        else:
            node["port"] = ports[variable]
            node["http"]["base_url"] = f"http://127.0.0.1:{ports[variable]}"
    environment_file = directory / "docker-two-site.yaml"
    environment_file.write_text(yaml.safe_dump(data, sort_keys=False))
    Environment.model_validate(data)
    return environment_file


def live_roles(env: Environment, password: str) -> dict[str, str | None]:
    return {
        name: postgres_role(node.port, password)
        for name, node in env.nodes.items()
        if node.postgres is not None
    }


@pytest.mark.docker
@pytest.mark.timeout(SETUP_TIMEOUT)
def test_sites_answer_over_ssh(docker_lab: Path) -> None:
    """`drctl env check` finds no problem, and drctl's SSH executor does what drills need on
    each site: log in as the database owner, read the data directory and its server."""
    from drills.engine.envcheck import check_environment
    from drills.engine.targets import LiveConnector
    from drills.executors.ssh import SshExecutor

    env = load_environment_file(docker_lab)
    findings = check_environment(env)
    problems = [f"{f.node} {f.item}: {f.detail}" for f in findings if f.verdict == "problem"]
    assert findings and not problems, problems
    expected_state = {"pg1": "in production", "pg2": "in archive recovery"}
    for name in SITES:
        node = env.nodes[name]
        assert node.postgres is not None
        executor = LiveConnector().host(name, node)
        try:
            assert isinstance(executor, SshExecutor)
            assert executor.run(["id", "-un"]).stdout.strip() == "postgres"
            assert executor.exists(node.postgres.data_dir)
            assert executor.instance_processes(node.postgres.data_dir).state == "running"
            control = executor.run(
                [f"{node.postgres.bin_dir}/pg_controldata", node.postgres.data_dir]
            ).stdout
            assert re.search(rf"Database cluster state:\s+{expected_state[name]}", control)
        finally:
            executor.close()


@pytest.mark.docker
@pytest.mark.timeout(SETUP_TIMEOUT)
def test_standby_streams_from_the_primary_and_the_his_answers(
    docker_lab: Path, docker_lab_settings: LabSettings
) -> None:
    import httpx
    import psycopg

    env = load_environment_file(docker_lab)
    primary, standby = env.nodes["pg1"], env.nodes["pg2"]
    with psycopg.connect(
        host=standby.host,
        port=standby.port,
        user="postgres",
        dbname="postgres",
        password=docker_lab_settings.password,
    ) as conn:
        row = conn.execute("select status, sender_port from pg_stat_wal_receiver").fetchone()
    # Through site B's peer relay: the primary's own port, as drctl addresses it.
    assert row == ("streaming", primary.port)
    app = env.nodes["app"]
    assert app.http is not None
    assert httpx.get(f"{app.http.base_url}/health", timeout=5, trust_env=False).status_code == 200


@pytest.mark.docker
@pytest.mark.timeout(SETUP_TIMEOUT)
def test_switchover_there_and_back(docker_lab: Path, docker_lab_settings: LabSettings) -> None:
    """pg-switchover over SSH passes, and again: the second run uses the other site's relay."""
    from drills.engine.runner import run_playbook
    from drills.model.request import RunRequest

    env = load_environment_file(docker_lab)
    password = docker_lab_settings.password
    assert live_roles(env, password) == {"pg1": "primary", "pg2": "standby"}
    for expected in (
        {"pg1": "standby", "pg2": "primary"},
        {"pg1": "primary", "pg2": "standby"},
    ):
        record = run_playbook(RunRequest(playbook="pg-switchover", environment=str(docker_lab)))
        assert record.status == "passed", record.reason
        assert all(step.status == "passed" for step in record.steps)
        assert all(objective.met for objective in record.objectives)
        deadline = time.monotonic() + 30
        while live_roles(env, password) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        assert live_roles(env, password) == expected
