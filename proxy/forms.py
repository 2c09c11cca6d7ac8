"""Filters of the usage and request-log pages, and their translation into a scoped `UsageQuery`.

Every id a user types into a URL is checked against what they may see: another team's team, token or
request answers 404; credentials are platform data, so only platform admins may filter by them.
"""

from datetime import UTC, datetime, timedelta

from django import forms
from django.http import Http404
from django.utils import timezone

from accounts.models import GatewayToken
from accounts.page_access import access_for
from accounts.selectors import teams_for
from proxy.selectors import UsageQuery

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_CUSTOM_SPAN = timedelta(days=400)
BREAKDOWNS = ("credential", "token", "team", "model")


class ScopedFilterForm(forms.Form):
    team = forms.IntegerField(required=False, min_value=1)
    token = forms.IntegerField(required=False, min_value=1)
    credential = forms.IntegerField(required=False, min_value=1)
    model = forms.CharField(required=False, max_length=200)

    def __init__(self, data, *, user) -> None:
        super().__init__(data)
        self.user = user

    def window(self) -> tuple[datetime | None, datetime | None]:
        raise NotImplementedError

    def to_query(self) -> UsageQuery:
        """The query this user may run; raises Http404 for ids outside what they may see."""
        data = self.cleaned_data if self.is_valid() else {}
        access = access_for(self.user)
        team_id, token_id, credential_id = data.get("team"), data.get("token"), data.get("credential")
        if team_id is not None and not teams_for(self.user).filter(pk=team_id).exists():
            raise Http404("no such team")
        if token_id is not None:
            token_team = GatewayToken.objects.filter(pk=token_id).values_list("team_id", flat=True).first()
            if token_team is None or not teams_for(self.user).filter(pk=token_team).exists():
                raise Http404("no such token")
        if credential_id is not None and not access.is_platform_admin:
            raise Http404("no such credential")
        team_ids = None if access.is_platform_admin else tuple(access.roles)
        if team_ids is not None and team_id is None and len(team_ids) == 1:
            team_id = team_ids[0]  # the common case: one team, so its rollups serve the charts
        start, end = self.window()
        return UsageQuery(start=start, end=end, team_id=team_id, token_id=token_id, credential_id=credential_id,
                          model=(data.get("model") or "").strip(), team_ids=team_ids)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


class UsageFilterForm(ScopedFilterForm):
    range = forms.ChoiceField(choices=[(k, k) for k in (*RANGES, "custom")], required=False)
    start = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    end = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    by = forms.ChoiceField(choices=[(b, b) for b in BREAKDOWNS], required=False)

    def clean(self):
        data = super().clean()
        if data.get("range") == "custom":
            start, end = _aware(data.get("start")), _aware(data.get("end"))
            if not start or not end or start >= end:
                raise forms.ValidationError("a custom range needs a start before its end")
            if end - start > MAX_CUSTOM_SPAN:
                raise forms.ValidationError("a custom range may span at most 400 days")
        return data

    @property
    def range_name(self) -> str:
        return (self.cleaned_data.get("range") if self.is_valid() else "") or "24h"

    @property
    def breakdown(self) -> str:
        chosen = self.cleaned_data.get("by") if self.is_valid() else ""
        if chosen == "credential" and not access_for(self.user).is_platform_admin:
            chosen = ""
        return chosen or ("credential" if access_for(self.user).is_platform_admin else "model")

    def window(self) -> tuple[datetime, datetime]:
        now = timezone.now()
        if self.range_name == "custom":
            return _aware(self.cleaned_data["start"]), _aware(self.cleaned_data["end"])
        return now - RANGES[self.range_name], now


class LogFilterForm(ScopedFilterForm):
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    status = forms.CharField(required=False, max_length=3, help_text="2xx, 4xx, 5xx or a code")
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def window(self) -> tuple[datetime | None, datetime | None]:
        # Unbounded unless asked: the log is keyset-paginated by id, newest first.
        data = self.cleaned_data if self.is_valid() else {}
        return _aware(data.get("since")), _aware(data.get("until"))
