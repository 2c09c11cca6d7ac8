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


class StoredBody(models.Model):
    """The redacted request and response bodies of one request on a route with `log_bodies` on.

    Linked to its usage row by `request_id` (both are written in the same batch, off the request path).
    Each body is JSON text, redacted of secrets and inline images, and cut at DS2API_BODY_MAX_BYTES.
    """

    retention_days_setting = "DS2API_BODY_RETENTION_DAYS"  # proxy/retention.py prunes by created_at

    request_id = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    team_id = models.BigIntegerField(null=True, blank=True)  # the usage row's team, so scoping needs no join
    request_body = models.TextField(blank=True)
    # The client's JSON response, or for a stream the text, reasoning and tool calls it carried, joined.
    response_body = models.TextField(blank=True)
    streamed = models.BooleanField(default=False)
    truncated = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"bodies of {self.request_id}"


# --- Usage rollups -------------------------------------------------------------------------------
# Charts over long ranges read these, never raw rows. Each row sums the requests of one time bucket for
# one value of one dimension, so a per-credential 30-day chart is a single index range of ~720 rows.
# They are recomputed from raw rows (minute) or from the finer level (hour, day) with an upsert, so
# re-rolling any bucket gives the same numbers; see proxy/rollups.py.

# Upper bounds (ms) of the latency histogram buckets; the last column counts everything slower.
LATENCY_BUCKETS_MS = (100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


class Granularity(models.TextChoices):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


class Dimension(models.TextChoices):
    ALL = "all"  # key "": the whole gateway (overview)
    CREDENTIAL = "credential"  # key: credential id
    TOKEN = "token"  # noqa: S105 (a dimension name) — key: gateway token id
    TEAM = "team"  # key: team id
    MODEL = "model"  # key: the client's model name
    TEAM_MODEL = "team_model"  # key: "<team id>:<model>", so a team sees its own per-model usage


class UsageRollup(models.Model):
    granularity = models.CharField(max_length=6, choices=Granularity.choices)
    bucket = models.DateTimeField(help_text="Start of the minute, hour or day (UTC)")
    dimension = models.CharField(max_length=12, choices=Dimension.choices)
    key = models.CharField(max_length=230, blank=True)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    latency_ms_sum = models.BigIntegerField(default=0)
    ttfb_ms_sum = models.BigIntegerField(default=0)
    ttfb_count = models.BigIntegerField(default=0)
    # Latency histogram: requests with latency in (previous bound, bound]; lat_inf above the last bound.
    lat_100 = models.BigIntegerField(default=0)
    lat_250 = models.BigIntegerField(default=0)
    lat_500 = models.BigIntegerField(default=0)
    lat_1000 = models.BigIntegerField(default=0)
    lat_2500 = models.BigIntegerField(default=0)
    lat_5000 = models.BigIntegerField(default=0)
    lat_10000 = models.BigIntegerField(default=0)
    lat_30000 = models.BigIntegerField(default=0)
    lat_60000 = models.BigIntegerField(default=0)
    lat_inf = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # Also the index every chart query uses: equality on the first three, a range on bucket.
            models.UniqueConstraint(fields=["dimension", "key", "granularity", "bucket"], name="usage_rollup_unique"),
        ]
        indexes = [models.Index(fields=["granularity", "bucket"], name="usage_rollup_time")]

    def __str__(self) -> str:
        return f"{self.granularity} {self.bucket:%Y-%m-%d %H:%M} {self.dimension}={self.key} {self.requests}"


class RollupState(models.Model):
    """How far rollups have got: raw rows up to `last_usage_id` are rolled, as is time before `rolled_until`."""

    name = models.CharField(max_length=30, unique=True)
    last_usage_id = models.BigIntegerField(default=0)
    rolled_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}: id {self.last_usage_id}, until {self.rolled_until}"
