"""Query-string filters of the management API's lists.

Related objects are filtered by plain id (NumberFilter), not by a choice of existing rows: a choice
filter would answer 400 for an id that does not exist and 200 for one that belongs to another team,
telling an outsider which ids exist.
"""

from datetime import UTC, datetime

from django.db.models import Q
from django.utils import timezone
from django_filters import rest_framework as filters
from rest_framework import serializers

from accounts.models import AuditEvent, GatewayToken, Invite, Membership, ModelPrice, Role, Team


def as_utc(value: datetime, field: str) -> datetime:
    """Python accepts UTC offsets Postgres refuses (beyond ±15:59): compare in UTC; refuse what does not fit."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise serializers.ValidationError({field: "date out of range"}) from None


class UTCDateTimeFilter(filters.IsoDateTimeFilter):
    def filter(self, qs, value):
        return super().filter(qs, as_utc(value, self.field_name) if value is not None else None)


class TeamFilter(filters.FilterSet):
    class Meta:
        model = Team
        fields = ["name"]


class MembershipFilter(filters.FilterSet):
    team = filters.NumberFilter(field_name="team_id")
    user = filters.NumberFilter(field_name="user_id")
    role = filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["team", "user", "role"]


class InviteFilter(filters.FilterSet):
    team = filters.NumberFilter(field_name="team_id")
    role = filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Invite
        fields = ["team", "role"]


class TokenFilter(filters.FilterSet):
    team = filters.NumberFilter(field_name="team_id")
    active = filters.BooleanFilter(method="filter_active", label="Only tokens that work now (or only those that do not)")

    class Meta:
        model = GatewayToken
        fields = ["team", "name", "prefix", "is_admin", "active"]

    def filter_active(self, queryset, name, value):
        working = Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        return queryset.filter(working) if value else queryset.exclude(working)


class PriceFilter(filters.FilterSet):
    model = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = ModelPrice
        fields = ["model"]


class AuditEventFilter(filters.FilterSet):
    team = filters.NumberFilter(field_name="team_id")
    action = filters.CharFilter(lookup_expr="startswith", help_text='e.g. "token." or "token.rotate"')
    actor = filters.CharFilter(field_name="actor_label", help_text="Username (or token:<prefix>, cli, ...)")
    target_type = filters.CharFilter()
    target_id = filters.CharFilter()
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["team", "action", "actor", "target_type", "target_id", "since", "until"]
