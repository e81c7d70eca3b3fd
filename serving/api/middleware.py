"""One pure-ASGI middleware for every request: id, size limit, metrics, the access log and the
500 answer to an unexpected error.

Pure ASGI (not `BaseHTTPMiddleware`) so it adds microseconds, not a task per request; the
metric series of each (method, route, status) are looked up once, and the access line is written
only when asked (`RECSYS_API_ACCESS_LOG`: formatting and writing a JSON line per request cost
about a tenth of the throughput of a cache hit). It is the
one place that sets `X-Request-ID`: every answer passes through it, error answers included (the
exception handlers run inside it; an unexpected error is answered here, with the request's id,
rather than by Starlette's outermost error middleware, which runs after the id is gone).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.logs import request_id_var
from serving.api.metrics import ApiMetrics

logger = logging.getLogger(__name__)
access_log = logging.getLogger("serving.api.access")

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class RequestMiddleware:
    """Sets `X-Request-ID` (taken from the request when sane, else a new uuid4), refuses bodies
    over `max_body_bytes` (413), answers an unexpected error with a JSON 500, records
    `ApiMetrics` by route template and status, and with `access_log` logs one line per
    request (at INFO, on `serving.api.access`)."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, max_body_bytes: int,
                 access_log: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self._series: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def _record(self, method: str, template: str, status: int, elapsed: float) -> None:
        key = (method, template, str(status))
        series = self._series.get(key)
        if series is None:  # labels() locks and hashes each time: keep the children
            series = (self.metrics.requests.labels(*key), self.metrics.latency.labels(*key))
            self._series[key] = series
        series[0].inc()
        series[1].observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, REQUEST_ID_HEADER)
        if given and _REQUEST_ID_RE.fullmatch(given):
            request_id = given.decode("ascii")
        else:
            request_id = uuid.uuid4().hex
        token = request_id_var.set(request_id)
        status = 500
        limit = self.max_body_bytes

        length = _header(scope, b"content-length")
        too_large = False
        if length is not None:
            try:
                too_large = int(length) > limit
            except ValueError:
                too_large = True

        app_receive = receive
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # A streamed body without content-length: buffer it up to the limit, then replay.
            chunks: list[bytes] = []
            received = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                received += len(chunks[-1])
                if received > limit:
                    too_large = True
                    break
                if not message.get("more_body", False):
                    break
            replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks),
                                      "more_body": False}]

            async def app_receive() -> Message:
                return replay.pop() if replay else await receive()

        started_response = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(key.lower() == REQUEST_ID_HEADER for key, _ in headers):
                    headers.append((REQUEST_ID_HEADER, request_id.encode("ascii", "replace")))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            if too_large:
                await _send_json(send_wrapper, 413,
                                 b'{"detail":"request body larger than %d bytes"}' % limit)
            else:
                await self.app(scope, app_receive, send_wrapper)
        except Exception as exc:
            status = 500
            if started_response:  # half an answer is out: let the server drop the connection
                raise
            logger.error("unhandled error: %r", exc, exc_info=exc)
            await _send_json(send_wrapper, 500, b'{"detail":"internal error"}')
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self._record(scope.get("method", "GET"), template, status, elapsed)
            if self.access_log and access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %d", scope.get("method"), scope.get("path"), status,
                    extra={"route": template, "status": status,
                           "duration_ms": round(elapsed * 1000, 3), "client": _client(scope)},
                )
            request_id_var.reset(token)


def _client(scope: Scope) -> str | None:
    client: Any = scope.get("client")
    return client[0] if client else None


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
