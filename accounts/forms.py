"""Dashboard forms for teams, members, invites and gateway tokens. Services enforce the rules; forms parse."""

import re
from datetime import timedelta

from django import forms
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts.models import Role


class NameListField(forms.CharField):
    """Names or globs (models, aliases, fallback routes, IP networks), comma- or newline-separated."""

    def to_python(self, value):
        return [item.strip() for item in re.split(r"[,\n]", value or "") if item.strip()]

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list | tuple) else value


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)
    allowed_models = NameListField(required=False, help_text='Model globs the team may use; empty means "*"')
    rpm = forms.IntegerField(required=False, min_value=1, label="RPM ceiling")
    tpm = forms.IntegerField(required=False, min_value=1, label="TPM ceiling")
    max_concurrency = forms.IntegerField(required=False, min_value=1, label="Concurrency ceiling")
    monthly_budget_usd = forms.DecimalField(required=False, min_value=0, max_digits=12, decimal_places=4,
                                            label="Monthly budget (USD)")


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def clean_username(self):
        name = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=name).first()
        if user is None:
            raise forms.ValidationError("no user with this name; send them an invite link instead")
        self.cleaned_data["user"] = user
        return name


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class InviteForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    expires_in_hours = forms.IntegerField(min_value=1, max_value=30 * 24, initial=72)
    note = forms.CharField(max_length=200, required=False, help_text="Who it is for, to recognise it later")


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    allowed_models = NameListField(required=False, help_text="Empty: every model the team may use")
    rpm = forms.IntegerField(required=False, min_value=1, label="RPM")
    tpm = forms.IntegerField(required=False, min_value=1, label="TPM")
    max_concurrency = forms.IntegerField(required=False, min_value=1, label="Concurrency")
    budget_usd = forms.DecimalField(required=False, min_value=0, max_digits=12, decimal_places=4,
                                    label="Monthly budget (USD)")
    expires_in_days = forms.IntegerField(required=False, min_value=1, max_value=3650,
                                         help_text="Empty: never expires")
    allowed_ips = NameListField(required=False, label="Allowed IPs", help_text="Addresses or CIDR networks")

    def service_fields(self) -> dict:
        data = dict(self.cleaned_data)
        days = data.pop("expires_in_days", None)
        data["expires_at"] = timezone.now() + timedelta(days=days) if days else None
        return data


class RotateForm(forms.Form):
    overlap_hours = forms.IntegerField(min_value=0, max_value=30 * 24, initial=1,
                                       help_text="How long the old value keeps working")


class AuditFilterForm(forms.Form):
    team = forms.IntegerField(required=False, min_value=1)
    action = forms.CharField(required=False, max_length=50)
    actor = forms.CharField(required=False, max_length=150)
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)


def add_service_errors(form: forms.Form, exc: forms.ValidationError) -> None:
    """Show a service's ValidationError on the form: per field where it names one, else on top."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)
