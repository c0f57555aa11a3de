"""The certificate a TLS service presents, read with the standard library's ``ssl``.

drctl connects from where it runs to the service's host and port, as a client would, completes
a TLS handshake without judging the chain (a hospital's internal services often use their own
CA or a self-signed certificate), and reads the leaf certificate; then it tries once more with
the system's CAs, to say whether the chain is trusted. socket's and ssl's errors become ours
here and only here.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

from drills.model.errors import CommandTimeout, ConnectionFailed, ExecutorError

# socket's and ssl's errors and what each becomes: the first that matches wins.
ERROR_TABLE: tuple[tuple[type[BaseException], type[ExecutorError]], ...] = (
    (TimeoutError, CommandTimeout),
    (socket.timeout, CommandTimeout),
    (ssl.SSLError, ConnectionFailed),
    (ConnectionError, ConnectionFailed),
    (socket.gaierror, ConnectionFailed),
    (OSError, ConnectionFailed),
)


def translate(exc: BaseException, *, host: str, doing: str) -> ExecutorError:
    text = f"{doing}: {str(exc) or type(exc).__name__}"
    for library_class, ours in ERROR_TABLE:
        if isinstance(exc, library_class):
            return ours(text, host=host)
    return ExecutorError(text, host=host)


@dataclass(frozen=True)
class PeerCertificate:
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    sha256: str
    trusted: bool
    trust_error: str
    protocol: str

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer


def _name(name: object) -> str:
    rfc4514 = getattr(name, "rfc4514_string", None)
    return str(rfc4514()) if callable(rfc4514) else str(name)


def _handshake(
    host: str, port: int, server_name: str, timeout: float, context: ssl.SSLContext
) -> tuple[bytes, str]:
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        return der or b"", tls.version() or ""


def peer_certificate(
    host: str, port: int, *, server_name: str | None = None, timeout: float = 5.0, node: str
) -> PeerCertificate:
    """The leaf certificate ``host:port`` presents, and whether the system's CAs trust it."""
    from cryptography import x509

    name = server_name or host
    doing = f"TLS handshake with {host}:{port}"
    loose = ssl.create_default_context()
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    try:
        der, protocol = _handshake(host, port, name, timeout, loose)
    except (OSError, ssl.SSLError) as exc:
        raise translate(exc, host=node, doing=doing) from exc
    if not der:
        raise ConnectionFailed(f"{doing}: the service presented no certificate", host=node)
    trusted, why = True, ""
    try:
        _handshake(host, port, name, timeout, ssl.create_default_context())
    except ssl.SSLCertVerificationError as exc:
        trusted, why = False, str(exc.verify_message or exc)
    except (OSError, ssl.SSLError) as exc:
        trusted, why = False, str(exc) or type(exc).__name__
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ConnectionFailed(
            f"{doing}: the certificate cannot be read: {exc}", host=node
        ) from exc
    return PeerCertificate(
        subject=_name(cert.subject),
        issuer=_name(cert.issuer),
        not_before=cert.not_valid_before_utc.astimezone(UTC),
        not_after=cert.not_valid_after_utc.astimezone(UTC),
        sha256=hashlib.sha256(der).hexdigest(),
        trusted=trusted,
        trust_error=why,
        protocol=protocol,
    )
