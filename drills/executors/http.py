"""HTTP requests with httpx. httpx's errors become ours here and only here."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from drills.model.errors import CommandTimeout, ConnectionFailed, ExecutorError


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
        except httpx.TimeoutException as exc:
            raise CommandTimeout(
                f"{method} {self.base_url}{path} timed out", host=self.host
            ) from exc
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise ConnectionFailed(
                f"{method} {self.base_url}{path}: {exc or type(exc).__name__}", host=self.host
            ) from exc
        except httpx.HTTPError as exc:
            raise ExecutorError(f"{method} {self.base_url}{path}: {exc}", host=self.host) from exc
        return HttpResponse(response.status_code, response.text, time.monotonic() - started)

    def close(self) -> None:
        self._client.close()
