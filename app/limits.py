"""Request body size cap, enforced while the body streams in (not after it is stored),
so an oversized upload costs neither memory nor disk and gets a 413."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        import json

        body = json.dumps(error_body(
            "payload_too_large",
            f"request body exceeds the limit of {self.max_bytes} bytes "
            "(CLUSTERFORGE_MAX_UPLOAD_BYTES)",
            {"limit": self.max_bytes},
        )).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_bytes:
                        await self._reject(send)
                        return
                except ValueError:
                    pass
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)


_CONTROL = bytes(range(0, 32)) + b"\x7f"


class RejectControlCharacters:
    """A URL path that decodes to control characters (%00 …) names nothing this
    service has, and PostgreSQL refuses NUL in a text parameter with an error: answer
    400 before any route or query sees it. (Query parameters are validated by their
    routes, which answer 422.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "").encode("utf-8", "surrogateescape")
            if any(c in _CONTROL for c in path):
                import json

                body = json.dumps(error_body(
                    "bad_request", "control characters in the URL are not allowed")).encode()
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
