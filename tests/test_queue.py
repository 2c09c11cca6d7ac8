"""The fair queue: with every credential saturated, waiting requests are served in arrival order, and a
request that waits too long gets a 429 with Retry-After in its own protocol's shape."""

import threading
import time

import httpx
import pytest

from proxy.adapters import CLIENT_PROTOCOLS
from routing import services
from tests.conftest import make_setup

KEY = "sk-fake-queue-0001"


def saturated_pool(fake, *, queue_timeout: float, slow: float):
    setup = make_setup(fake.url, secrets=(KEY,))
    services.save_credential(setup.provider, "acct-0", max_inflight=1)
    services.save_route("gpt-test", [services.TargetSpec(setup.provider)], queue_timeout=queue_timeout)
    fake.state.add_fault(KEY, "slow", delay=slow)
    return setup


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def post_chat(gateway, token: str, text: str) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {token}"},
                      json={"model": "gpt-test", "messages": [{"role": "user", "content": text}]}, timeout=30)


def test_waiting_requests_are_served_in_arrival_order(fake, gateway):
    setup = saturated_pool(fake, queue_timeout=20, slow=0.3)
    results: dict[int, httpx.Response] = {}

    def run(i: int) -> None:
        results[i] = post_chat(gateway, setup.token, f"req-{i}")

    queue = gateway.proxy_app.runtime.admission.queue
    threads = []
    for i in range(6):
        thread = threading.Thread(target=run, args=(i,))
        thread.start()
        threads.append(thread)
        # a clear arrival order: request i is in line (or already past it) before request i+1 starts
        assert wait_until(lambda i=i: queue.depth + fake.state.total_requests - 1 >= i)
    for thread in threads:
        thread.join()
    assert all(results[i].status_code == 200 for i in range(6))
    served = [r["body"]["messages"][0]["content"] for r in fake.state.last_requests(6)]
    assert served == [f"req-{i}" for i in range(6)]
    # one credential with max_inflight 1: the provider never saw two at once
    assert fake.state.stats(arrivals=False)["keys"][KEY]["max_in_flight"] == 1


def test_a_request_waiting_past_the_queue_timeout_gets_openai_429_with_retry_after(fake, gateway):
    setup = saturated_pool(fake, queue_timeout=0.3, slow=1.5)
    first = threading.Thread(target=post_chat, args=(gateway, setup.token, "holds the slot"))
    first.start()
    assert wait_until(lambda: fake.state.stats(arrivals=False)["in_flight"] == 1)
    response = post_chat(gateway, setup.token, "waits too long")
    first.join()
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error" and "busy" in error["message"]
    assert fake.state.stats(arrivals=False)["keys"][KEY]["requests"] == 1


@pytest.mark.skipif("anthropic" not in CLIENT_PROTOCOLS, reason="the Anthropic protocol is not registered")
def test_queue_timeout_in_anthropic_shape(fake, gateway):
    setup = saturated_pool(fake, queue_timeout=0.3, slow=1.5)
    first = threading.Thread(target=post_chat, args=(gateway, setup.token, "holds the slot"))
    first.start()
    assert wait_until(lambda: fake.state.stats(arrivals=False)["in_flight"] == 1)
    response = httpx.post(
        gateway.url + "/v1/messages",
        headers={"x-api-key": setup.token, "anthropic-version": "2023-06-01"},
        json={"model": "gpt-test", "max_tokens": 50, "messages": [{"role": "user", "content": "waits"}]},
        timeout=30,
    )
    first.join()
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
