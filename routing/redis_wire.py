"""A lean Redis connection for the hot path: the one limits script call every request makes.

redis-py's asyncio client spends ~100 us of CPU per command here (connection pool checkout, retry and
command-parsing machinery); this connection writes the RESP command itself and lets hiredis parse the
reply, ~30 us. Commands are pipelined on one connection: Redis answers in order, so each reply settles the
oldest waiting call. Everything else (pub/sub, budgets, dashboards) keeps using redis-py.

Errors surface as redis-py's exceptions so callers handle one family: a reply error is `ResponseError`
(`NoScriptError` for NOSCRIPT), a dead or silent server `ConnectionError` / `TimeoutError`. After a
timeout or a lost connection every waiting call fails and the next call dials again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError


def encode_command(args: tuple[bytes | str | int | float, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif not isinstance(arg, bytes):
            arg = str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


def _reply_error(error: hiredis.ReplyError) -> ResponseError:
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future, asyncio.TimerHandle]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            future, timer = self.waiting.popleft()
            timer.cancel()
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(_reply_error(reply))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail_waiting(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def fail(self, exc: Exception) -> None:
        """Give up on this connection: every waiting call gets `exc`."""
        self.lost = True
        self._fail_waiting(exc)
        if self.transport is not None:
            self.transport.abort()

    def _fail_waiting(self, exc: Exception) -> None:
        while self.waiting:
            future, timer = self.waiting.popleft()
            timer.cancel()
            if not future.done():
                future.set_exception(exc)


class WireRedis:
    """One pipelined connection per event loop to the Redis at `url` (redis://, rediss://, unix://)."""

    def __init__(self, url: str, *, timeout: float = 0.5, connect_timeout: float = 0.5) -> None:
        self.options = parse_url(url)
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    async def call(self, *args) -> object:
        """Send one command and return its reply (bytes, int, list, None)."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        return await self._send(protocol, encode_command(args))

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    # -- internals ----------------------------------------------------------------------------------

    def _send(self, protocol: _Protocol, command: bytes) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        protocol.waiting.append((future, loop.call_later(self.timeout, self._timed_out, protocol, future)))
        protocol.transport.write(command)
        return future

    def _timed_out(self, protocol: _Protocol, future: asyncio.Future) -> None:
        if not future.done():
            # The connection's replies are now out of step with the calls: drop it, fail every call on it.
            protocol.fail(TimeoutError(f"Redis did not answer within {self.timeout}s"))
            if self._protocol is protocol:
                self._protocol = None

    async def _connect(self) -> _Protocol:
        if self._connecting is not None:  # another call is already dialling: share its connection
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            protocol = await asyncio.wait_for(self._dial(loop), self.connect_timeout)
        except asyncio.CancelledError:
            self._connecting.cancel()
            self._connecting = None
            raise
        except Exception as exc:
            error = exc
            if isinstance(exc, OSError | TimeoutError) and not isinstance(exc, RedisConnectionError):
                error = RedisConnectionError(f"cannot connect to Redis: {exc or 'timed out'}")
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: no "never retrieved" warning when nobody shared it
            self._connecting = None
            raise error from None
        self._protocol = protocol
        self._connecting.set_result(protocol)
        self._connecting = None
        return protocol

    async def _dial(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        options = self.options
        if "path" in options:
            _, protocol = await loop.create_unix_connection(_Protocol, options["path"])
        else:
            _, protocol = await loop.create_connection(_Protocol, options.get("host", "localhost"),
                                                       options.get("port", 6379), ssl=self._ssl_context())
        try:
            if options.get("password"):
                auth = (options["username"], options["password"]) if options.get("username") else (
                    options["password"],)
                await self._send(protocol, encode_command((b"AUTH", *auth)))
            if options.get("db"):
                await self._send(protocol, encode_command((b"SELECT", options["db"])))
        except BaseException:
            protocol.transport.close()
            raise
        return protocol

    def _ssl_context(self) -> ssl.SSLContext | None:
        options = self.options
        if options.get("connection_class") is None or "SSL" not in options["connection_class"].__name__:
            return None
        context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
        if options.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
