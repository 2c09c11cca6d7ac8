"""The lean upstream HTTP client (proxy/http_client.py) against real sockets on 127.0.0.1.

Two kinds of server: the in-repo fake provider (real wire formats and its faults: status, slow, drip, cut,
reset, huge) and tiny asyncio servers scripted per test for what a provider rarely does on purpose (bodies
ended by closing, `Connection: close`, compression, garbage instead of HTTP, connections closed while
idle or without an answer, redirects, a flood of bytes faster than the reader takes them).
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import re
import socket
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import orjson
import pytest

from proxy.http_client import ConnectFailed, HttpClient, ResponseBroken, TransportError
from proxy.ssrf import GuardedResolver, UpstreamRefused

CHAT = "/v1/chat/completions"
JSON_HEADERS = {"authorization": "Bearer sk-http-client-0001", "content-type": "application/json"}


def chat(text: str = "hello there", model: str = "gpt-test", **extra) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}], **extra})


async def post(client: HttpClient, url: str, body: bytes = b"{}", headers: dict | None = None, **timeouts):
    limits = {"connect_timeout": 1.0, "read_timeout": 2.0, **timeouts}
    return await client.post(url, body=body, headers=JSON_HEADERS if headers is None else headers, **limits)


async def read_all(response) -> bytes:
    try:
        return await response.read()
    finally:
        response.release()


def closed_port() -> int:
    """A port nothing listens on (bound, then released, so connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def client():
    client = HttpClient()
    yield client
    await client.close()


# -- a scriptable raw HTTP/1.1 server ------------------------------------------------------------------------
@dataclass
class Seen:
    """One request as it arrived: head (request line, headers), body, and the connection that carried it."""

    head: bytes
    body: bytes
    connection: int  # 1 for the server's first accepted connection, 2 for the next...
    index: int  # 1 for the first request on that connection


# Writes the answer to one request; True keeps the connection open for the next request.
Answer = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]


class RawServer:
    """Reads HTTP/1.1 requests (content-length bodies); `answer` writes whatever bytes the test wants."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[Seen] = []
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/x"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()  # handlers waiting on a read or a drain see the connection gone
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        number = self.connections
        try:
            for index in itertools.count(1):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                body = await reader.readexactly(int(length[1])) if length else b""
                seen = Seen(head, body, number, index)
                self.requests.append(seen)
                if not await self.answer(seen, writer):
                    return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-answer
        finally:
            writer.close()
            self._tasks.discard(task)
            self._writers.discard(writer)


def reply(status: str = "200 OK", body: bytes = b"hello", *headers: str, length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", "content-type: text/plain", *headers]
    if length:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def answer_ok(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    writer.write(reply(body=b"hello " + str(seen.connection).encode()))
    return True


async def answer_nothing(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    return False  # close the connection right after reading the request


# -- against the fake provider -------------------------------------------------------------------------------
async def test_json_chat_completion(fake, client):
    response = await post(client, fake.url + CHAT, chat("hello there"))
    body = await read_all(response)

    assert response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-ratelimit-limit-requests") == "10000"
    assert response.content_length == len(body)
    completion = orjson.loads(body)
    assert completion["choices"][0]["message"]["content"] == "echo: hello there"
    assert fake.state.last_request()["body"]["messages"][0]["content"] == "hello there"


async def test_sse_stream_joined_equals_what_httpx_reads(fake, client):
    request = chat("count", model="fake-long", stream=True)
    response = await post(client, fake.url + CHAT, request)
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    ours = b"".join([chunk async for chunk in response.iter_chunks()])
    response.release()

    async with httpx.AsyncClient() as other:
        theirs = (await other.post(fake.url + CHAT, content=request, headers=JSON_HEADERS)).content

    def same_ids(body: bytes) -> bytes:  # each request gets its own id and clock
        return re.sub(rb'"created":\d+', b'"created":0', re.sub(rb"chatcmpl-fake\d+", b"chatcmpl-fake", body))

    assert same_ids(ours) == same_ids(theirs)
    assert b'"content":"w199"' in ours and ours.rstrip().endswith(b"data: [DONE]")


async def test_keepalive_connection_is_reused(fake, client):
    for _ in range(2):
        response = await post(client, fake.url + CHAT, chat())
        assert orjson.loads(await response.read())["choices"][0]["message"]["content"] == "echo: hello there"
        response.release()
        response.release()  # idempotent: the connection is not pooled twice
        assert client.idle_connections() == 1


async def test_429_is_returned_with_its_retry_after(fake, client):
    fake.state.add_fault(mode="status", status=429, retry_after=2, count=1)
    response = await post(client, fake.url + CHAT, chat())
    body = await read_all(response)

    assert response.status == 429
    assert response.headers["retry-after"] == "2"
    assert orjson.loads(body)["error"]["code"] == "rate_limit_exceeded"
    assert client.idle_connections() == 1  # an error answer read to its end leaves a good connection


async def test_huge_reply_is_read_whole(fake, client):
    fake.state.add_fault(mode="huge", size=2_000_000, count=1)
    response = await post(client, fake.url + CHAT, chat())
    body = await read_all(response)

    assert response.content_length == len(body) > 2_000_000
    assert len(orjson.loads(body)["choices"][0]["message"]["content"]) >= 2_000_000


async def test_stream_cut_mid_body_raises_response_broken(fake, client):
    fake.state.add_fault(mode="cut", after=5)
    response = await post(client, fake.url + CHAT, chat(model="fake-long", stream=True))
    assert response.status == 200
    received = []
    with pytest.raises(ResponseBroken):
        async for chunk in response.iter_chunks():
            received.append(chunk)
    response.release()

    assert b'"content":"w0 "' in b"".join(received)  # the events before the cut did arrive
    assert client.idle_connections() == 0


async def test_plain_body_cut_in_half_raises_response_broken(fake, client):
    fake.state.add_fault(mode="cut")
    response = await post(client, fake.url + CHAT, chat())
    with pytest.raises(ResponseBroken):
        await response.read()
    response.release()
    assert client.idle_connections() == 0


async def test_reset_before_the_answer_raises_transport_error(fake, client):
    fake.state.add_fault(mode="reset", count=1)
    with pytest.raises(TransportError):
        await post(client, fake.url + CHAT, chat())
    assert fake.state.total_requests == 1  # a fresh connection is not retried


async def test_slow_headers_past_read_timeout_raise_timeout_error(fake, client):
    fake.state.add_fault(mode="slow", delay=1.5, count=1)
    with pytest.raises(TimeoutError):
        await post(client, fake.url + CHAT, chat(), read_timeout=0.3)


async def test_drip_slower_than_read_timeout_times_out_mid_stream(fake, client):
    fake.state.add_fault(mode="drip", delay=1.5, count=1)
    response = await post(client, fake.url + CHAT, chat(model="fake-long", stream=True), read_timeout=0.3)
    received = []
    with pytest.raises(TimeoutError):
        async for chunk in response.iter_chunks():
            received.append(chunk)
    response.release()

    assert b"data: " in b"".join(received)  # the first event came before the silence
    assert client.idle_connections() == 0


async def test_total_timeout_ends_a_stream_that_keeps_dripping(fake, client):
    # 200 events 0.05 s apart: each gap well within the read timeout, the whole far past the total.
    fake.state.add_fault(mode="drip", delay=0.05, count=1)
    received = []
    with pytest.raises(TimeoutError):
        response = await post(client, fake.url + CHAT, chat(model="fake-long", stream=True), read_timeout=1.0,
                              total=0.5)
        try:
            async for chunk in response.iter_chunks():
                received.append(chunk)
        finally:
            response.release()
    assert len(received) > 1


# -- against scripted raw servers ----------------------------------------------------------------------------
async def test_request_bytes_and_response_headers(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply("201 Created", b"made", "Set-Cookie: a=1", "Set-Cookie: b=2", "X-Upper: Value"))
        return True

    async with RawServer(answer) as server:
        response = await post(client, server.url + "?beta=true", b'{"a": 1}',
                              {"content-type": "application/json", "x-api-key": "sk-raw"})
        body = await read_all(response)

    head = server.requests[0].head.decode("latin-1")
    lines = head.split("\r\n")
    assert lines[0] == "POST /v1/x?beta=true HTTP/1.1"
    pairs = (line.partition(":") for line in lines[1:] if line)
    fields = {name.lower(): value.strip() for name, _, value in pairs}
    assert fields["host"] == f"127.0.0.1:{server.port}"
    assert fields["content-length"] == "8" and fields["x-api-key"] == "sk-raw"
    assert "accept-encoding" not in fields
    assert server.requests[0].body == b'{"a": 1}'

    assert (response.status, body, response.content_length) == (201, b"made", 4)
    assert response.headers.getall("set-cookie") == ["a=1", "b=2"]
    assert response.headers["x-upper"] == "Value"
    assert ("content-type", "text/plain") in list(response.headers.items())


async def test_sequential_requests_share_one_connection(client):
    async with RawServer(answer_ok) as server:
        bodies = [await read_all(await post(client, server.url)) for _ in range(3)]
    assert bodies == [b"hello 1"] * 3
    assert server.connections == 1


async def test_concurrent_requests_open_and_then_pool_two_connections(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)  # both requests in flight at once
        return await answer_ok(seen, writer)

    async with RawServer(answer) as server:
        responses = await asyncio.gather(post(client, server.url), post(client, server.url))
        assert sorted([await read_all(r) for r in responses]) == [b"hello 1", b"hello 2"]
        assert client.idle_connections() == 2


async def test_body_delimited_by_connection_close(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(body=b"first half, ", length=False))
        await writer.drain()
        writer.write(b"second half")
        return False

    async with RawServer(answer) as server:
        response = await post(client, server.url)
        assert response.content_length is None
        assert await read_all(response) == b"first half, second half"
        assert client.idle_connections() == 0


async def test_connection_close_answer_is_not_pooled(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply("200 OK", b"bye", "Connection: close"))
        return False

    async with RawServer(answer) as server:
        assert await read_all(await post(client, server.url)) == b"bye"
        assert client.idle_connections() == 0
        assert await read_all(await post(client, server.url)) == b"bye"
    assert server.connections == 2


async def test_chunked_body_is_decoded(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply("200 OK", b"", "Transfer-Encoding: chunked", length=False))
        for piece in (b"alpha ", b"beta ", b"gamma"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    async with RawServer(answer) as server:
        response = await post(client, server.url)
        pieces = [chunk async for chunk in response.iter_chunks()]
        response.release()
        assert b"".join(pieces) == b"alpha beta gamma"
        assert client.idle_connections() == 1


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)  # no zlib header, as some servers send "deflate"
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(("encoding", "compress"),
                         [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", _raw_deflate)])
@pytest.mark.parametrize("streamed", [False, True])
async def test_compressed_body_is_decompressed(client, encoding, compress, streamed):
    text = b'{"text": "' + b"compressible " * 5000 + b'"}'

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply("200 OK", compress(text), f"Content-Encoding: {encoding}"))
        return True

    async with RawServer(answer) as server:
        response = await post(client, server.url)
        if streamed:
            body = b"".join([chunk async for chunk in response.iter_chunks()])
            response.release()
        else:
            body = await read_all(response)
    assert body == text


async def test_invalid_http_raises_response_broken(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\nthis is not http\r\n\r\n")
        return True

    async with RawServer(answer) as server:
        with pytest.raises(ResponseBroken):
            await post(client, server.url)


async def test_server_closing_idle_connections_right_after_answering(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await answer_ok(seen, writer)
        return False  # keep-alive was not refused, but the server closes anyway

    async with RawServer(answer) as server:
        assert await read_all(await post(client, server.url)) == b"hello 1"
        assert await read_all(await post(client, server.url)) == b"hello 2"


async def test_request_on_a_connection_the_server_closed_is_sent_again_on_a_fresh_one(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.index > 1:
            return False  # read the request, close without a byte of answer: what a stale connection does
        return await answer_ok(seen, writer)

    async with RawServer(answer) as server:
        assert await read_all(await post(client, server.url)) == b"hello 1"
        assert client.idle_connections() == 1
        assert await read_all(await post(client, server.url)) == b"hello 2"
    assert server.connections == 2
    assert [(seen.connection, seen.index) for seen in server.requests] == [(1, 1), (1, 2), (2, 1)]


async def test_fresh_connection_closed_without_answer_is_not_retried(client):
    async with RawServer(answer_nothing) as server:
        with pytest.raises(TransportError):
            await post(client, server.url)
    assert server.connections == 1


async def test_stale_connection_is_retried_once_only(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        return seen.connection == 1 and seen.index == 1 and await answer_ok(seen, writer)

    async with RawServer(answer) as server:
        assert await read_all(await post(client, server.url)) == b"hello 1"
        with pytest.raises(TransportError):
            await post(client, server.url)
    assert server.connections == 2
    assert len(server.requests) == 3


async def test_idle_connection_older_than_keepalive_timeout_is_not_reused():
    client = HttpClient(keepalive_timeout=0.1)
    try:
        async with RawServer(answer_ok) as server:
            assert await read_all(await post(client, server.url)) == b"hello 1"
            await asyncio.sleep(0.3)
            assert await read_all(await post(client, server.url)) == b"hello 2"
    finally:
        await client.close()


async def test_connect_to_closed_port_raises_connect_failed(client):
    with pytest.raises(ConnectFailed):
        await post(client, f"http://127.0.0.1:{closed_port()}/v1/x")


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\rb"])
async def test_header_value_with_line_break_raises_value_error(client, value):
    async with RawServer(answer_ok) as server:
        with pytest.raises(ValueError):
            await post(client, server.url, headers={"x-custom": value})
    assert server.requests == []


async def test_redirect_is_returned_not_followed(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        location = f"Location: http://127.0.0.1:{closed_port()}/elsewhere"
        writer.write(reply("307 Temporary Redirect", b"", location))
        return True

    async with RawServer(answer) as server:
        response = await post(client, server.url)
        assert await read_all(response) == b""
    assert response.status == 307
    assert response.headers["location"].endswith("/elsewhere")
    assert len(server.requests) == 1


async def test_interim_answers_are_skipped_for_the_real_one(client):
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n")
        writer.write(reply("200 OK", b"the answer", "x-final: yes"))
        return True

    async with RawServer(answer) as server:
        for _ in range(2):  # and the connection stays in step for the next request
            response = await post(client, server.url)
            assert (response.status, response.headers.get("x-final"), "link" in response.headers) == (200, "yes", False)
            assert await read_all(response) == b"the answer"
        assert client.idle_connections() == 1 and len({seen.connection for seen in server.requests}) == 1


async def test_partly_read_response_released_closes_its_connection(client):
    size = 1_000_000

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply("200 OK", b"x" * size))
        return True

    async with RawServer(answer) as server:
        response = await post(client, server.url)
        chunks = response.iter_chunks()
        assert await anext(chunks)
        await chunks.aclose()
        response.release()
        assert client.idle_connections() == 0

        assert len(await read_all(await post(client, server.url))) == size
        assert client.idle_connections() == 1
    assert server.connections == 2


async def test_slow_reader_makes_the_client_stop_reading_the_socket(client):
    """The server writes 5 MB as fast as the socket takes it; the test reads one piece and then nothing for a
    while. A client that kept reading would take it all into memory and let the server finish; one that pauses
    leaves the server blocked with most of the body unsent. Then the rest is read and arrives whole."""
    size, piece = 5_000_000, b"x" * 65536
    progress = {"sent": 0, "finished": False}

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        # A small send buffer, so the kernel's buffers between the two ends hold well under 5 MB.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        writer.write(reply("200 OK", b"", f"content-length: {size}", length=False))
        while progress["sent"] < size:
            writer.write(piece[: size - progress["sent"]])
            await writer.drain()
            progress["sent"] = min(size, progress["sent"] + len(piece))
        progress["finished"] = True
        return True

    async with RawServer(answer) as server:
        response = await post(client, server.url)
        chunks = response.iter_chunks()
        received = len(await anext(chunks))
        await asyncio.sleep(0.3)

        assert not progress["finished"]
        assert progress["sent"] < size // 2
        buffered = getattr(getattr(response, "_conn", None), "buffered", None)
        if buffered is not None:  # the client's own count, where it exposes one
            assert buffered <= 1024 * 1024

        async for chunk in chunks:
            received += len(chunk)
        response.release()
        assert received == size
        assert progress["finished"]
        assert client.idle_connections() == 1


# -- the SSRF guard at connect time --------------------------------------------------------------------------
@pytest.mark.parametrize("allow_private", [False, True])
async def test_guarded_resolver_decides_whether_localhost_is_dialled(allow_private):
    resolver = GuardedResolver(allow_private=allow_private)
    client = HttpClient(resolver=resolver)
    try:
        async with RawServer(answer_ok) as server:
            url = f"http://localhost:{server.port}/v1/x"
            if allow_private:
                assert await read_all(await post(client, url)) == b"hello 1"
            else:
                with pytest.raises(UpstreamRefused):
                    await post(client, url)
        assert server.connections == (1 if allow_private else 0)
    finally:
        await client.close()
        await resolver.close()


# -- TLS (every real provider is reached over https) ------------------------------------------------------------
def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for localhost / 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


async def test_https_is_verified_against_trusted_certificates_and_pooled(tmp_path):
    import ssl

    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    connections = itertools.count(1)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        next(connections)
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
            body = await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(body), body))
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trusting = HttpClient(ssl_context=ssl.create_default_context(cafile=cert))
    default = HttpClient()  # the system's CAs: a self-signed certificate is refused
    try:
        for _ in range(2):
            assert await read_all(await post(trusting, f"https://localhost:{port}/v1/x", b'{"over":"tls"}')) \
                == b'{"over":"tls"}'
        assert trusting.idle_connections() == 1
        assert next(connections) == 2  # both requests went over the one TLS connection
        with pytest.raises(ConnectFailed):
            await post(default, f"https://localhost:{port}/v1/x")
    finally:
        await trusting.close()
        await default.close()
        server.close()
