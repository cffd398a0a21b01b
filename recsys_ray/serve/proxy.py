"""The HTTP edge: a bound on header sizes, and JSON for the answers Serve's proxy makes itself.

Serve 2.60 starts uvicorn with fixed arguments (no header limits with its
httptools parser), and its proxy answers overload (503/429), timeouts (408)
and unknown routes (404) in plain text; when a replica dies mid-request the
proxy sends nothing and uvicorn answers a plain-text 500. Its one hook is
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`, a function returning Starlette
middlewares for every proxy: set it to `recsys_ray.serve.proxy:middlewares` in
the environment of every Ray node. `HeaderLimit` also runs in each replica,
where it is always on.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from recsys_ray.serve.errors import error_body

log = logging.getLogger("recsys_ray.serve.proxy")

PROXY_CALLBACK = "recsys_ray.serve.proxy:middlewares"
_PLAIN_TEXT_CODES = {404: "not_found", 408: "request_timeout", 429: "overloaded", 500: "internal_error",
                     503: "unavailable"}


def header_bytes(scope: dict[str, Any]) -> int:
    """The size of a request's header names and values as received."""
    return sum(len(name) + len(value) for name, value in scope.get("headers", ()))


async def send_json(send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    """Answer with a JSON body through an ASGI `send`."""
    content = json.dumps(body, separators=(",", ":")).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": content})


class HeaderLimit:
    """ASGI middleware: a request whose headers total more than `max_bytes` gets 431."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and header_bytes(scope) > self.max_bytes:
            await send_json(send, 431, error_body(
                "headers_too_large", f"the request headers exceed {self.max_bytes} bytes in all",
                {"limit_bytes": self.max_bytes}), {"Connection": "close"})
            return
        await self.app(scope, receive, send)


class ProxyAnswersAsJson:
    """ASGI middleware around Serve's proxy: its plain-text error answers become JSON
    error bodies (status and headers such as `Retry-After` kept), and a request left
    without any answer (its replica died) gets 503 with `Retry-After`.

    Applications answering in JSON pass through untouched; so do their successes.
    """

    def __init__(self, app, retry_after_s: int) -> None:
        self.app = app
        self.retry_after_s = max(1, retry_after_s)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        held: dict[str, Any] | None = None  # a plain-text error answer, collected to be rewritten
        text = bytearray()

        async def answer(message) -> None:
            nonlocal started, held
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400 and _is_plain_text(message.get("headers", ())):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                text.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._rewrite(send, held, bytes(text))
                return
            await send(message)

        try:
            await self.app(scope, receive, answer)
        except Exception:
            if started:
                raise
            log.exception("the proxy failed before answering %s %s", scope.get("method"), scope.get("path"))
        if not started:
            await send_json(send, 503, error_body(
                "replica_failed",
                "the service failed before answering; the request may or may not have been stored. Retry "
                "after Retry-After with the same Idempotency-Key to store it exactly once"),
                {"Retry-After": str(self.retry_after_s)})

    async def _rewrite(self, send, start: dict[str, Any], text: bytes) -> None:
        status = start["status"]
        kept = {name.decode("latin-1"): value.decode("latin-1") for name, value in start.get("headers", ())
                if name.lower() not in (b"content-type", b"content-length")}
        if status in (429, 500, 503):
            kept.setdefault("retry-after", str(self.retry_after_s))
        message = text.decode("utf-8", "replace").strip() or f"HTTP {status}"
        await send_json(send, status, error_body(_PLAIN_TEXT_CODES.get(status, "http_error"), message), kept)


def _is_plain_text(headers) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.lower().startswith(b"text/plain")
    return False


def middlewares() -> list:
    """The callback named by `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`: runs in each proxy,
    taking the header bound and `Retry-After` from the environment's `RecsysConfig`."""
    from starlette.middleware import Middleware

    from recsys_ray.config import RecsysConfig

    cfg = RecsysConfig.load()
    return [Middleware(HeaderLimit, max_bytes=cfg.api.max_header_bytes),
            Middleware(ProxyAnswersAsJson, retry_after_s=cfg.serve.retry_after_s)]
