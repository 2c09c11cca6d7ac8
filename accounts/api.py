"""Management API for teams, memberships, invites and gateway tokens (rules: `accounts.permissions`).

Every write calls the service functions the dashboard and config import use. A token's full value is
in the response that creates (or rotates) it and nowhere else.
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from accounts import invites, selectors, services
from accounts.api_base import ManagementViewSet, VisibleTeamField, username_field
from accounts.budgets import BudgetStatus
from accounts.filters import InviteFilter, MembershipFilter, TeamFilter, TokenFilter
from accounts.models import GatewayToken, Invite, Membership, Role, Team
from accounts.permissions import (
    MANAGE_MEMBERS,
    USE_GATEWAY,
    may_change_token,
    require_platform_admin,
    require_role,
    role_in,
)

INVITE_STATUSES = ["open", "accepted", "revoked", "expired"]
TOKEN_STATUSES = ["active", "expired", "revoked"]


def _models_field():
    return serializers.ListField(child=serializers.CharField(max_length=200, allow_blank=False), required=False)


def _money_field(**kwargs):
    return serializers.DecimalField(max_digits=12, decimal_places=4, min_value=0, allow_null=True, required=False,
                                    **kwargs)


# --- teams -----------------------------------------------------------------------------------------


class TeamSerializer(serializers.ModelSerializer):
    allowed_models = _models_field()
    monthly_budget_usd = _money_field()
    role = serializers.SerializerMethodField(help_text="Your role in this team")

    class Meta:
        model = Team
        fields = ["id", "name", "allowed_models", "rpm", "tpm", "max_concurrency", "monthly_budget_usd", "role",
                  "created_at"]
        read_only_fields = ["created_at"]

    @extend_schema_field(serializers.ChoiceField(choices=Role.choices, allow_null=True))
    def get_role(self, team: Team) -> str | None:
        return role_in(self.context["request"].user, team.pk)


class BudgetStatusSerializer(serializers.Serializer):
    budget_usd = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True)
    spent_usd = serializers.DecimalField(max_digits=16, decimal_places=8)
    fraction = serializers.FloatField(allow_null=True, help_text="spent / budget")
    warning = serializers.BooleanField(help_text="80% of the budget is spent")
    exceeded = serializers.BooleanField(help_text="the budget is spent: requests get 429 budget_exceeded")
    resets_at = serializers.DateTimeField()


class TeamViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ManagementViewSet):
    """Teams you belong to. Creating teams and setting their ceilings is for platform admins."""

    serializer_class = TeamSerializer
    queryset = Team.objects.none()  # the real one is per user: get_queryset
    filter_backends = [DjangoFilterBackend]
    filterset_class = TeamFilter

    def get_queryset(self):
        return selectors.teams_for(self.request.user).order_by("name")

    def create(self, request):
        require_platform_admin(request.user, "create teams")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        team = services.create_team(actor=self.actor, **serializer.validated_data)
        return Response(self.get_serializer(team).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        team = self.get_object()
        require_platform_admin(request.user, "change a team's name or ceilings")
        serializer = self.get_serializer(team, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        team = services.update_team(team, actor=self.actor, **serializer.validated_data)
        return Response(self.get_serializer(team).data)

    def destroy(self, request, pk=None):
        team = self.get_object()
        require_platform_admin(request.user, "delete teams")
        services.delete_team(team, actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=BudgetStatusSerializer)
    @action(detail=True, methods=["get"])
    def budget(self, request, pk=None):
        """This month's spend against the team's monthly budget."""
        return Response(BudgetStatusSerializer(_budget_dict(selectors.team_budget(self.get_object()))).data)


def _budget_dict(state: BudgetStatus) -> dict:
    return {"budget_usd": state.budget_usd, "spent_usd": state.spent_usd, "fraction": state.fraction,
            "warning": state.warning, "exceeded": state.exceeded, "resets_at": state.resets_at}


# --- memberships -----------------------------------------------------------------------------------


class MembershipSerializer(serializers.ModelSerializer):
    username = username_field("user")

    class Meta:
        model = Membership
        fields = ["id", "team", "user", "username", "role", "created_at"]
        read_only_fields = ["team", "user", "created_at"]


class MembershipCreateSerializer(serializers.Serializer):
    team = VisibleTeamField()
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)

    def validate_username(self, value: str):
        user = get_user_model().objects.filter(username=value).first()
        if user is None:
            raise serializers.ValidationError("no user with this username")
        return user


class MembershipViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ManagementViewSet):
    """Members of your teams. Owners add members, change roles and remove members; anyone may leave."""

    serializer_class = MembershipSerializer
    queryset = Membership.objects.none()
    filter_backends = [DjangoFilterBackend]
    filterset_class = MembershipFilter

    def get_queryset(self):
        return selectors.memberships_for(self.request.user)

    @extend_schema(request=MembershipCreateSerializer, responses={201: MembershipSerializer})
    def create(self, request):
        serializer = MembershipCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        require_role(request.user, data["team"], MANAGE_MEMBERS, "manage members")
        membership = services.add_member(data["team"], data["username"], data["role"], actor=self.actor)
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        membership = self.get_object()
        require_role(request.user, membership.team_id, MANAGE_MEMBERS, "change roles")
        serializer = self.get_serializer(membership, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        role = serializer.validated_data.get("role", membership.role)
        membership = services.add_member(membership.team, membership.user, role, actor=self.actor)
        return Response(self.get_serializer(membership).data)

    def destroy(self, request, pk=None):
        membership = self.get_object()
        if membership.user_id != request.user.pk:
            require_role(request.user, membership.team_id, MANAGE_MEMBERS, "remove members")
        services.remove_member(membership, actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- invites ---------------------------------------------------------------------------------------


class InviteSerializer(serializers.ModelSerializer):
    created_by = username_field("created_by")
    accepted_by = username_field("accepted_by")
    status = serializers.SerializerMethodField()

    class Meta:
        model = Invite
        fields = ["id", "team", "role", "note", "status", "created_by", "created_at", "expires_at", "accepted_by",
                  "accepted_at", "revoked_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=INVITE_STATUSES))
    def get_status(self, invite: Invite) -> str:
        if invite.accepted_at:
            return "accepted"
        if invite.revoked_at:
            return "revoked"
        return "open" if invite.is_open() else "expired"


class InviteCreateSerializer(serializers.Serializer):
    team = VisibleTeamField()
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    note = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    expires_in_hours = serializers.IntegerField(min_value=1, max_value=invites.MAX_LIFETIME.days * 24,
                                                default=int(invites.DEFAULT_LIFETIME.total_seconds() // 3600))


class IssuedInviteSerializer(InviteSerializer):
    code = serializers.CharField(read_only=True, help_text="Shown once; only its digest is stored")
    url = serializers.CharField(read_only=True, help_text="The link to send; shown once")

    class Meta(InviteSerializer.Meta):
        fields = [*InviteSerializer.Meta.fields, "code", "url"]
        read_only_fields = fields


class InviteAcceptSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=200)


class InviteViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ManagementViewSet):
    """Invite links of teams you administer. Owners create and revoke them; anyone may accept one."""

    serializer_class = InviteSerializer
    queryset = Invite.objects.none()
    filter_backends = [DjangoFilterBackend]
    filterset_class = InviteFilter

    def get_queryset(self):
        return selectors.invites_for(self.request.user)

    @extend_schema(request=InviteCreateSerializer, responses={201: IssuedInviteSerializer})
    def create(self, request):
        serializer = InviteCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        require_role(request.user, data["team"], MANAGE_MEMBERS, "invite people")
        issued = invites.create_invite(data["team"], role=data["role"], note=data["note"], actor=self.actor,
                                       lifetime=timedelta(hours=data["expires_in_hours"]))
        issued.invite.code, issued.invite.url = issued.code, request.build_absolute_uri(issued.path)
        return Response(IssuedInviteSerializer(issued.invite).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        invite = self.get_object()
        require_role(request.user, invite.team_id, MANAGE_MEMBERS, "revoke invites")
        invites.revoke_invite(invite, actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=InviteAcceptSerializer, responses={200: MembershipSerializer})
    @action(detail=False, methods=["post"])
    def accept(self, request):
        """Join a team with the code of an invite link."""
        serializer = InviteAcceptSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if request.user.pk is None:
            raise PermissionDenied("an invite is accepted by a signed-in user, not with a token")
        membership = invites.accept_invite(serializer.validated_data["code"], request.user)
        return Response(MembershipSerializer(membership).data)


# --- gateway tokens --------------------------------------------------------------------------------


class TokenSerializer(serializers.ModelSerializer):
    allowed_models = _models_field()
    allowed_ips = serializers.ListField(child=serializers.CharField(max_length=64), required=False,
                                        help_text="Addresses or CIDR networks; empty = any")
    budget_usd = _money_field(help_text="Monthly budget; empty = only the team's budget applies")
    created_by = username_field("created_by")
    status = serializers.SerializerMethodField()

    class Meta:
        model = GatewayToken
        fields = ["id", "team", "name", "prefix", "allowed_models", "rpm", "tpm", "max_concurrency", "budget_usd",
                  "allowed_ips", "is_admin", "expires_at", "status", "revoked_at", "last_used_at", "created_by",
                  "created_at"]
        read_only_fields = ["team", "prefix", "is_admin", "revoked_at", "last_used_at", "created_at"]

    @extend_schema_field(serializers.ChoiceField(choices=TOKEN_STATUSES))
    def get_status(self, token: GatewayToken) -> str:
        if token.revoked_at:
            return "revoked"
        return "active" if token.is_active() else "expired"


class TokenCreateSerializer(TokenSerializer):
    team = VisibleTeamField()

    class Meta(TokenSerializer.Meta):
        read_only_fields = ["prefix", "revoked_at", "last_used_at", "created_at"]


class IssuedTokenSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The full token: shown in this response only")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]


class RotateSerializer(serializers.Serializer):
    overlap_seconds = serializers.IntegerField(
        min_value=0, max_value=int(services.MAX_ROTATION_OVERLAP.total_seconds()), default=3600,
        help_text="How long the old token keeps working beside the new one",
    )


def _issued(issued: services.IssuedToken) -> dict:
    issued.token.token = issued.plaintext
    return IssuedTokenSerializer(issued.token).data


class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ManagementViewSet):
    """Gateway tokens of your teams (prefix only). Members create their own; admins manage all of them."""

    serializer_class = TokenSerializer
    queryset = GatewayToken.objects.none()
    filter_backends = [DjangoFilterBackend]
    filterset_class = TokenFilter
    http_method_names = ["get", "post", "patch", "head", "options"]  # tokens are revoked, never deleted

    def get_queryset(self):
        return selectors.tokens_for(self.request.user)

    @extend_schema(request=TokenCreateSerializer, responses={201: IssuedTokenSerializer})
    def create(self, request):
        serializer = TokenCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        team = data.pop("team")
        require_role(request.user, team, USE_GATEWAY, "create tokens")
        issued = services.issue_token(team, data.pop("name"), actor=self.actor, **data)
        return Response(_issued(issued), status=status.HTTP_201_CREATED)

    def _changeable(self) -> GatewayToken:
        token = self.get_object()
        if not may_change_token(self.request.user, token):
            raise PermissionDenied("your role in this team does not allow you to change this token")
        return token

    def partial_update(self, request, pk=None):
        token = self._changeable()
        serializer = self.get_serializer(token, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        token = services.update_token(token, actor=self.actor, **serializer.validated_data)
        return Response(self.get_serializer(token).data)

    @extend_schema(request=None, responses=TokenSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Stop the token from working, at once and for good."""
        token = services.revoke_token(self._changeable(), actor=self.actor)
        return Response(self.get_serializer(token).data)

    @extend_schema(request=RotateSerializer, responses={201: IssuedTokenSerializer})
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        """Issue a new value; the old one keeps working for `overlap_seconds`, then expires."""
        token = self._changeable()
        serializer = RotateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        overlap = timedelta(seconds=serializer.validated_data["overlap_seconds"])
        issued = services.rotate_token(token, overlap=overlap, actor=self.actor)
        return Response(_issued(issued), status=status.HTTP_201_CREATED)

    @extend_schema(responses=BudgetStatusSerializer)
    @action(detail=True, methods=["get"])
    def budget(self, request, pk=None):
        """This month's spend against the token's own budget."""
        return Response(BudgetStatusSerializer(_budget_dict(selectors.token_budget(self.get_object()))).data)
