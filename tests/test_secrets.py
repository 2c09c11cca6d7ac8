"""Provider secrets at rest: encrypted under a rotatable key ring, never readable in the table."""

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from routing import services
from routing.keyring import KeyRing, KeyRingError, get_keyring, key_id_for
from routing.models import Credential

SECRETS = ["sk-live-aaaaaaaaaaaaaaaa1111", "sk-live-bbbbbbbbbbbbbbbb2222", "sk-ant-cccccccccccccccc3333"]


@pytest.fixture
def credentials(db):
    provider = services.save_provider("openai-main", kind="openai", base_url="https://api.openai.com/v1")
    return [services.save_credential(provider, f"acct-{i}", secret=s) for i, s in enumerate(SECRETS)]


def _raw_table() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM routing_credential")
        return repr(cursor.fetchall())


def test_raw_sql_never_contains_the_plaintext(credentials):
    raw = _raw_table()
    for secret in SECRETS:
        assert secret not in raw
    # The last 4 characters are kept for display; nothing longer.
    assert all(c.last4 == s[-4:] for c, s in zip(credentials, SECRETS, strict=True))
    assert [services.reveal_secret(c) for c in credentials] == SECRETS


def test_rotate_keys_reencrypts_every_row_under_the_new_key(credentials, settings):
    old_key = settings.DS2API_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.DS2API_ENCRYPTION_KEYS = [new_key, old_key]
    call_command("gateway", "rotate-keys")
    rows = list(Credential.objects.order_by("name"))
    assert {row.key_id for row in rows} == {key_id_for(new_key)}
    assert [services.reveal_secret(row) for row in rows] == SECRETS
    # The old key can now be dropped from the ring.
    settings.DS2API_ENCRYPTION_KEYS = [new_key]
    assert [services.reveal_secret(row) for row in rows] == SECRETS
    assert SECRETS[0] not in _raw_table()


def test_missing_key_ring_is_a_clear_error_at_start(settings):
    settings.DS2API_ENCRYPTION_KEYS = []
    errors = [e for e in run_checks() if e.id == "ds2api.E001"]
    assert errors and "DS2API_ENCRYPTION_KEYS is not set" in errors[0].msg
    with pytest.raises(ImproperlyConfigured):
        get_keyring()


def test_malformed_key_is_refused_at_start(settings):
    settings.DS2API_ENCRYPTION_KEYS = ["not-a-fernet-key"]
    errors = [e for e in run_checks() if e.id == "ds2api.E001"]
    assert errors and "not a valid Fernet key" in errors[0].msg


def test_wrong_key_gives_a_clear_error_not_garbage(credentials, settings):
    settings.DS2API_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(KeyRingError, match="not in DS2API_ENCRYPTION_KEYS"):
        services.reveal_secret(credentials[0])


def test_tampered_ciphertext_is_detected():
    ring = KeyRing.from_keys([Fernet.generate_key().decode()])
    key_id, token = ring.encrypt("sk-secret-value")
    with pytest.raises(KeyRingError):
        ring.decrypt(key_id, token[:-4] + "AAAA")
