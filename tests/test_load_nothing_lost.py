"""Load with nothing lost (short version; `make bench` runs 10,000): 1,000 mixed requests at 50 concurrent
through a two-worker gateway, with 5% upstream faults on one of the two credentials of every route.

Zero 5xx reach the clients, every request gets the status its kind expects, every stream ends properly,
and the usage table gains exactly one row per request.
"""

import pytest

from bench.load import FAULT_EVERY, run_load
from tests.infra_servers import (
    UPSTREAM_KEYS,
    FakeControl,
    fake_upstream,
    gateway_env,
    gateway_process,
    prepare_database,
    scratch_database,
    scratch_redis_prefix,
)

REQUESTS = 1000
CONCURRENCY = 50


@pytest.fixture(scope="module")
def stack():
    fake = fake_upstream().start()
    gateway = None
    with scratch_database("load") as (database_url, count), scratch_redis_prefix("load") as (redis_url, prefix):
        try:
            env = gateway_env(database_url, redis_url, prefix)
            prepare_database(env, fake.url)
            gateway = gateway_process(env, workers=2).start()
            yield gateway, FakeControl(fake.url), count
        finally:
            if gateway is not None:
                gateway.stop()
                gateway.remove_log()
            fake.stop()
            fake.remove_log()


def test_mixed_load_with_upstream_faults_loses_nothing(stack):
    gateway, fake, count = stack
    result = run_load(gateway.url, fake, REQUESTS, CONCURRENCY,
                      lambda: count("SELECT count(*) FROM proxy_usagerecord"))
    assert result.faults_injected == REQUESTS // FAULT_EVERY
    assert result.problems == [], result.as_dict()
    assert result.server_errors == 0 and result.usage_rows == REQUESTS
    # the faults really reached the gateway: credential A answered errors, B never did
    keys = fake.stats()["keys"]
    assert keys[UPSTREAM_KEYS[0]]["errors"] > 0 and keys[UPSTREAM_KEYS[1]]["errors"] == 0
