"""Following one Redis pub/sub channel for as long as a task runs, through Redis restarts.

Config changes (`routing.config_events`, followed by every gateway process's config cache) and credential
health changes (followed by each admin's live dashboard socket) both travel this way. A lost connection is
retried with capped exponential backoff; messages published while disconnected are lost, which is why
`on_subscribed` runs after every (re)subscription: a follower re-reads whatever it may have missed.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from django.conf import settings

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0


async def follow(
    channel: str,
    on_message: Callable[[bytes], Awaitable[None]],
    *,
    on_subscribed: Callable[[], None] | None = None,
    on_lost: Callable[[], None] | None = None,
    name: str = "pub/sub listener",
) -> None:
    """Hand each message's data on `channel` to `on_message` until cancelled.

    `on_subscribed` runs after every successful (re)subscription, `on_lost` whenever Redis goes away (the
    follower carries on without live updates meanwhile). Never returns; cancel the task to stop.
    """
    delay = FIRST_RETRY_SECONDS
    while True:
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                delay = FIRST_RETRY_SECONDS
                if on_subscribed is not None:
                    on_subscribed()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await on_message(message["data"])
        except (aioredis.RedisError, OSError) as exc:
            if on_lost is not None:
                on_lost()
            log.warning("%s lost Redis (%s); retrying in %.0fs", name, exc, delay)
        finally:
            await client.aclose()
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_SECONDS)
