"""One usage row per proxied request."""

from django.db import models
from django.utils import timezone


class UsageRecord(models.Model):
    created_at = models.DateTimeField(default=timezone.now)
    request_id = models.CharField(max_length=40, blank=True)
    # Plain ids rather than foreign keys: rows are written in batches off the request path and must
    # survive deletion of the token, team, route or credential they name.
    token_id = models.BigIntegerField(null=True, blank=True)
    team_id = models.BigIntegerField(null=True, blank=True)
    route_id = models.BigIntegerField(null=True, blank=True)
    credential_id = models.BigIntegerField(null=True, blank=True)
    provider_id = models.BigIntegerField(null=True, blank=True)
    client_protocol = models.CharField(max_length=30)
    upstream_kind = models.CharField(max_length=20, blank=True)
    client_model = models.CharField(max_length=200, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    status = models.PositiveSmallIntegerField()
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    estimated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    ttfb_ms = models.PositiveIntegerField(null=True, blank=True)
    streamed = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=1)
    error_type = models.CharField(max_length=50, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["credential_id", "created_at"], name="usage_credential_time"),
            models.Index(fields=["team_id", "created_at"], name="usage_team_time"),
            models.Index(fields=["token_id", "created_at"], name="usage_token_time"),
            models.Index(fields=["created_at"], name="usage_time"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.client_model} {self.status}"
