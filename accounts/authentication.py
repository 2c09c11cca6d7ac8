"""Management-API authentication with an admin-scoped gateway token (`Authorization: Bearer ds2-...`).

The lookup is the proxy's: the visible prefix finds the row, the digest is compared in constant time.
Only tokens with `is_admin` are accepted here; they act with platform-admin rights and appear in the
audit log as "token:<prefix>".
"""

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts.audit import client_ip
from accounts.models import GatewayToken
from accounts.tokens import PREFIX_LENGTH, TOKEN_MARK, digests_match, ip_allowed, token_digest


class TokenUser:
    """The principal of a request made with an admin token: a platform admin that is not a user row."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_superuser = True
    is_staff = True
    pk = id = None

    def __init__(self, token: GatewayToken) -> None:
        self.token = token
        self.username = f"token:{token.prefix}"

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username


class GatewayTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            return None
        if not value.startswith(TOKEN_MARK):
            raise exceptions.AuthenticationFailed("invalid token")
        token = GatewayToken.objects.filter(prefix=value[:PREFIX_LENGTH]).select_related("team").first()
        if token is None or not digests_match(token_digest(value), token.digest):
            raise exceptions.AuthenticationFailed("invalid token")
        if not token.is_active(timezone.now()):
            raise exceptions.AuthenticationFailed("this token has expired or been revoked")
        if not token.is_admin:
            raise exceptions.PermissionDenied("this token is not an admin token; the management API needs one")
        if not ip_allowed(client_ip(request), tuple(token.allowed_ips or ())):
            raise exceptions.PermissionDenied("this token may not be used from this address")
        return TokenUser(token), token

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to requests without credentials.
        return self.keyword


class GatewayTokenScheme(OpenApiAuthenticationExtension):
    target_class = GatewayTokenAuthentication
    name = "adminToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An admin-scoped gateway token (ds2-...)"}
