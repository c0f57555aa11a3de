"""The ONE place paramiko and socket errors become ours: :func:`translate`, from the table
:data:`ERROR_TABLE`, for :class:`~drills.executors.ssh.SshExecutor`.

Nothing above :mod:`drills.executors.ssh` sees a library exception: every paramiko and socket
error the executor meets goes through :func:`translate` (or is first unwrapped by
:func:`underlying_error`, when paramiko reports only its consequence), and a host key that
known_hosts does not hold is refused here too (:class:`RejectUnknownHostKey`).
``PARAMIKO_EXCEPTIONS`` lists every public exception class paramiko defines, so a test can check
that each is mapped. :mod:`drills.executors.ssh` re-exports the names tests import from it.
"""

from __future__ import annotations

import base64
import hashlib
import socket

import paramiko
import paramiko.auth_strategy
import paramiko.pkey
import paramiko.sftp
import paramiko.ssh_exception

from drills.model.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DrillError,
    ExecutorError,
    HostKeyRejected,
    InputError,
)

#: Every exception class paramiko exports, and the OS/socket errors it lets through, mapped to
#: the class of ours it becomes. :func:`translate` walks an exception's MRO through this table.
ERROR_TABLE: dict[type[BaseException], type[DrillError]] = {
    # host keys
    paramiko.BadHostKeyException: HostKeyRejected,
    # authentication
    paramiko.AuthenticationException: AuthenticationFailed,
    paramiko.BadAuthenticationType: AuthenticationFailed,
    paramiko.ssh_exception.PartialAuthentication: AuthenticationFailed,
    paramiko.PasswordRequiredException: AuthenticationFailed,
    paramiko.ssh_exception.UnableToAuthenticate: AuthenticationFailed,
    paramiko.auth_strategy.AuthFailure: AuthenticationFailed,
    # the connection and its channels
    paramiko.ChannelException: ConnectionFailed,
    paramiko.ssh_exception.NoValidConnectionsError: ConnectionFailed,
    paramiko.ssh_exception.IncompatiblePeer: ConnectionFailed,
    paramiko.ssh_exception.MessageOrderError: ConnectionFailed,
    paramiko.ProxyCommandFailure: ConnectionFailed,
    paramiko.SSHException: ConnectionFailed,
    # configuration and key files
    paramiko.ssh_exception.ConfigParseError: InputError,
    paramiko.ssh_exception.CouldNotCanonicalize: InputError,
    paramiko.pkey.UnknownKeyType: InputError,
    # file transfer (not used by drctl today; mapped so nothing escapes)
    paramiko.sftp.SFTPError: ExecutorError,
    # the OS and the socket
    TimeoutError: ConnectionFailed,  # socket.timeout is TimeoutError
    ConnectionRefusedError: ConnectionFailed,
    ConnectionResetError: ConnectionFailed,
    ConnectionAbortedError: ConnectionFailed,
    BrokenPipeError: ConnectionFailed,
    socket.gaierror: ConnectionFailed,
    socket.herror: ConnectionFailed,
    EOFError: ConnectionFailed,
    OSError: ConnectionFailed,  # no route to host, host down, network unreachable, ...
}


def _paramiko_exceptions() -> tuple[type[BaseException], ...]:
    """Every public exception class of ``paramiko`` and ``paramiko.ssh_exception``."""
    found: dict[str, type[BaseException]] = {}
    for module in (paramiko, paramiko.ssh_exception):
        for name in dir(module):
            value = getattr(module, name)
            if name.startswith("_") or not isinstance(value, type):
                continue
            if issubclass(value, BaseException) and value.__module__.startswith("paramiko"):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return tuple(found[key] for key in sorted(found))


#: What a test enumerates: every public exception class paramiko defines.
PARAMIKO_EXCEPTIONS: tuple[type[BaseException], ...] = _paramiko_exceptions()


def host_key_fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...``, as ``ssh-keygen -l`` and OpenSSH's own prompts show it."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _error_class(exc: BaseException) -> type[DrillError] | None:
    for klass in type(exc).__mro__:
        if klass in ERROR_TABLE:
            return ERROR_TABLE[klass]
    return None


def translate(
    exc: BaseException,
    *,
    node: str,
    address: str,
    doing: str,
    known_hosts: str | None = None,
    local_file: str | None = None,
) -> DrillError:
    """The error of ours that ``exc`` (raised by paramiko or the socket) becomes.

    ``doing`` says what drctl was doing, ending in a preposition ("logging in as drctl to",
    "opening a session for pg_ctl status on");
    ``address`` is host:port; ``local_file`` names a file of ours being read (a key file, a
    known_hosts file): its problems are configuration problems (InputError).
    """
    if isinstance(exc, DrillError):
        return exc
    detail = str(exc) or type(exc).__name__
    if local_file is not None:
        encrypted = isinstance(exc, paramiko.PasswordRequiredException) or (
            isinstance(exc, TypeError) and "password" in detail.lower()
        )
        if encrypted:
            detail = (
                "the key is encrypted: name the environment variable holding its passphrase "
                "in `passphrase_env`"
            )
        return InputError(f"{doing} {local_file} (for {address}) failed: {detail}", host=node)
    klass = _error_class(exc) or ExecutorError
    if isinstance(exc, paramiko.BadHostKeyException):
        offered = host_key_fingerprint(exc.key)
        expected = host_key_fingerprint(exc.expected_key)
        where = known_hosts or "known_hosts"
        message = (
            f"{doing} {address} refused: its host key CHANGED. It offered {exc.key.get_name()} "
            f"{offered}; {where} expects {expected}. Someone may be impersonating the host, or "
            f"it was reinstalled: confirm the new key out of band before replacing its line in "
            f"{where}. Nothing was run."
        )
    elif isinstance(exc, paramiko.AuthenticationException):
        message = (
            f"{doing} {address} failed: the host refused the login ({detail}); check that the "
            "user may log in (AllowUsers) and that the key is in its authorized_keys"
        )
    elif isinstance(exc, ConnectionRefusedError):
        message = f"{doing} {address} failed: connection refused (is sshd listening there?)"
    elif isinstance(exc, TimeoutError):
        message = f"{doing} {address} failed: no answer in time ({detail})"
    elif isinstance(exc, EOFError):
        message = f"{doing} {address} failed: the host closed the connection"
    elif isinstance(exc, socket.gaierror):
        message = f"{doing} {address} failed: the name does not resolve ({detail})"
    else:
        message = f"{doing} {address} failed: {type(exc).__name__}: {detail}"
    return klass(message, host=node)


def underlying_error(
    client: paramiko.SSHClient, exc: BaseException, timeout: float
) -> BaseException:
    """The transport thread's own error when paramiko reports only its consequence: after a
    handshake that ran out of time, connect() says "No existing session"."""
    if type(exc) is not paramiko.SSHException:
        return exc
    transport = client.get_transport()
    saved = transport.get_exception() if transport is not None else None
    if saved is not None:
        return saved
    if str(exc) == "No existing session":
        return TimeoutError(f"the SSH handshake did not finish within {timeout:g}s")
    return exc


# -- host keys -----------------------------------------------------------------------------


class RejectUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Never accept a key that known_hosts does not hold: say which one it was."""

    def __init__(self, node: str, address: str, known_hosts: str) -> None:
        self.node = node
        self.address = address
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        name = hostname  # "[127.0.0.2]:2201" off port 22
        raise HostKeyRejected(
            f"connecting to {self.address} refused: unknown host key {key.get_name()} "
            f"{host_key_fingerprint(key)}; {self.known_hosts} has no entry for {name}. "
            "Nothing was run. Confirm the fingerprint on the host out of band (ssh-keygen -lf "
            f"/etc/ssh/ssh_host_*_key.pub), then add `{name} {key.get_name()} "
            f"{key.get_base64()}` to {self.known_hosts}.",
            host=self.node,
        )
