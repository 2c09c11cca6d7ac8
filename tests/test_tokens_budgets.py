"""Prices, monthly budgets enforced on the proxy path (in each client's protocol), IP allowlists and rotation,
through the official SDKs against the gateway and the fake upstream."""

import time
from datetime import timedelta
from decimal import Decimal

import anthropic
import openai
import pytest
import redis
from django.conf import settings
from django.utils import timezone
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from accounts import budgets, selectors, services
from accounts.ceilings import pattern_covered
from accounts.models import GatewayToken, ModelPrice
from accounts.pricing import Price, PriceTable, apply_costs
from proxy.adapters import CLIENT_PROTOCOLS
from proxy.models import UsageRecord
from tests.conftest import make_setup

PROMPT = [{"role": "user", "content": "hello there gateway"}]  # the fake answers 3 prompt + 4 completion tokens
REQUEST_COST = Decimal("1.75")  # 3 x $0.25 + 4 x $0.25 at the price set below


# --- pricing and ceilings (no gateway) -------------------------------------------------------------


def _price(model, **fields):
    values = {"input_per_mtok": Decimal(0), "output_per_mtok": Decimal(0), "cached_input_per_mtok": None,
              "reasoning_per_mtok": None, **fields}
    return ModelPrice(model=model, **values)


def test_cost_uses_cached_and_reasoning_prices_with_fallbacks():
    price = Price.from_row(_price("m", input_per_mtok=Decimal(2), cached_input_per_mtok=Decimal("0.5"),
                                  output_per_mtok=Decimal(8)))
    # 1M input of which 400k cached, 500k output of which 100k reasoning (billed as output: no own price).
    cost = price.cost(input_tokens=1_000_000, cached_tokens=400_000, output_tokens=500_000, reasoning_tokens=100_000)
    assert cost == Decimal("1.2") + Decimal("0.2") + Decimal("3.2") + Decimal("0.8")
    assert price.cost(input_tokens=1, cached_tokens=0, output_tokens=0, reasoning_tokens=0) == Decimal("0.000002")


def test_exact_names_beat_globs_and_longer_globs_beat_shorter_ones():
    table = PriceTable([_price("*", input_per_mtok=Decimal(1)), _price("gpt-4o*", input_per_mtok=Decimal(2)),
                        _price("gpt-4o-mini*", input_per_mtok=Decimal(3)), _price("gpt-4o", input_per_mtok=Decimal(4))])
    assert [table.lookup(m).input for m in ("gpt-4o", "gpt-4o-2024", "gpt-4o-mini-x", "llama")] == [4, 2, 3, 1]
    # The upstream model is priced first; the client's name is the fallback.
    assert table.lookup("", "gpt-4o").input == 4
    assert PriceTable([]).lookup("gpt-4o") is None


def test_apply_costs_sets_cost_on_usage_rows():
    table = PriceTable([_price("gpt-test", input_per_mtok=Decimal(1_000), output_per_mtok=Decimal(2_000))])
    row = UsageRecord(client_model="alias", upstream_model="gpt-test", input_tokens=10, output_tokens=5, status=200)
    unpriced = UsageRecord(client_model="other", upstream_model="other", input_tokens=10, status=200)
    apply_costs([row, unpriced], table)
    assert (row.cost_usd, unpriced.cost_usd) == (Decimal("0.02"), 0)


@pytest.mark.parametrize("pattern, ceiling, covered", [
    ("gpt-4o", ["gpt-*"], True),
    ("gpt-4*", ["gpt-*"], True),
    ("gpt-*", ["gpt-*"], True),
    ("anything", ["*"], True),
    ("anything", [], True),  # an empty ceiling means the team may use every model
    ("*", ["gpt-*"], False),
    ("claude-3", ["gpt-*"], False),
    ("x*", ["x?"], False),  # "x?" matches the text "x*" but not everything "x*" matches
    ("[gc]pt-4", ["gpt-*"], False),
])
def test_token_models_must_be_a_provable_subset_of_the_team_models(pattern, ceiling, covered):
    assert pattern_covered(pattern, ceiling) is covered


# --- budgets on the proxy path ---------------------------------------------------------------------


@pytest.fixture
def priced(fake, gateway):
    setup = make_setup(fake.url)
    ModelPrice.objects.create(model="gpt-test", input_per_mtok=Decimal(250_000), output_per_mtok=Decimal(250_000))
    return setup


def openai_client(gateway, token):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)


def spend_until(kind: str, object_id: int, expected: Decimal, timeout: float = 5.0) -> Decimal:
    """Spend is added by the usage writer just after it stores the rows; wait for it to land."""
    deadline = time.monotonic() + timeout
    while True:
        spent = budgets.status(kind, object_id, None).spent_usd
        if spent >= expected or time.monotonic() > deadline:
            return spent
        time.sleep(0.02)


def rows_of(token_id: int, count: int, timeout: float = 5.0) -> list[UsageRecord]:
    """This token's usage rows (a row of the previous test may land late, so rows are matched by token)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = list(UsageRecord.objects.filter(token_id=token_id).order_by("id"))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def spend_one_request(gateway, token: str) -> None:
    openai_client(gateway, token).chat.completions.create(model="gpt-test", messages=PROMPT)


def test_usage_rows_carry_their_cost(priced, gateway):
    openai_client(gateway, priced.token).chat.completions.create(model="gpt-test", messages=PROMPT)
    row = rows_of(GatewayToken.objects.get(team=priced.team).pk, 1)[0]
    assert row.cost_usd == REQUEST_COST
    team = selectors.team_budget(priced.team)
    assert spend_until("team", priced.team.pk, REQUEST_COST) == REQUEST_COST and team.budget_usd is None


def test_budgeted_token_is_refused_once_spent_in_openai_shape_until_the_budget_is_raised(priced, gateway):
    issued = services.issue_token(priced.team, "budgeted", budget_usd=Decimal("3"))
    spend_one_request(gateway, issued.plaintext)
    assert spend_until("token", issued.token.pk, REQUEST_COST) == REQUEST_COST
    assert not selectors.token_budget(issued.token).exceeded
    spend_one_request(gateway, issued.plaintext)  # still under: $1.75 of $3 spent before it
    assert spend_until("token", issued.token.pk, 2 * REQUEST_COST) == Decimal("3.5")
    state = selectors.token_budget(issued.token)
    assert state.exceeded and state.warning

    with pytest.raises(openai.RateLimitError) as info:
        openai_client(gateway, issued.plaintext).chat.completions.create(model="gpt-test", messages=PROMPT)
    assert info.value.status_code == 429
    body = info.value.body
    assert body["type"] == "budget_exceeded" and body["code"] == "token_budget_exceeded"
    assert "budget of token 'budgeted'" in body["message"]
    # Other tokens of the team are not held to this token's budget.
    openai_client(gateway, priced.token).chat.completions.create(model="gpt-test", messages=PROMPT)

    services.update_token(issued.token, budget_usd=Decimal("10"))
    openai_client(gateway, issued.plaintext).chat.completions.create(model="gpt-test", messages=PROMPT)


def test_team_budget_binds_every_token_of_the_team(priced, gateway):
    services.update_team(priced.team, monthly_budget_usd=Decimal("1"))
    spend_one_request(gateway, priced.token)
    spend_until("team", priced.team.pk, REQUEST_COST)
    other = services.issue_token(priced.team, "second")
    with pytest.raises(openai.RateLimitError) as info:
        openai_client(gateway, other.plaintext).chat.completions.create(model="gpt-test", messages=PROMPT)
    assert info.value.body["code"] == "team_budget_exceeded" and "team 'qa'" in info.value.body["message"]
    refused = rows_of(other.token.pk, 1)[0]
    assert (refused.status, refused.error_type, refused.cost_usd) == (429, "budget_exceeded", 0)


def _exhausted_token(team) -> str:
    """A token whose month is already spent, known from usage rows alone (its counter is rebuilt from them)."""
    issued = services.issue_token(team, f"spent-{time.monotonic_ns()}", budget_usd=Decimal("0.50"))
    UsageRecord.objects.create(token_id=issued.token.pk, team_id=team.pk, client_protocol="openai_chat", status=200,
                               cost_usd=Decimal("0.75"))
    return issued.plaintext


def test_a_missing_counter_is_rebuilt_from_usage_rows(priced, gateway):
    token = _exhausted_token(priced.team)
    token_id = GatewayToken.objects.get(prefix=token[:12]).pk
    client = redis.Redis.from_url(settings.REDIS_URL)
    assert client.get(budgets.counter_key("token", token_id)) is None
    with pytest.raises(openai.RateLimitError):
        openai_client(gateway, token).chat.completions.create(model="gpt-test", messages=PROMPT)
    assert int(client.get(budgets.counter_key("token", token_id))) == budgets.to_units(Decimal("0.75"))
    # Last month's spend does not count against this month.
    assert budgets.status("token", token_id, None, timezone.now() + timedelta(days=32)).spent_usd == 0


def test_warning_flag_from_80_percent(priced):
    issued = services.issue_token(priced.team, "watched", budget_usd=Decimal("10"))
    UsageRecord.objects.create(token_id=issued.token.pk, team_id=priced.team.pk, client_protocol="openai_chat",
                               status=200, cost_usd=Decimal("7.99"))
    assert not selectors.token_budget(issued.token).warning
    budgets.add_spend([UsageRecord(token_id=issued.token.pk, team_id=priced.team.pk, cost_usd=Decimal("0.01"),
                                   created_at=timezone.now())])
    state = selectors.token_budget(issued.token)
    assert state.warning and not state.exceeded and state.fraction == pytest.approx(0.8)


def _require(protocol: str) -> None:
    if protocol not in CLIENT_PROTOCOLS:
        pytest.skip(f"the {protocol} client protocol is not registered yet (proxy.adapters.CLIENT_PROTOCOLS)")


def test_budget_error_in_anthropic_shape(priced, gateway):
    _require("anthropic")
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=_exhausted_token(priced.team), max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as info:
        sdk.messages.create(model="gpt-test", max_tokens=16, messages=PROMPT)
    assert info.value.status_code == 429
    body = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    # Anthropic's error types are a closed list: the budget's name leads the message, machine-readable
    assert body["error"]["message"].startswith("token_budget_exceeded: ")
    assert "monthly budget of token" in body["error"]["message"]


def test_budget_error_in_gemini_shape(priced, gateway):
    _require("gemini")
    sdk = genai.Client(api_key=_exhausted_token(priced.team), http_options=gtypes.HttpOptions(base_url=gateway.url))
    with pytest.raises(genai_errors.ClientError) as info:
        sdk.models.generate_content(model="gpt-test", contents="hello there gateway")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert "monthly budget of token" in info.value.message
    # google.rpc.ErrorInfo tells a spent budget from a provider's rate limit
    assert info.value.details["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "TOKEN_BUDGET_EXCEEDED", "domain": "ds2api"}]


def test_team_budget_error_names_the_team_budget_in_anthropic_and_gemini_shapes(priced, gateway):
    _require("anthropic")
    _require("gemini")
    services.update_team(priced.team, monthly_budget_usd=Decimal("1"))
    issued = services.issue_token(priced.team, f"team-spent-{time.monotonic_ns()}")  # no budget of its own
    UsageRecord.objects.create(token_id=issued.token.pk, team_id=priced.team.pk, client_protocol="openai_chat",
                               status=200, cost_usd=Decimal("1.25"))
    token = issued.plaintext
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=token, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.create(model="gpt-test", max_tokens=16, messages=PROMPT)
    assert refused.value.body["error"]["message"].startswith("team_budget_exceeded: ")
    gemini = genai.Client(api_key=token, http_options=gtypes.HttpOptions(base_url=gateway.url))
    with pytest.raises(genai_errors.ClientError) as info:
        gemini.models.generate_content(model="gpt-test", contents="hello there gateway")
    assert info.value.details["error"]["details"][0]["reason"] == "TEAM_BUDGET_EXCEEDED"


# --- IP allowlists and rotation on the proxy path ---------------------------------------------------


def test_ip_allowlist_is_enforced_on_the_proxy_path(priced, gateway):
    elsewhere = services.issue_token(priced.team, "office-only", allowed_ips=["10.0.0.0/8"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        openai_client(gateway, elsewhere.plaintext).chat.completions.create(model="gpt-test", messages=PROMPT)
    assert "address" in info.value.body["message"]
    local = services.issue_token(priced.team, "local-only", allowed_ips=["127.0.0.1", "::1"])
    reply = openai_client(gateway, local.plaintext).chat.completions.create(model="gpt-test", messages=PROMPT)
    assert reply.choices[0].message.content


def test_both_tokens_work_during_the_rotation_overlap_and_only_the_new_one_after(priced, gateway):
    old = GatewayToken.objects.get(team=priced.team)
    new = services.rotate_token(old, overlap=timedelta(minutes=10))
    for token in (priced.token, new.plaintext):
        openai_client(gateway, token).chat.completions.create(model="gpt-test", messages=PROMPT)
    newest = services.rotate_token(new.token, overlap=timedelta(0))
    with pytest.raises(openai.AuthenticationError):
        openai_client(gateway, new.plaintext).chat.completions.create(model="gpt-test", messages=PROMPT)
    openai_client(gateway, newest.plaintext).chat.completions.create(model="gpt-test", messages=PROMPT)
