"""Management API for providers, credentials and routes.

Providers and credentials are platform configuration: only platform admins see or change them (anyone
else gets an empty list and 404s). Routes are readable by team members for the models their teams may
use. A credential's secret is write-only: responses carry its last four characters, nothing more.
"""

import re

from django_filters import rest_framework as filters
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field
from rest_framework import mixins, serializers, status
from rest_framework.response import Response

from accounts.api_base import ManagementViewSet
from accounts.permissions import require_platform_admin
from accounts.selectors import routes_for
from routing import services
from routing.models import Credential, Provider, Route

HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


class PlatformAdminViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ManagementViewSet):
    """Reads for platform admins only; writes through the routing services."""

    model = None

    def get_queryset(self):
        rows = self.model.objects.all()
        return rows if self.request.user.is_superuser else rows.none()

    def destroy(self, request, pk=None):
        row = self.get_object()
        self.remove(row)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def create(self, request):
        require_platform_admin(request.user, "change the gateway configuration")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = self.save_new(dict(serializer.validated_data))
        return Response(self.get_serializer(row).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        row = self.get_object()
        serializer = self.get_serializer(row, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        row = self.save_changes(row, dict(serializer.validated_data))
        return Response(self.get_serializer(row).data)


# --- providers -------------------------------------------------------------------------------------


class ProviderSerializer(serializers.ModelSerializer):
    extra_headers = serializers.DictField(child=serializers.CharField(max_length=2000), required=False)
    options = serializers.DictField(required=False, help_text="Kind-specific options (local models)")

    class Meta:
        model = Provider
        fields = ["id", "name", "kind", "base_url", "extra_headers", "connect_timeout", "read_timeout", "options",
                  "enabled", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"connect_timeout": {"min_value": 0.1, "max_value": 3600},
                        "read_timeout": {"min_value": 0.1, "max_value": 86400}}

    def validate_extra_headers(self, headers: dict) -> dict:
        # They are sent upstream verbatim: refuse anything that could split or smuggle a header.
        for name, value in headers.items():
            if not HEADER_NAME.fullmatch(name) or any(ch in value for ch in "\r\n\0"):
                raise serializers.ValidationError(f"{name!r} is not a valid HTTP header")
        return headers


class ProviderViewSet(PlatformAdminViewSet):
    model = Provider
    serializer_class = ProviderSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_fields = ["name", "kind", "enabled"]

    def save_new(self, data: dict) -> Provider:
        return services.save_provider(data.pop("name"), actor=self.actor, **data)

    def save_changes(self, row: Provider, data: dict) -> Provider:
        return services.update_provider(row, actor=self.actor, **data)

    def remove(self, row: Provider) -> None:
        services.delete_provider(row, actor=self.actor)


# --- credentials -----------------------------------------------------------------------------------


class CredentialSerializer(serializers.ModelSerializer):
    secret = serializers.CharField(write_only=True, required=False, trim_whitespace=True, max_length=10_000,
                                   help_text="The provider API key. Write-only: never returned")
    masked = serializers.CharField(read_only=True, help_text="The last four characters of the secret")

    class Meta:
        model = Credential
        fields = ["id", "provider", "name", "secret", "masked", "last4", "max_inflight", "rpm", "tpm", "weight",
                  "enabled", "health_status", "cooldown_until", "last_error", "created_at", "updated_at"]
        read_only_fields = ["last4", "health_status", "cooldown_until", "last_error", "created_at", "updated_at"]

    def validate(self, attrs):
        if self.instance is None and not attrs.get("secret"):
            raise serializers.ValidationError({"secret": "a new credential needs its secret"})
        if self.instance is not None and "provider" in attrs and attrs["provider"] != self.instance.provider:
            raise serializers.ValidationError({"provider": "a credential cannot move to another provider"})
        return attrs


class CredentialFilter(filters.FilterSet):
    provider = filters.NumberFilter(field_name="provider_id")

    class Meta:
        model = Credential
        fields = ["provider", "name", "enabled", "health_status"]


class CredentialViewSet(PlatformAdminViewSet):
    model = Credential
    serializer_class = CredentialSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = CredentialFilter

    def get_queryset(self):
        return super().get_queryset().select_related("provider")

    def save_new(self, data: dict) -> Credential:
        return services.save_credential(data.pop("provider"), data.pop("name"), actor=self.actor, **data)

    def save_changes(self, row: Credential, data: dict) -> Credential:
        data.pop("provider", None)
        return services.update_credential(row, actor=self.actor, **data)

    def remove(self, row: Credential) -> None:
        services.delete_credential(row, actor=self.actor)


# --- routes ----------------------------------------------------------------------------------------


class RouteTargetSerializer(serializers.Serializer):
    provider = serializers.PrimaryKeyRelatedField(queryset=Provider.objects.all())
    upstream_model = serializers.CharField(max_length=200, required=False, default="", allow_blank=True,
                                           help_text="Empty: pass the client's model name through")
    weight = serializers.IntegerField(min_value=1, max_value=1000, default=1)


@extend_schema_field(RouteTargetSerializer(many=True))
class RouteTargetsField(serializers.ListField):
    child = RouteTargetSerializer()

    def to_representation(self, targets):
        return [{"provider": t.provider_id, "upstream_model": t.upstream_model, "weight": t.weight}
                for t in targets.all()]


class RouteSerializer(serializers.ModelSerializer):
    targets = RouteTargetsField(min_length=1, max_length=100)

    class Meta:
        model = Route
        fields = ["id", "model", "strategy", "priority", "enabled", "timeout", "retry_budget", "log_bodies",
                  "targets", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"priority": {"min_value": -1_000_000, "max_value": 1_000_000},
                        "timeout": {"min_value": 0.1, "max_value": 86400},
                        "retry_budget": {"max_value": 100}}


def _target_specs(targets: list[dict]) -> list[services.TargetSpec]:
    return [services.TargetSpec(t["provider"], t.get("upstream_model", ""), t.get("weight", 1)) for t in targets]


class RouteViewSet(PlatformAdminViewSet):
    """Routes; team members read those whose model their teams may use."""

    model = Route
    queryset = Route.objects.none()  # the real one is per user: get_queryset
    serializer_class = RouteSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_fields = ["model", "strategy", "enabled"]

    def get_queryset(self):
        return routes_for(self.request.user)

    def save_new(self, data: dict) -> Route:
        return services.save_route(data.pop("model"), _target_specs(data.pop("targets")), actor=self.actor, **data)

    def save_changes(self, row: Route, data: dict) -> Route:
        require_platform_admin(self.request.user, "change routes")
        targets = data.pop("targets", None)
        specs = _target_specs(targets) if targets is not None else None
        return services.update_route(row, targets=specs, actor=self.actor, **data)

    def remove(self, row: Route) -> None:
        require_platform_admin(self.request.user, "delete routes")
        services.delete_route(row, actor=self.actor)
