"""The lean Redis connection the limits script call uses on every request (routing/redis_wire.py):
pipelined replies in order, Redis errors as redis-py's exceptions, AUTH/SELECT/unix sockets from the URL,
and no wedged connection after a timeout or a Redis restart."""

import asyncio
import subprocess

import pytest
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from routing.redis_wire import WireRedis, encode_command
from tests.infra_servers import free_port, wait_for


def test_commands_are_encoded_as_resp_arrays():
    assert encode_command((b"SET", "k", 12, b"v\r\n")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\nv\r\n\r\n"


async def test_concurrent_calls_share_one_connection_and_get_their_own_replies():
    client = WireRedis(settings.REDIS_URL)
    try:
        replies = await asyncio.gather(*(client.call(b"ECHO", f"reply-{i}") for i in range(300)))
        assert replies == [f"reply-{i}".encode() for i in range(300)]
        clients = await client.call(b"CLIENT", b"INFO")
        assert b"cmd=client" in clients
    finally:
        await client.close()


async def test_error_replies_raise_and_leave_the_connection_usable():
    client = WireRedis(settings.REDIS_URL)
    key = f"{settings.REDIS_PREFIX}:wire-test"
    try:
        with pytest.raises(NoScriptError):
            await client.call(b"EVALSHA", "0" * 40, b"0")
        await client.call(b"SET", key, b"text")
        with pytest.raises(ResponseError, match="not an integer"):
            await client.call(b"INCR", key)
        assert await client.call(b"EVAL", b"return ARGV[1]", b"0", b"still fine") == b"still fine"
        assert await client.call(b"GET", key) == b"text"
    finally:
        await client.call(b"DEL", key)
        await client.close()


@pytest.fixture
def password_redis(tmp_path):
    """A private Redis that wants a password, on TCP and on a unix socket."""
    port, sock = free_port(), tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--requirepass", "s3cret-pw", "--unixsocket", str(sock), "--unixsocketperm", "700"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, 10, "redis start")
        yield port, sock
    finally:
        proc.kill()
        proc.wait(10)


async def test_password_database_and_unix_socket_come_from_the_url(password_redis):
    port, sock = password_redis
    tcp = WireRedis(f"redis://:s3cret-pw@127.0.0.1:{port}/3")
    unix = WireRedis(f"unix://{sock}?db=2&password=s3cret-pw")
    wrong = WireRedis(f"redis://:wrong@127.0.0.1:{port}/0")
    try:
        assert b" db=3 " in await tcp.call(b"CLIENT", b"INFO")
        assert b" db=2 " in await unix.call(b"CLIENT", b"INFO")
        with pytest.raises(ResponseError):
            await wrong.call(b"PING")
    finally:
        for client in (tcp, unix, wrong):
            await client.close()


async def test_a_silent_server_times_out_every_waiting_call_and_the_next_call_dials_again():
    accepted = []

    async def silent(reader, writer):  # reads commands, never answers
        accepted.append(writer)
        await reader.read(1 << 16)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = WireRedis(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    try:
        results = await asyncio.gather(*(client.call(b"PING") for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, TimeoutError) for r in results), results
        with pytest.raises(TimeoutError):
            await client.call(b"PING")
        assert len(accepted) == 2  # the wedged connection was dropped and a new one dialled
    finally:
        server.close()
        await client.close()


async def test_a_restarted_redis_is_reached_again():
    port = free_port()

    def start():
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout
                 == b"PONG\n", 10, "redis start")
        return proc

    proc = start()
    client = WireRedis(f"redis://127.0.0.1:{port}/0")
    try:
        assert await client.call(b"PING") == b"PONG"
        proc.kill()
        proc.wait(10)
        await asyncio.sleep(0.05)
        with pytest.raises(RedisConnectionError):
            await client.call(b"PING")
        proc = start()
        assert await client.call(b"PING") == b"PONG"
    finally:
        proc.kill()
        proc.wait(10)
        await client.close()
