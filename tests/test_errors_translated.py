"""Every public exception class of the libraries that reach the world becomes one of ours.

The libraries are paramiko (SSH), psycopg (PostgreSQL), httpx (HTTP) and oracledb (Oracle); each
is translated in exactly one executor module. This enumerates each library's public exception
classes and pushes an instance of each through that module's translation: the result must be a
``DrillError`` subclass chosen by the module's table, never the library's own exception and never
a catch-all that the table does not name.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Iterator

import httpx
import oracledb
import paramiko
import psycopg
import psycopg.errors
import pytest

from drills.executors import http as http_executor
from drills.executors import oracle as oracle_executor
from drills.executors import postgres as pg_executor
from drills.executors import ssh as ssh_executor
from drills.model.errors import DrillError


def public_exceptions(*modules: types.ModuleType) -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("_") or not inspect.isclass(value):
                continue
            if issubclass(value, BaseException) and value.__module__.split(".")[0] in (
                module.__name__.split(".")[0],
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return sorted(found.values(), key=lambda c: (c.__module__, c.__qualname__))


@functools.cache
def paramiko_samples() -> dict[type[BaseException], BaseException]:
    """paramiko's exceptions whose constructors want more than a message."""
    key = paramiko.ECDSAKey.generate()
    return {
        paramiko.BadHostKeyException: paramiko.BadHostKeyException("127.0.0.2", key, key),
        paramiko.ssh_exception.ProxyCommandFailure: (
            paramiko.ssh_exception.ProxyCommandFailure("ssh -W", "exit 255")
        ),
        paramiko.ssh_exception.NoValidConnectionsError: (
            paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.2", 22): OSError(111)})
        ),
        paramiko.ChannelException: paramiko.ChannelException(2, "connect failed"),
        paramiko.BadAuthenticationType: paramiko.BadAuthenticationType("no", ["password"]),
        paramiko.pkey.UnknownKeyType: paramiko.pkey.UnknownKeyType("ssh-foo", b"\0"),
    }


def instance(cls: type[BaseException]) -> BaseException:
    """An instance of ``cls`` without knowing its constructor."""
    special = paramiko_samples().get(cls)
    if special is not None:
        return special
    for args in (("boom",), ()):
        try:
            return cls(*args)
        except TypeError:
            continue
    return cls.__new__(cls)


def in_table(exc: BaseException, table: Iterator[type[BaseException]]) -> bool:
    return any(isinstance(exc, cls) for cls in table)


PSYCOPG = public_exceptions(psycopg, psycopg.errors)
HTTPX = public_exceptions(httpx)
ORACLEDB = public_exceptions(oracledb)
PARAMIKO = list(ssh_executor.PARAMIKO_EXCEPTIONS)


def test_the_enumeration_finds_the_libraries_exceptions() -> None:
    # If the walk found nothing the tests below would pass on nothing.
    assert len(PSYCOPG) > 200  # every SQLSTATE has its class in psycopg.errors
    assert httpx.ConnectError in HTTPX and httpx.InvalidURL in HTTPX
    assert oracledb.DatabaseError in ORACLEDB and oracledb.Warning in ORACLEDB
    assert paramiko.BadHostKeyException in PARAMIKO and len(PARAMIKO) >= 15


@pytest.mark.parametrize("cls", PSYCOPG, ids=lambda c: c.__qualname__)
def test_every_psycopg_error_becomes_ours(cls: type[BaseException]) -> None:
    exc = instance(cls)
    if isinstance(exc, pg_executor.CONTROL_FLOW):
        assert not isinstance(exc, pg_executor.LIBRARY_ERRORS)  # psycopg catches it itself
        return
    assert in_table(exc, (c for c, _ in pg_executor.ERROR_TABLE)), f"{cls} is not in the table"
    assert isinstance(pg_executor.translate(exc, host="pg1"), DrillError)
    with pytest.raises(DrillError), pg_executor.errors(host="pg1"):
        raise exc


@pytest.mark.parametrize("cls", HTTPX, ids=lambda c: c.__qualname__)
def test_every_httpx_error_becomes_ours(cls: type[BaseException]) -> None:
    exc = instance(cls)
    assert in_table(exc, (c for c, _ in http_executor.ERROR_TABLE)), f"{cls} is not in the table"
    ours = http_executor.translate(exc, host="app", doing="GET /health")
    assert isinstance(ours, DrillError) and ours.host == "app"


@pytest.mark.parametrize("cls", ORACLEDB, ids=lambda c: c.__qualname__)
def test_every_oracledb_error_becomes_ours(cls: type[BaseException]) -> None:
    exc = instance(cls)
    with pytest.raises(DrillError) as caught, oracle_executor.errors(host="ora1"):
        raise exc
    assert caught.value.host == "ora1"


@pytest.mark.parametrize("cls", PARAMIKO, ids=lambda c: c.__qualname__)
def test_every_paramiko_error_becomes_ours(cls: type[BaseException]) -> None:
    exc = instance(cls)
    assert in_table(exc, iter(ssh_executor.ERROR_TABLE)), f"{cls} is not in the table"
    ours = ssh_executor.translate(
        exc, node="pg1", address="127.0.0.2:22", doing="logging in as drctl to"
    )
    assert isinstance(ours, DrillError) and ours.host == "pg1"


def test_a_real_connection_error_names_the_node() -> None:
    # Port 9 on loopback: nothing listens there (discard is not run on these machines).
    session = pg_executor.SqlExecutor(
        "host=127.0.0.1 port=9 user=x dbname=x connect_timeout=1", host="pg9"
    )
    with pytest.raises(DrillError) as caught:
        session.query("select 1")
    assert caught.value.host == "pg9" and "pg9" in str(caught.value)
