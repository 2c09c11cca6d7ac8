"""Providers, their encrypted credentials, and the rules that route client model names to them."""

from django.db import models
from django.utils import timezone


class ProviderKind(models.TextChoices):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    LOCAL = "local"


class Provider(models.Model):
    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=ProviderKind.choices)
    base_url = models.CharField(max_length=500, blank=True)
    extra_headers = models.JSONField(default=dict, blank=True)
    connect_timeout = models.FloatField(null=True, blank=True)
    read_timeout = models.FloatField(null=True, blank=True)
    # Kind-specific options (e.g. the model reference and dtype of a local provider).
    options = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class HealthStatus(models.TextChoices):
    OK = "ok"
    COOLING = "cooling"
    INVALID = "invalid"


class Credential(models.Model):
    """One provider account key. The secret is stored only as ciphertext under a key id of the key ring."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="credentials")
    name = models.CharField(max_length=100)
    secret_ciphertext = models.TextField()
    key_id = models.CharField(max_length=16)
    last4 = models.CharField(max_length=4, blank=True)
    # Where the secret was imported from ("env:NAME" / "file:PATH"); export writes this, never the secret.
    secret_ref = models.CharField(max_length=300, blank=True)
    max_inflight = models.PositiveIntegerField(null=True, blank=True)
    rpm = models.PositiveIntegerField(null=True, blank=True)
    tpm = models.PositiveIntegerField(null=True, blank=True)
    weight = models.PositiveIntegerField(default=1)
    enabled = models.BooleanField(default=True)
    health_status = models.CharField(max_length=10, choices=HealthStatus.choices, default=HealthStatus.OK)
    cooldown_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "name"]
        constraints = [models.UniqueConstraint(fields=["provider", "name"], name="credential_name_unique")]

    def __str__(self) -> str:
        return f"{self.provider.name}/{self.name}"

    @property
    def masked(self) -> str:
        return f"…{self.last4}" if self.last4 else "…"


class Strategy(models.TextChoices):
    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"
    LEAST_INFLIGHT = "least_inflight"
    LATENCY = "latency"
    HEADROOM = "headroom"


class Route(models.Model):
    """Maps a client model name (or glob such as "claude-*") to ordered targets."""

    model = models.CharField(max_length=200, unique=True)
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.ROUND_ROBIN)
    priority = models.IntegerField(default=0, help_text="Higher wins when several globs match")
    enabled = models.BooleanField(default=True)
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds for the whole upstream call")
    retry_budget = models.PositiveIntegerField(default=2, help_text="Extra attempts on other credentials")
    # Other client model names that resolve to this route.
    aliases = models.JSONField(default=list, blank=True)
    # Model names of other routes tried, in order, when none of this route's targets can serve.
    fallbacks = models.JSONField(default=list, blank=True)
    queue_timeout = models.FloatField(
        null=True, blank=True, help_text="Seconds a request may wait for a free credential (empty: the default)"
    )
    # Off by default: bodies may hold personal data. When on, each request's bodies are stored redacted and
    # pruned after DS2API_BODY_RETENTION_DAYS (proxy/stored_bodies.py).
    log_bodies = models.BooleanField(
        default=False, help_text="Store this route's request/response bodies (redacted, pruned after the retention period)"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "model"]

    def __str__(self) -> str:
        return self.model


class RouteTarget(models.Model):
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="targets")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="route_targets")
    upstream_model = models.CharField(max_length=200, blank=True, help_text="Empty: pass the client's name")
    weight = models.PositiveIntegerField(default=1)
    # Priority tier: lower tiers are preferred; a higher tier only serves when no lower one can.
    tier = models.PositiveIntegerField(default=0)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["route", "order", "id"]

    def __str__(self) -> str:
        return f"{self.route.model} -> {self.provider.name}:{self.upstream_model or '*'}"
