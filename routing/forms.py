"""Dashboard forms for providers, credentials and routes. They validate input; services do the writes."""

import json
import re

from django import forms
from django.core.exceptions import ValidationError

from accounts.forms import NameListField
from routing.models import Provider, ProviderKind, Strategy


class JSONObjectField(forms.CharField):
    """A JSON object typed into a textarea (extra headers, provider options)."""

    widget = forms.Textarea(attrs={"rows": 2})

    def to_python(self, value):
        value = (value or "").strip()
        if not value:
            return {}
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"not valid JSON: {exc.msg}") from None
        if not isinstance(parsed, dict):
            raise ValidationError("must be a JSON object, e.g. {\"x-header\": \"value\"}")
        return parsed

    def prepare_value(self, value):
        if isinstance(value, dict):
            return json.dumps(value) if value else ""
        return value


class ProviderForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=ProviderKind.choices)
    base_url = forms.CharField(max_length=500, required=False, help_text="Empty: the vendor's default")
    extra_headers = JSONObjectField(required=False, help_text="JSON object of headers sent upstream")
    options = JSONObjectField(required=False, help_text="Kind-specific options (JSON), e.g. a probe model")
    connect_timeout = forms.FloatField(required=False, min_value=0.1)
    read_timeout = forms.FloatField(required=False, min_value=0.1)
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args, instance: Provider | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.instance = instance
        if instance is not None:
            # Providers are saved by name: renaming would silently create a second provider.
            self.fields["name"].disabled = True

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if self.instance is None and Provider.objects.filter(name=name).exists():
            raise ValidationError("a provider with this name already exists")
        return name


class CredentialForm(forms.Form):
    """Edit one credential. The secret field is write-only: empty keeps the stored secret."""

    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave empty to keep the current key. The stored key is never shown.",
    )
    max_inflight = forms.IntegerField(required=False, min_value=1, label="Max in-flight")
    rpm = forms.IntegerField(required=False, min_value=1, label="RPM")
    tpm = forms.IntegerField(required=False, min_value=1, label="TPM")
    weight = forms.IntegerField(min_value=1, initial=1)
    enabled = forms.BooleanField(required=False, initial=True)


class BulkKeysForm(forms.Form):
    """Many keys pasted at once: one per line, either `KEY` or `NAME KEY`."""

    keys = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5, "autocomplete": "off", "spellcheck": "false"}),
        help_text="One key per line; optionally a name first: <code>acct-7 sk-...</code>",
    )
    name_prefix = forms.SlugField(max_length=60, initial="key", help_text="Names for keys pasted without one")

    def clean_keys(self) -> list[tuple[str | None, str]]:
        entries: list[tuple[str | None, str]] = []
        for number, line in enumerate(self.cleaned_data["keys"].splitlines(), start=1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) > 2:
                # Do not echo the line back: it holds a key.
                raise ValidationError(f"line {number}: expected `KEY` or `NAME KEY`")
            name, secret = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
            if name is not None and not re.fullmatch(r"[\w.@-]{1,100}", name):
                raise ValidationError(f"line {number}: a name may use letters, digits and . _ @ - only")
            if len(secret) < 8:
                raise ValidationError(f"line {number}: this does not look like an API key (too short)")
            entries.append((name, secret))
        if not entries:
            raise ValidationError("paste at least one key")
        return entries


class RouteForm(forms.Form):
    model = forms.CharField(max_length=200, help_text='Client model name or glob, e.g. "gpt-4o" or "claude-*"')
    strategy = forms.ChoiceField(choices=Strategy.choices)
    priority = forms.IntegerField(initial=0, help_text="Higher wins when several globs match")
    retry_budget = forms.IntegerField(min_value=0, initial=2, help_text="Extra attempts on other credentials")
    timeout = forms.FloatField(required=False, min_value=0.1, help_text="Seconds for the whole upstream call")
    aliases = NameListField(required=False, help_text="Other model names for this route, comma-separated")
    fallbacks = NameListField(required=False, help_text="Routes (model names) tried in order when this one cannot serve")
    enabled = forms.BooleanField(required=False, initial=True)
    log_bodies = forms.BooleanField(
        required=False, label="Store bodies",
        help_text="Keep request and response bodies (secrets and images redacted) for the request log, "
                  "deleted after DS2API_BODY_RETENTION_DAYS. Off by default.",
    )

    def __init__(self, *args, instance=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.instance = instance
        if instance is not None:
            self.fields["model"].disabled = True


class TargetForm(forms.Form):
    provider = forms.ModelChoiceField(queryset=Provider.objects.all(), required=False)
    upstream_model = forms.CharField(max_length=200, required=False, help_text="Empty: the client's name")
    weight = forms.IntegerField(min_value=1, initial=1)
    tier = forms.IntegerField(min_value=0, initial=0, help_text="Lower tiers are preferred")


TargetFormSet = forms.formset_factory(TargetForm, extra=2, max_num=50, validate_max=True)
