"""Management API for what happened and what it cost: usage summaries, the audit log (with CSV export)
and the price table usage is costed with."""

import csv
import io
from datetime import timedelta

from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from accounts import audit, pricing, selectors
from accounts.api_base import ManagementViewSet
from accounts.filters import AuditEventFilter, PriceFilter, as_utc
from accounts.models import AuditEvent, ModelPrice
from accounts.permissions import require_platform_admin

BIGINT_MAX = 2**63 - 1
DEFAULT_USAGE_RANGE = timedelta(days=30)

# --- prices ----------------------------------------------------------------------------------------


def _price_field(**kwargs):
    return serializers.DecimalField(max_digits=12, decimal_places=6, min_value=0, **kwargs)


class PriceSerializer(serializers.ModelSerializer):
    input_per_mtok = _price_field(help_text="USD per million input tokens")
    cached_input_per_mtok = _price_field(allow_null=True, required=False,
                                         help_text="USD per million cached input tokens; empty = input price")
    output_per_mtok = _price_field(help_text="USD per million output tokens")
    reasoning_per_mtok = _price_field(allow_null=True, required=False,
                                      help_text="USD per million reasoning tokens; empty = output price")

    class Meta:
        model = ModelPrice
        fields = ["id", "model", "input_per_mtok", "cached_input_per_mtok", "output_per_mtok", "reasoning_per_mtok",
                  "updated_at"]
        read_only_fields = ["updated_at"]


class PriceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ManagementViewSet):
    """USD per million tokens by model name or glob. Everyone signed in reads; platform admins edit."""

    serializer_class = PriceSerializer
    queryset = ModelPrice.objects.all()
    filter_backends = [DjangoFilterBackend]
    filterset_class = PriceFilter

    def create(self, request):
        require_platform_admin(request.user, "edit prices")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = pricing.create_price(actor=self.actor, **serializer.validated_data)
        return Response(self.get_serializer(row).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        row = self.get_object()
        require_platform_admin(request.user, "edit prices")
        serializer = self.get_serializer(row, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        row = pricing.update_price(row, actor=self.actor, **serializer.validated_data)
        return Response(self.get_serializer(row).data)

    def destroy(self, request, pk=None):
        row = self.get_object()
        require_platform_admin(request.user, "edit prices")
        pricing.delete_price(row, actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- usage -----------------------------------------------------------------------------------------


class UsageQuerySerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=list(selectors.USAGE_GROUPINGS), default="day")
    since = serializers.DateTimeField(required=False, help_text="Start (inclusive); default: 30 days before until")
    until = serializers.DateTimeField(required=False, help_text="End (exclusive); default: now")
    team = serializers.IntegerField(required=False, min_value=1, max_value=BIGINT_MAX)
    token = serializers.IntegerField(required=False, min_value=1, max_value=BIGINT_MAX)
    credential = serializers.IntegerField(required=False, min_value=1, max_value=BIGINT_MAX)
    model = serializers.CharField(required=False, max_length=200, help_text="Client model name")

    def validate(self, attrs):
        until = as_utc(attrs["until"], "until") if attrs.get("until") else timezone.now()
        try:
            since = as_utc(attrs["since"], "since") if attrs.get("since") else until - DEFAULT_USAGE_RANGE
        except OverflowError:
            raise serializers.ValidationError({"until": "out of range"}) from None
        if since >= until:
            raise serializers.ValidationError({"since": "must be before until"})
        return {**attrs, "since": since, "until": until}


class UsageRowSerializer(serializers.Serializer):
    key = serializers.CharField(allow_null=True, help_text="The day, model name, or token/credential/team id")
    label = serializers.CharField(help_text="A display name for the key")
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=20, decimal_places=8)


class UsageViewSet(ManagementViewSet):
    """Requests, tokens and cost of your teams, aggregated by day, model, token, credential or team."""

    serializer_class = UsageRowSerializer
    pagination_class = LimitOffsetPagination

    @extend_schema(parameters=[UsageQuerySerializer])
    def list(self, request):
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = dict(query.validated_data)
        user = request.user
        if params.get("team") is not None and not selectors.teams_for(user).filter(pk=params["team"]).exists():
            raise NotFound("no such team")
        if params.get("token") is not None and not selectors.tokens_for(user).filter(pk=params["token"]).exists():
            raise NotFound("no such token")
        group_by = params.pop("group_by")
        page = self.paginate_queryset(selectors.usage_summary(user, group_by=group_by, **params))
        labels = selectors.usage_labels(group_by, [row["key"] for row in page])
        for row in page:
            key = row["key"]
            row["label"] = labels.get(key, str(key) if key is not None else "(none)")
            row["key"] = str(key) if key is not None else None
        return self.get_paginated_response(UsageRowSerializer(page, many=True).data)


# --- audit -----------------------------------------------------------------------------------------


class AuditEventSerializer(serializers.ModelSerializer):
    ip = serializers.CharField(allow_null=True, read_only=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "actor_label", "team", "action", "target_type", "target_id",
                  "target_repr", "ip", "details"]
        read_only_fields = fields


class CSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        # Only errors of a client that asked for text/csv reach this renderer (the export builds its own
        # response): one header, one row.
        buffer = io.StringIO()
        rows = data if isinstance(data, dict) else {"detail": data}
        writer = csv.writer(buffer)
        writer.writerow(rows.keys())
        writer.writerow(str(value) for value in rows.values())
        return buffer.getvalue().encode()


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ManagementViewSet):
    """Who changed what, when, from where. Team admins and owners see their teams' events."""

    serializer_class = AuditEventSerializer
    queryset = AuditEvent.objects.none()
    filter_backends = [DjangoFilterBackend]
    filterset_class = AuditEventFilter

    def get_queryset(self):
        return selectors.audit_events_for(self.request.user)

    @extend_schema(filters=True, responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR)})
    @action(detail=False, methods=["get"], renderer_classes=[JSONRenderer, CSVRenderer], pagination_class=None)
    def export(self, request):
        """The filtered events as CSV (newest first, at most 100,000 rows)."""
        return audit.csv_download(f"audit-{timezone.now():%Y%m%d-%H%M%S}.csv",
                                  self.filter_queryset(self.get_queryset()))
