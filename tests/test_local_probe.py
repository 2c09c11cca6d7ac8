"""The dashboard's "test" button on a local model's credential judges its options, not whether it is loaded."""

import pytest

from routing.models import Credential, Provider
from routing.probes import probe_credential


@pytest.mark.django_db
def test_a_local_credential_with_valid_options_tests_ok_while_not_loaded(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    provider = Provider.objects.create(name="on-device", kind="local", options={"model": str(folder)})
    credential = Credential.objects.create(provider=provider, name="model", secret_ciphertext="x", key_id="x")
    result = probe_credential(credential)
    assert result.ok and "not loaded" in result.message


@pytest.mark.django_db
def test_a_local_credential_whose_model_is_gone_fails_with_the_reason(tmp_path):
    provider = Provider.objects.create(name="on-device", kind="local", options={"model": str(tmp_path / "gone")})
    credential = Credential.objects.create(provider=provider, name="model", secret_ciphertext="x", key_id="x")
    result = probe_credential(credential)
    assert not result.ok and "not an existing folder" in result.message
