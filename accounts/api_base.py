"""What every management-API viewset shares: authentication, error mapping, the acting user, team fields.

Service functions raise Django's ValidationError; here it becomes DRF's, so the client gets a 400 with
the field-keyed messages instead of a 500.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated

from accounts.authentication import GatewayTokenAuthentication
from accounts.selectors import teams_for


def _as_drf_error(exc: DjangoValidationError) -> exceptions.ValidationError:
    if hasattr(exc, "error_dict"):
        return exceptions.ValidationError({field: [str(m) for m in msgs] for field, msgs in exc.message_dict.items()})
    return exceptions.ValidationError({"non_field_errors": exc.messages})


class ManagementViewSet(viewsets.GenericViewSet):
    authentication_classes = [GatewayTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    # PUT is left out on purpose: every update is a PATCH of the fields that change.
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    # Any path segment reaches the viewset, so a malformed id gets the API's JSON 404, not Django's HTML one.
    lookup_value_regex = "[^/]+"

    def handle_exception(self, exc):
        if isinstance(exc, DjangoValidationError):
            exc = _as_drf_error(exc)
        return super().handle_exception(exc)

    @property
    def actor(self):
        return self.request.user


@extend_schema_field(OpenApiTypes.INT)
class VisibleTeamField(serializers.PrimaryKeyRelatedField):
    """A team id the requesting user can see. Any other id answers 404, whether or not the team exists."""

    def get_queryset(self):
        return teams_for(self.context["request"].user)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("incorrect_type", data_type=type(data).__name__)
        try:
            pk = int(data)
        except ValueError:
            self.fail("incorrect_type", data_type=type(data).__name__)
        team = self.get_queryset().filter(pk=pk).first()
        if team is None:
            raise exceptions.NotFound("no such team")
        return team



def username_field(source: str) -> serializers.CharField:
    """The username behind a user foreign key; null when there is none (the system, or a deleted user)."""
    return serializers.CharField(source=f"{source}.username", read_only=True, allow_null=True)
