"""The site's Ed25519 key that signs every sealed record (``drctl keys init``).

Files, in ``$DRCTL_HOME/keys`` (or ``DRCTL_KEYS_DIR``)::

    records-ed25519.key     the private key, PKCS#8 PEM, mode 0600: it never leaves the site
    records-ed25519.pub     the public key, SubjectPublicKeyInfo PEM: give it to auditors
    retired/KEYID.pub       public keys of earlier keys (``drctl keys init --rotate``), kept so
                            the records they signed still verify

A key is named by its *key id*: the first 16 hex digits of the SHA-256 of its 32 raw public bytes.
Every sealed header names the key id that signed it.

If a record must be sealed and the site has no key yet, one is made (and said so in the log): a
drill that ran must never lose its record for want of a key. ``drctl keys init`` is the deliberate
way, and ``drctl keys show`` prints the fingerprint to hand to auditors.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from drills.home import subdir
from drills.model.errors import InputError

log = logging.getLogger("drctl")

PRIVATE_FILE = "records-ed25519.key"
PUBLIC_FILE = "records-ed25519.pub"
RETIRED_DIR = "retired"


def keys_dir() -> Path:
    configured = os.environ.get("DRCTL_KEYS_DIR")
    if configured:
        path = Path(configured).expanduser()
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path
    path = subdir("keys")
    with contextlib.suppress(OSError):
        path.chmod(0o700)
    return path


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    key: Ed25519PublicKey
    source: str

    @property
    def pem(self) -> bytes:
        return public_pem(self.key)

    def verify(self, signature_b64: str, message: bytes) -> bool:
        try:
            self.key.verify(base64.b64decode(signature_b64, validate=True), message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    path: Path

    @property
    def public(self) -> PublicKey:
        public = self.private.public_key()
        return PublicKey(key_id_of(public), public, str(self.path.with_name(PUBLIC_FILE)))

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode("ascii")


def _private_path(directory: Path) -> Path:
    configured = os.environ.get("DRCTL_SIGNING_KEY")
    return Path(configured).expanduser() if configured else directory / PRIVATE_FILE


def _write_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Write a file that must not exist yet; False if another process made it first."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def _write_public(directory: Path, key: SigningKey) -> None:
    path = directory / PUBLIC_FILE
    pem = key.public.pem
    if path.exists() and path.read_bytes() == pem:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pem)
    tmp.chmod(0o644)
    tmp.replace(path)


def _generate(directory: Path) -> tuple[SigningKey, bool]:
    path = _private_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    made = _write_exclusive(path, pem, 0o600)
    key = SigningKey(private, path) if made else _read_private(path)
    _write_public(directory, key)
    return key, made


def _read_private(path: Path) -> SigningKey:
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read the signing key {path}: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise InputError(f"{path} is not an Ed25519 private key")
    return SigningKey(loaded, path)


def load_signing_key(directory: Path | None = None, *, create: bool = False) -> SigningKey:
    """The site's signing key; made (and logged) if missing and ``create`` is set."""
    directory = directory or keys_dir()
    path = _private_path(directory)
    if path.exists():
        return _read_private(path)
    if not create:
        raise InputError(f"no signing key at {path}: run `drctl keys init`")
    key, made = _generate(directory)
    if made:
        log.warning(
            "no signing key was set up: made one at %s (key id %s); give auditors the public "
            "key %s (`drctl keys show`)",
            path,
            key.key_id,
            directory / PUBLIC_FILE,
        )
    return key


def init_keys(directory: Path | None = None, *, rotate: bool = False) -> tuple[SigningKey, str]:
    """``drctl keys init``: make the site's key. With ``rotate``, retire the current one first."""
    directory = directory or keys_dir()
    path = _private_path(directory)
    message = ""
    if path.exists():
        current = _read_private(path)
        if not rotate:
            raise InputError(
                f"a signing key already exists at {path} (key id {current.key_id}); "
                "`drctl keys init --rotate` retires it and makes a new one"
            )
        retired = directory / RETIRED_DIR
        retired.mkdir(exist_ok=True)
        (retired / f"{current.key_id}.pub").write_bytes(current.public.pem)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path.rename(retired / f"{current.key_id}.{stamp}.key")
        message = (
            f"retired key {current.key_id}: its public key stays in {retired} so the records it "
            "signed still verify"
        )
    key, _ = _generate(directory)
    return key, message


def read_public_key(path: Path) -> PublicKey:
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read public key {path}: {exc}") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise InputError(f"{path} is not an Ed25519 public key")
    return PublicKey(key_id_of(loaded), loaded, str(path))


def read_public_keys(paths: list[Path]) -> dict[str, PublicKey]:
    keys = [read_public_key(p) for p in paths]
    return {k.key_id: k for k in keys}


def site_public_keys(directory: Path | None = None) -> dict[str, PublicKey]:
    """The site's current public key and every retired one."""
    directory = directory or keys_dir()
    paths = [directory / PUBLIC_FILE] if (directory / PUBLIC_FILE).exists() else []
    retired = directory / RETIRED_DIR
    if retired.is_dir():
        paths += sorted(retired.glob("*.pub"))
    return read_public_keys(paths)
