"""HTTP requests with httpx. httpx's errors become ours here and only here."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from drills.model.errors import (
    CommandFailed,
    CommandTimeout,
    ConnectionFailed,
    DrillError,
    ExecutorError,
    InputError,
)

# httpx's public exception classes and what each becomes: the first that matches wins.
ERROR_TABLE: tuple[tuple[type[BaseException], type[DrillError]], ...] = (
    (httpx.TimeoutException, CommandTimeout),
    (httpx.TransportError, ConnectionFailed),  # connect, read, write, protocol, proxy, ...
    (httpx.HTTPStatusError, CommandFailed),
    (httpx.InvalidURL, InputError),
    (httpx.UnsupportedProtocol, InputError),
    (httpx.HTTPError, ExecutorError),
    (httpx.StreamError, ExecutorError),
    (httpx.CookieConflict, ExecutorError),
)
LIBRARY_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, httpx.CookieConflict)


def translate(exc: BaseException, *, host: str, doing: str) -> DrillError:
    """The one mapping from an httpx error to ours (``ERROR_TABLE``)."""
    text = f"{doing}: {str(exc) or type(exc).__name__}"
    for library_class, ours in ERROR_TABLE:
        if isinstance(exc, library_class):
            if issubclass(ours, CommandFailed):
                return ours(text, returncode=1, host=host)
            return ours(text, host=host)
    return ExecutorError(text, host=host)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: str
    seconds: float

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class HttpExecutor:
    """Talks to one HTTP service. ``host`` names it in errors."""

    def __init__(self, base_url: str, *, host: str, timeout: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = host
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    def request(self, method: str, path: str, *, body: Any = None) -> HttpResponse:
        started = time.monotonic()
        try:
            response = self._client.request(method, path, json=body)
        except LIBRARY_ERRORS as exc:
            raise translate(exc, host=self.host, doing=f"{method} {self.base_url}{path}") from exc
        return HttpResponse(response.status_code, response.text, time.monotonic() - started)

    def close(self) -> None:
        self._client.close()
