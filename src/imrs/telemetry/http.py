"""The telemetry HTTP endpoint, served from the supervisor's event loop.

=================  ======  ==================================================================
path               method  answer
=================  ======  ==================================================================
``/``              GET     the dashboard: one HTML page (:mod:`imrs.telemetry.dashboard`)
``/history``       GET     what the dashboard draws, as JSON (:mod:`imrs.telemetry.history`)
``/metrics``       GET     Prometheus text format (:mod:`imrs.telemetry.metrics`)
``/health``        GET     200 and JSON while the supervisor runs (alive)
``/ready``         GET     200 when every zone is served, a worker serves and not draining,
                           else 503; JSON both ways, with the reasons
``/stats``         GET     the counters, zones and workers as JSON (what `imrs stats` shows)
``/drain``         POST    start draining: /ready fails, queries are still answered
``/undrain``       POST    stop draining
=================  ======  ==================================================================

A deliberately small HTTP/1.1 server (one request per connection, ``Connection: close``):
the request head is bounded in size and time, a body is only accepted (and ignored) on POST
up to a few hundred octets, and every malformed request gets a 4xx answer, never an exception.
Draining changes what a load balancer or an anycast announcer sees, so POST is only
accepted from loopback clients; the endpoint has no authentication, and belongs on loopback
or a management network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from imrs.config import ListenAddress
from imrs.telemetry.dashboard import page
from imrs.telemetry.history import History, dashboard_json
from imrs.telemetry.metrics import CONTENT_TYPE, render
from imrs.telemetry.snapshot import Telemetry, TelemetryUnavailable

log = logging.getLogger("imrs.http")

#: Longest request head (request line and headers) accepted.
MAX_HEAD = 8192
#: Longest POST body accepted (and ignored).
MAX_BODY = 1024
#: Seconds a client has to send its request, and to take the answer.
REQUEST_TIMEOUT = 10.0
#: Connections served at once; more are closed at once.
MAX_CONNECTIONS = 64
#: After an error answer, what is still read of the request (octets, seconds) before closing,
#: so that closing with unread data (a reset) does not destroy the answer on its way.
LINGER = (65536, 1.0)

#: (counters wanted) -> a snapshot of the server.
Snapshotter = Callable[[bool], Awaitable[Telemetry]]

_GET_PATHS = ("/", "/history", "/metrics", "/health", "/ready", "/stats")
_POST_PATHS = ("/drain", "/undrain")
_JSON = "application/json"


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class TelemetryServer:
    """Serves the endpoints above on ``address`` from the running event loop."""

    def __init__(self, address: ListenAddress, snapshot: Snapshotter, set_draining: Callable[[bool], None],
                 history: History | None = None, instance: str = ""):
        self.address = address
        self.snapshot = snapshot
        self.set_draining = set_draining
        #: the rates the dashboard draws (None: the page shows only the latest snapshot)
        self.history = history
        #: the name the dashboard shows (the server's identity)
        self.instance = instance
        self._server: asyncio.Server | None = None
        self._busy = 0

    async def start(self) -> None:
        """Bind and listen; OSError when the address cannot be used."""
        self._server = await asyncio.start_server(
            self._connection, self.address.host, self.address.port, family=self.address.family,
            reuse_address=True, limit=MAX_HEAD, backlog=128)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # connections still open end by their own timeouts; do not wait on them
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._busy >= MAX_CONNECTIONS:
            writer.close()
            return
        self._busy += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await self._serve_one(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug here must not take the supervisor down
            log.exception("telemetry HTTP: internal error")
        finally:
            self._busy -= 1
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (TimeoutError, ConnectionError, OSError):
                pass

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_only = False
        try:
            method, path, headers = await _read_head(reader)
            head_only = method == "HEAD"
            if method == "POST":
                await _read_body(reader, headers)
            status, content_type, body = await self._route(method, path, writer)
        except _BadRequest as exc:
            status, content_type, body = exc.status, _JSON, _json({"error": exc.message})
        except TelemetryUnavailable as exc:
            status, content_type, body = HTTPStatus.SERVICE_UNAVAILABLE, _JSON, _json({"error": str(exc)})
        except (ConnectionError, asyncio.IncompleteReadError):
            raise  # the client went away: nobody to answer
        except Exception:  # answer 500 rather than nothing
            log.exception("telemetry HTTP: internal error")
            status, content_type, body = HTTPStatus.INTERNAL_SERVER_ERROR, _JSON, _json({"error": "internal error"})
        extra = "Allow: GET, HEAD, POST\r\n" if status == HTTPStatus.METHOD_NOT_ALLOWED else ""
        header = (f"HTTP/1.1 {status.value} {status.phrase}\r\n"
                  f"Content-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\n"
                  f"Cache-Control: no-store\r\n{extra}"
                  "Connection: close\r\n\r\n").encode("ascii")
        writer.write(header if head_only else header + body)
        await writer.drain()
        if status >= 400:
            await _linger(reader)

    async def _route(self, method: str, path: str, writer: asyncio.StreamWriter) -> tuple[HTTPStatus, str, bytes]:
        path = path.split("?", 1)[0]
        if path not in _GET_PATHS and path not in _POST_PATHS:
            raise _BadRequest(HTTPStatus.NOT_FOUND, f"no such path; try {', '.join(_GET_PATHS[1:] + _POST_PATHS)}")
        if path in _POST_PATHS:
            if method != "POST":
                raise _BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes POST")
            if not _loopback(writer):
                raise _BadRequest(HTTPStatus.FORBIDDEN, f"{path} is only accepted from a loopback address")
            self.set_draining(path == "/drain")
            telemetry = await self.snapshot(False)
            return HTTPStatus.OK, _JSON, _json(telemetry.ready_json())
        if method not in ("GET", "HEAD"):
            raise _BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes GET")
        if path in ("/", "/history"):
            data = dashboard_json(await self.snapshot(True), self.history, self.instance)
            if path == "/history":
                return HTTPStatus.OK, _JSON, _json(data)
            return HTTPStatus.OK, "text/html; charset=utf-8", page(data)
        if path == "/metrics":
            telemetry = await self.snapshot(True)
            return HTTPStatus.OK, CONTENT_TYPE, render(telemetry)
        if path == "/stats":
            telemetry = await self.snapshot(True)
            return HTTPStatus.OK, _JSON, _json(telemetry.stats_json())
        telemetry = await self.snapshot(False)
        if path == "/health":
            return HTTPStatus.OK, _JSON, _json(telemetry.health_json())
        ready = telemetry.ready_json()
        return (HTTPStatus.OK if ready["ready"] else HTTPStatus.SERVICE_UNAVAILABLE), _JSON, _json(ready)


async def _linger(reader: asyncio.StreamReader) -> None:
    """Read (and drop) what the client may still be sending, a little and briefly."""
    left, seconds = LINGER
    try:
        async with asyncio.timeout(seconds):
            while left > 0:
                chunk = await reader.read(min(left, 8192))
                if not chunk:
                    return
                left -= len(chunk)
    except (TimeoutError, ConnectionError):
        pass


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=1) + "\n").encode()


def _loopback(writer: asyncio.StreamWriter) -> bool:
    peer = writer.get_extra_info("peername")
    try:
        address = ipaddress.ip_address(peer[0])
    except (TypeError, IndexError, ValueError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """The request line and headers, checked; _BadRequest otherwise."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"request head over {MAX_HEAD} octets") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise  # the client went away without a word
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "incomplete request head") from None
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "request head is not ASCII") from None
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "expected a request line such as 'GET /metrics HTTP/1.1'")
    method, path, _version = parts
    if not method.isalpha() or not method.isupper():
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "bad method")
    if method not in ("GET", "HEAD", "POST"):
        raise _BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"method {method} not supported")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line")
        headers[name.lower()] = value.strip()
    return method, path, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    """Read and drop a small POST body, so the client is not reset before it reads the answer."""
    if "transfer-encoding" in headers:
        raise _BadRequest(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not a Transfer-Encoding")
    text = headers.get("content-length", "0")
    if not text.isdigit() or len(text) > 9:
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length")
    length = int(text)
    if length > MAX_BODY:
        raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} octets")
    if length:
        await reader.readexactly(length)

