"""Request-body limit enforced while the body streams in, before anything parses it.

A ``Content-Length`` header is only a claim, and a chunked request has none. This pure ASGI
middleware reads the body itself, stops at ``max_body`` bytes and answers 413 without
reading the rest; the application then receives the (bounded) body it buffered. So JSON
parsing and validation never see more than ``max_body`` bytes, whatever the client sends.

Example
-------
>>> import asyncio
>>> async def app(scope, receive, send):
...     body = (await receive())["body"]
...     await send({"type": "http.response.start", "status": 200, "headers": []})
...     await send({"type": "http.response.body", "body": str(len(body)).encode()})
>>> sent = []
>>> chunks = iter([{"type": "http.request", "body": b"x" * 8, "more_body": True},
...                {"type": "http.request", "body": b"x" * 8, "more_body": False}])
>>> async def receive(): return next(chunks)
>>> async def send(m): sent.append(m)
>>> asyncio.run(BodyLimit(app, max_body=10)({"type": "http", "method": "POST", "headers": []},
...                                          receive, send))
>>> sent[0]["status"]
413
"""

from __future__ import annotations

import json

__all__ = ["BodyLimit"]


class BodyLimit:
    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, int(max_body)

    async def _refuse(self, send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_large = f"request body too large (limit {self.max_body} bytes)"
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    return await self._refuse(send, 400, "invalid Content-Length header")
                if declared > self.max_body:
                    return await self._refuse(send, 413, too_large)
        parts, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await self._refuse(send, 413, too_large)
            parts.append(chunk)
            if not msg.get("more_body", False):
                break
        body, sent = b"".join(parts), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as ASGI expects

        return await self.app(scope, replay, send)
