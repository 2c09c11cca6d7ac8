"""A gateway token's "last used" time is written off the request path, once per usage batch."""

import time
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import services as account_services
from accounts.models import GatewayToken
from proxy.models import UsageRecord
from proxy.usage import _write
from tests.conftest import make_setup


def _usage(token: GatewayToken | None, when) -> UsageRecord:
    return UsageRecord(created_at=when, token_id=token.pk if token else None, team_id=token.team_id if token else None,
                       client_protocol="openai_chat", client_model="gpt-test", status=200, input_tokens=3,
                       output_tokens=4)


@pytest.mark.django_db
def test_one_update_per_batch_for_the_tokens_seen():
    team = account_services.create_team("qa")
    first, second, idle = (account_services.issue_token(team, name).token for name in ("first", "second", "idle"))
    now = timezone.now()
    batch = [_usage(first, now - timedelta(seconds=3)), _usage(second, now - timedelta(seconds=2)),
             _usage(first, now - timedelta(seconds=1)), _usage(None, now)]

    with CaptureQueriesContext(connection) as queries:
        _write(batch)
    updates = [q["sql"] for q in queries.captured_queries
               if q["sql"].startswith("UPDATE") and GatewayToken._meta.db_table in q["sql"]]
    assert len(updates) == 1
    stamped = dict(GatewayToken.objects.values_list("name", "last_used_at"))
    assert stamped == {"first": now, "second": now, "idle": None}  # the batch's latest request

    _write([_usage(first, now - timedelta(hours=1))])  # a late batch (a retried flush) never moves it back
    assert GatewayToken.objects.get(pk=first.pk).last_used_at == now


def test_a_request_through_the_gateway_marks_its_token_used(fake, gateway):
    setup = make_setup(fake.url)
    token = GatewayToken.objects.get(team=setup.team)
    assert token.last_used_at is None
    response = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"authorization": f"Bearer {setup.token}"},
                          json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert response.status_code == 200
    deadline = time.monotonic() + 5
    while (used := GatewayToken.objects.get(pk=token.pk).last_used_at) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert used is not None and used == UsageRecord.objects.get(token_id=token.pk).created_at
