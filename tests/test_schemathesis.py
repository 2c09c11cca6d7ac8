"""Property-based run of the management API's own OpenAPI schema against the API (schemathesis).

Every operation is called with generated valid and invalid input, as a platform admin (admin gateway
token) over Django's WSGI handler: no response may be a 500, and every response must match what the
schema says about its status code, content type and body. Bounded by a small example count per operation.
"""

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts import invites, services
from accounts.models import ModelPrice, Role
from routing import services as routing_services
from tests.factories import MembershipFactory, TeamFactory, UserFactory

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(autouse=True)
def _wsgi_requests_keep_the_test_connection(settings):
    """Like Django's test client: keep the test's database connection (and its transaction) open across
    requests instead of closing it when each request ends."""
    settings.DS2API_ALLOW_PRIVATE_UPSTREAMS = True  # generated base URLs must not trigger DNS lookups
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def admin_headers(db) -> dict[str, str]:
    """An admin token, and a few rows of each kind so that generated ids sometimes hit something real."""
    team = TeamFactory(name="fuzz", allowed_models=["gpt-*"], monthly_budget_usd=10)
    MembershipFactory(team=team, user=UserFactory(username="fuzz-owner"), role=Role.OWNER)
    invites.create_invite(team)
    provider = routing_services.save_provider("fuzz-provider", kind="openai", base_url="http://127.0.0.1:9/v1")
    routing_services.save_credential(provider, "key", secret="sk-fuzz-secret-0000")
    routing_services.save_route("gpt-fuzz", [routing_services.TargetSpec(provider)])
    ModelPrice.objects.create(model="gpt-*", input_per_mtok=1, output_per_mtok=2)
    services.issue_token(team, "member-token")
    return {"Authorization": f"Bearer {services.issue_token(team, 'fuzzer', is_admin=True).plaintext}"}


# Loaded at collection: generating the schema reads no database. (schemathesis' lazy `from_fixture` loader
# does not work with pytest 9.)
schema = schemathesis.openapi.from_wsgi(
    "/api/schema/", get_wsgi_application(),
    config=SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}}),
)


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_matches_its_schema(case, admin_headers):
    case.call_and_validate(headers=admin_headers, checks=CHECKS)


@pytest.mark.django_db
def test_schema_and_docs_are_served_without_a_cdn(client):
    schema_response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema_response.status_code == 200
    assert "/api/tokens/{id}/rotate/" in schema_response.json()["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and b"/api/schema/" in script.content
    bundle = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert bundle.status_code == 200
