"""Secrets never reach a journal, record, log or report: the last line of defence.

Secrets are named, never written (an environment names ``password_env`` or ``password_file``), so
drctl itself never puts one in a record. But a host can print one: a script that echoes its
connection string, an error message quoting a DSN. Everything a run journals, everything sealed
into the record store, every report and every ``drctl`` log line passes through ``redact``, which
replaces each known secret value with ``[REDACTED]``.

Known secrets are:

- the values of the variables and files an environment names for its passwords (the runner
  registers them with ``register_environment`` when it loads the environment);
- any value registered with ``register`` (the record store's URL password, for instance);
- the value of every process environment variable whose *name* says it holds a secret
  (``PASSWORD``, ``PASSWD``, ``SECRET``, ``TOKEN``, ``CRED``, ``API_KEY``, ``PRIVATE_KEY``...).

Values shorter than ``MIN_LENGTH`` are not redacted: replacing every "on" or "1" in a record
would destroy it and protect nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

    from drills.model.environment import Environment

MASK = "[REDACTED]"
MIN_LENGTH = 6
SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CRED|API_?KEY|PRIVATE_?KEY|AUTH_KEY|PGPASS",
    re.IGNORECASE,
)

_registered: set[str] = set()
_lock = threading.Lock()
T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")


def register(value: str | None) -> None:
    """Remember a secret value so that it is redacted wherever it appears."""
    if value and len(value) >= MIN_LENGTH:
        with _lock:
            _registered.add(value)


def register_environment(env: Environment) -> None:
    """Register the passwords an environment names (read here only to be masked): each
    node's PostgreSQL or Oracle password, and an Oracle node's wallet and dgmgrl passwords."""
    for node in env.nodes.values():
        variables: list[str | None] = []
        files: list[str | None] = []
        if node.postgres is not None:
            variables.append(node.postgres.password_env)
            files.append(node.postgres.password_file)
        oracle = node.oracle
        if oracle is not None:
            variables += [
                oracle.password_env,
                oracle.wallet_password_env,
                oracle.dgmgrl_password_env,
            ]
            files.append(oracle.password_file)
        for variable in variables:
            if variable:
                register(os.environ.get(variable))
        for file in files:
            if file:
                with contextlib.suppress(OSError):
                    register(Path(file).expanduser().read_text().strip())


def secret_values() -> list[str]:
    """Every known secret, longest first (so a secret containing another is masked whole)."""
    found = set(_registered)
    for name, value in os.environ.items():
        if SECRET_NAME.search(name) and len(value) >= MIN_LENGTH:
            found.add(value)
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    for secret in secret_values() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_data(data: T, secrets: list[str] | None = None) -> T:
    """The same JSON-like structure with every string (keys too) redacted."""
    found = secret_values() if secrets is None else secrets
    if not found:
        return data
    return _walk(data, found)  # type: ignore[no-any-return]


def redact_model(model: M) -> M:
    """A pydantic model with every secret masked (the same object when there is none)."""
    found = secret_values()
    if not found:
        return model
    data = model.model_dump(mode="json", by_alias=True)
    masked = _walk(data, found)
    return model if masked == data else type(model).model_validate(masked)


def _walk(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {_walk(k, secrets): _walk(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, secrets) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = secret_values()
        if not found:
            return True
        message = record.getMessage()
        masked = redact(message, found)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            masked_exc = redact(text, found)
            if masked_exc != text:
                record.exc_info, record.exc_text = None, masked_exc
        return True


def install_log_filter(logger_name: str = "drctl") -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())


install_log_filter()
