"""Routing fields in config as code, and reading providers' rate-limit headers."""

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from routing.config_file import ConfigError, export_config, import_config
from routing.models import Route
from routing.ratelimit_headers import parse_duration, parse_headers, parse_retry_after

BASE = {
    "providers": [{"name": "p", "kind": "openai", "base_url": "https://api.openai.com/v1",
                   "credentials": [{"name": "k", "secret": "sk-literal-0001"}]}],
}


def routes(*entries) -> dict:
    return {**BASE, "routes": list(entries)}


@pytest.mark.django_db
def test_aliases_fallbacks_tiers_and_queue_timeout_round_trip():
    config = routes(
        {"model": "smart", "aliases": ["default"], "fallbacks": ["fast"], "queue_timeout": 2.5,
         "strategy": "headroom",
         "targets": [{"provider": "p", "model": "big"}, {"provider": "p", "model": "small", "tier": 1}]},
        {"model": "fast", "targets": [{"provider": "p"}]},
    )
    import_config(config)
    smart = Route.objects.get(model="smart")
    assert (smart.aliases, smart.fallbacks, smart.queue_timeout) == (["default"], ["fast"], 2.5)
    assert [t.tier for t in smart.targets.order_by("order")] == [0, 1]
    exported = {r["model"]: r for r in export_config()["routes"]}
    assert exported["smart"]["aliases"] == ["default"] and exported["smart"]["fallbacks"] == ["fast"]
    assert exported["smart"]["targets"][1]["tier"] == 1 and "tier" not in exported["smart"]["targets"][0]
    import_config({**BASE, "routes": list(exported.values())})  # the export imports back unchanged
    assert Route.objects.get(model="smart").fallbacks == ["fast"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("entries", "path", "problem"),
    [
        ([{"model": "a", "fallbacks": ["nowhere"], "targets": [{"provider": "p"}]}],
         "routes[0].fallbacks[0]", "no route named 'nowhere'"),
        ([{"model": "a", "fallbacks": ["a"], "targets": [{"provider": "p"}]}],
         "routes[0].fallbacks[0]", "itself"),
        ([{"model": "a", "targets": [{"provider": "p"}]}, {"model": "b", "aliases": ["a"], "targets": [{"provider": "p"}]}],
         "routes[1].aliases[0]", "already the name of a route"),
        ([{"model": "a", "aliases": [3], "targets": [{"provider": "p"}]}], "routes[0].aliases", "list of model names"),
        ([{"model": "a", "targets": [{"provider": "p", "tier": -1}]}], "routes[0].targets[0].tier", "whole number"),
    ],
)
def test_bad_routing_links_name_the_path_and_change_nothing(entries, path, problem):
    with pytest.raises(ConfigError) as caught:
        import_config(routes(*entries), source="gateway.yaml")
    assert caught.value.path == path and problem in caught.value.problem
    assert not Route.objects.exists()


def test_go_durations_and_plain_seconds():
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("0.5") == 0.5
    assert parse_duration("soon") is None and parse_duration("5x") is None and parse_duration("") is None


def test_retry_after_seconds_or_http_date():
    now = time.time()
    assert parse_retry_after("7") == 7.0
    later = format_datetime(datetime.fromtimestamp(now + 30, tz=UTC), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after("not a date") is None


def test_openai_headers():
    headroom = parse_headers({
        "x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "9", "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-limit-tokens": "2000000", "x-ratelimit-remaining-tokens": "1500", "x-ratelimit-reset-tokens": "20ms",
        "retry-after-ms": "1500", "retry-after": "9",
    })
    assert (headroom.remaining_requests, headroom.limit_requests, headroom.reset_requests) == (9, 10000, 360.0)
    assert (headroom.remaining_tokens, headroom.limit_tokens) == (1500, 2000000)
    assert headroom.reset_tokens == pytest.approx(0.02)
    assert headroom.retry_after == 1.5  # the millisecond header is the more precise one


def test_anthropic_headers_with_rfc3339_resets():
    now = time.time()
    reset = (datetime.fromtimestamp(now, tz=UTC) + timedelta(seconds=42)).isoformat().replace("+00:00", "Z")
    headroom = parse_headers({
        "Anthropic-Ratelimit-Requests-Limit": "50", "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-input-tokens-remaining": "900", "anthropic-ratelimit-output-tokens-remaining": "80",
        "anthropic-ratelimit-tokens-reset": reset,
    }, now=now)
    assert (headroom.remaining_requests, headroom.limit_requests) == (0, 50)
    assert headroom.reset_requests == pytest.approx(42, abs=1)
    assert headroom.remaining_tokens == 80  # the scarcer bucket limits us
    assert headroom.exhausted_for() == pytest.approx(42, abs=1)


def test_no_headers_means_nothing_known():
    assert parse_headers({"content-type": "application/json"}).empty


@pytest.mark.django_db
def test_preview_names_the_credential_that_would_serve():
    from routing import health
    from routing.selectors import preview_route

    import_config(routes({"model": "smart", "aliases": ["default"], "targets": [{"provider": "p"}]}))
    credential = Route.objects.get(model="smart").targets.get().provider.credentials.get()
    assert preview_route("default")["credential"]["credential"] == "k"
    health.set_health(credential.id, "invalid", error="HTTP 401")
    preview = preview_route("smart")
    assert preview["credential"] is None and preview["candidates"][0]["status"] == "invalid"
    assert preview_route("unknown")["route"] is None
