"""ASGI guards that run before routing: request size (413) and API key (401).

They are plain ASGI middleware rather than FastAPI dependencies so they act before the body is read or
parsed: an oversized or unauthenticated request costs the server nothing.
"""

from __future__ import annotations

import hmac
import json

from vlmforge.serve.errors import error_body


async def _send_error(send, status: int, message: str, code: str, extra_headers=()) -> None:
    body = json.dumps(error_body(status, message, None, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 for bodies over ``max_bytes``: from Content-Length up front, or while a chunked body streams in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body is larger than the limit of {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await _send_error(send, 413, message, "request_too_large")
            return await self.app(scope, receive, send)  # the HTTP server holds the client to its length
        # No length (chunked): read the body here, up to the limit, then hand it on in one piece.
        chunks, seen, more = [], 0, True
        while more:
            event = await receive()
            if event["type"] != "http.request":
                return
            chunks.append(event.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await _send_error(send, 413, message, "request_too_large")
            more = event.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


class APIKeyGuard:
    """401 unless ``Authorization: Bearer <key>`` matches, for paths under ``prefix``."""

    def __init__(self, app, api_key: str | None, prefix: str | tuple[str, ...] = ("/v1/", "/timings")):
        self.app, self.prefix = app, prefix
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if self.key is None or scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        # compare_digest takes the same time wherever the first differing byte is: no key-guessing by timing
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
            return await _send_error(
                send,
                401,
                "invalid or missing API key (send 'Authorization: Bearer KEY')",
                "invalid_api_key",
                [(b"www-authenticate", b"Bearer")],
            )
        await self.app(scope, receive, send)


def key_matches(candidate: str, api_key: str) -> bool:
    return hmac.compare_digest(candidate.encode(), api_key.encode())
