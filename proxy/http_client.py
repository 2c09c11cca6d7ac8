"""The upstream HTTP client on the proxy's hot path: HTTP/1.1 over pooled keep-alive connections.

Measured here (docs/performance.md), aiohttp's client spent ~170 us of CPU per request (request and response
objects, cookie jar, tracing hooks, its stream reader); this client writes the request bytes itself and lets
httptools (the C parser uvicorn uses) read the response, ~45 us. It does only what provider calls need:
POST with a body, keep-alive pools per origin, TLS, connect / read / total timeouts, chunked and
close-delimited bodies, gzip/deflate when a server compresses anyway (none is asked to), and backpressure
(a client that reads slowly makes it stop reading from the provider). Redirects are never followed.

Every address dialled goes through the resolver (proxy.ssrf.GuardedResolver in production), so the SSRF
rules hold at connect time; IP literals are checked by the caller (`proxy.ssrf.refused_literal`).

Failures: `ConnectFailed` when no connection could be made, `ResponseBroken` when the answer breaks off or is
not HTTP, builtin `TimeoutError` for every timeout. A request written on a reused connection that the server
had already closed (not a byte answered) is sent once more on a fresh connection.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from functools import lru_cache
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # buffered response bytes above which the socket is not read until the consumer catches up


class TransportError(Exception):
    """The exchange failed below HTTP: no connection, or an answer that broke off."""


class ConnectFailed(TransportError):
    pass


class ResponseBroken(TransportError):
    pass


class _Stale(Exception):
    """A reused connection turned out closed before any byte of the answer: send again on a fresh one."""


class Headers(dict):
    """Response headers by lower-case name (the last value; `getall` has every one)."""

    __slots__ = ("_all",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._all = pairs

    def getall(self, name: str) -> list[str]:
        return [value for key, value in self._all if key == name]


@lru_cache(maxsize=1024)
def _target(url: str) -> tuple[tuple[str, str, int], str, bytes]:
    """(pool key (scheme, host, port), Host header, request-target) of a URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url}")
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, host, port), host_header, path.encode("ascii")


def _request_head(path: bytes, host_header: str, headers: dict[str, str], length: int) -> bytes:
    lines = [b"POST %s HTTP/1.1\r\nHost: %s\r\n" % (path, host_header.encode("idna" if not host_header.isascii()
                                                                              else "ascii"))]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} contains a line break")
        lowered = name.lower()
        if lowered in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # framing headers are this client's to write
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(b"Content-Length: %d\r\n\r\n" % length)
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the response currently being read on it."""

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset_response()

    def _reset_response(self) -> None:
        self.header_pairs: list[tuple[str, str]] = []
        self.status = 0
        self.headers_done = self.complete = self.received = self.paused = self.keep_alive = self.interim = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.error: Exception | None = None
        self.waiter: asyncio.Future | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ResponseBroken(f"the provider's answer is not valid HTTP ({exc})"))
            self.transport.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and exc is None and self._close_delimited():
            self.complete = True  # a body without length or chunking ends with the connection
            self._wake()
        elif not self.complete:
            if not self.received:
                self._fail(_Stale(str(exc or "closed")))
            else:
                self._fail(ResponseBroken(f"the provider closed the connection mid-answer ({exc or 'EOF'})"))

    # -- httptools callbacks ------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_pairs.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self.header_pairs, self.interim = [], True
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message is complete
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True
        self._wake()

    # -- reading ------------------------------------------------------------------------------------------

    def _close_delimited(self) -> bool:
        names = {name for name, _ in self.header_pairs}
        return "content-length" not in names and "transfer-encoding" not in names

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    async def wait(self, timeout: float) -> None:
        """Until something happens on the connection (headers, data, end, failure), at most `timeout`."""
        if timeout <= 0:
            raise TimeoutError("the provider did not answer in time")
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def take(self) -> bytes:
        """Everything buffered, as one piece (a burst of small chunks is handled once, not per chunk)."""
        chunks = self.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("the provider did not answer in time"))


_DEFLATE = object()  # a deflate body whose wrapping is not known before its first bytes


class Response:
    """One upstream answer; its body is read with `read()` or `iter_chunks()`, then `release()`."""

    __slots__ = ("_client", "_conn", "_read_timeout", "_deadline", "_inflate", "status", "headers",
                 "content_length", "_released")

    def __init__(self, client: HttpClient, conn: _Connection, read_timeout: float, deadline: float | None) -> None:
        self._client, self._conn = client, conn
        self._read_timeout, self._deadline = read_timeout, deadline
        self.status = conn.status
        self.headers = Headers(conn.header_pairs)
        length = self.headers.get("content-length")
        self.content_length = int(length) if length and length.isdigit() else None
        encoding = self.headers.get("content-encoding", "").strip().lower()
        self._inflate = zlib.decompressobj(wbits=31) if encoding == "gzip" else (
            _DEFLATE if encoding == "deflate" else None)
        self._released = False

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.chunks:
                chunk = conn.take()
                if self._inflate is not None:
                    chunk = self._inflated(chunk)
                    if not chunk:
                        continue
                yield chunk
            elif conn.complete:
                return
            elif conn.error is not None:
                raise _public(conn.error)
            else:
                await conn.wait(_budget(self._read_timeout, self._deadline))

    async def read(self) -> bytes:
        conn, parts = self._conn, []
        while True:
            if conn.chunks:  # taken as they come, so a large body never stalls on backpressure
                parts.append(conn.take())
            if conn.complete:
                break
            if conn.error is not None:
                raise _public(conn.error)
            await conn.wait(_budget(self._read_timeout, self._deadline))
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return self._inflated(body) if self._inflate is not None else body

    def _inflated(self, data: bytes) -> bytes:
        if self._inflate is _DEFLATE:
            # "deflate" means zlib-wrapped, yet some servers send it raw: the zlib header tells them apart
            wrapped = len(data) < 2 or ((data[0] & 0x0F) == 8 and int.from_bytes(data[:2], "big") % 31 == 0)
            self._inflate = zlib.decompressobj(wbits=15 if wrapped else -15)
        try:
            return self._inflate.decompress(data)
        except zlib.error as exc:
            raise ResponseBroken(f"the provider's compressed answer is corrupt ({exc})") from None

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._client._checkin(self._conn)


def _budget(read_timeout: float, deadline: float | None) -> float:
    if deadline is None:
        return read_timeout
    return min(read_timeout, deadline - time.monotonic())


def _public(error: Exception) -> Exception:
    if isinstance(error, _Stale):
        return ResponseBroken(f"the provider closed the connection before answering ({error})")
    return error


class _PlainResolver:
    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [{"host": info[4][0], "port": port, "family": info[0]} for info in infos]


class HttpClient:
    """Pools of idle keep-alive connections per origin; one instance per event loop."""

    def __init__(self, resolver=None, keepalive_timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.resolver = resolver or _PlainResolver()
        self.keepalive_timeout = keepalive_timeout
        self._idle: dict[tuple, list[_Connection]] = {}
        self._ssl = ssl_context  # None: the system's trusted CAs, hostnames verified

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, connect_timeout: float,
                   read_timeout: float, total: float | None = None) -> Response:
        key, host_header, path = _target(url)
        payload = _request_head(path, host_header, headers, len(body)) + body
        deadline = time.monotonic() + total if total else None
        conn = self._checkout(key)
        if conn is not None:
            try:
                return await self._exchange(conn, payload, read_timeout, deadline)
            except _Stale:
                pass  # the server had closed this idle connection: once more on a fresh one
        conn = await self._connect(key, connect_timeout, deadline)
        try:
            return await self._exchange(conn, payload, read_timeout, deadline)
        except _Stale as exc:
            raise _public(exc) from None

    async def _exchange(self, conn: _Connection, payload: bytes, read_timeout: float,
                        deadline: float | None) -> Response:
        conn._reset_response()
        conn.transport.write(payload)
        try:
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(_budget(read_timeout, deadline))
        except BaseException:
            conn.transport.abort()
            raise
        return Response(self, conn, read_timeout, deadline)

    # -- the pool -----------------------------------------------------------------------------------------

    def _checkout(self, key: tuple) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_timeout:
                return conn
            conn.transport.abort()
        return None

    def _checkin(self, conn: _Connection) -> None:
        if not conn.reusable():
            if conn.transport is not None and not conn.closed:
                conn.transport.abort()  # an answer not read to its end: the connection is out of step
            return
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= 8:
            idle[:] = [c for c in idle if not c.closed]
        idle.append(conn)

    def idle_connections(self) -> int:
        return sum(1 for pool in self._idle.values() for conn in pool if not conn.closed)

    async def close(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()

    # -- connecting ---------------------------------------------------------------------------------------

    async def _connect(self, key: tuple, connect_timeout: float, deadline: float | None) -> _Connection:
        scheme, host, port = key
        timeout = _budget(connect_timeout, deadline)
        try:
            async with asyncio.timeout(max(timeout, 0)):
                addresses = await self._resolve(host, port)
                last: Exception | None = None
                for address in addresses:
                    try:
                        _, conn = await asyncio.get_running_loop().create_connection(
                            lambda: _Connection(key), address["host"], port,
                            ssl=self._context() if scheme == "https" else None,
                            server_hostname=host if scheme == "https" else None)
                        return conn
                    except (OSError, ssl.SSLError) as exc:
                        last = exc
                raise ConnectFailed(f"cannot connect to {host}:{port} ({last})")
        except TimeoutError:
            raise TimeoutError(f"connecting to {host}:{port} timed out") from None

    async def _resolve(self, host: str, port: int) -> list[dict]:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return [{"host": host, "port": port}]  # a literal: checked by the caller (proxy.ssrf.refused_literal)
        except OSError:
            pass
        # Looked up (and judged by the SSRF guard) for every new connection, never cached: connections are
        # pooled, so this is rare, and a name that starts resolving somewhere forbidden is caught at once.
        try:
            return await self.resolver.resolve(host, port, socket.AF_UNSPEC)
        except OSError as exc:
            raise ConnectFailed(f"cannot resolve {host} ({exc})") from None

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl
