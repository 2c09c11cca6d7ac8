"""ds2api settings: every knob comes from the environment (documented in README.md)."""

import dj_database_url

from ds2api_site.env import BASE_DIR, DATA_DIR, env, env_bool, env_float, env_int, env_list, env_secret

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("DJANGO_SECRET_KEY", "django_secret_key")
if not SECRET_KEY:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is not set. `make run` generates one into .data/."
    )

HOST = env("HOST", "127.0.0.1")
PORT = env_int("PORT", 8000)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally, no CDN
    "django_filters",
    "channels",
    "accounts",
    "routing",
    "proxy",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "accounts.middleware.SecurityHeadersMiddleware",  # CSP without inline script, Referrer-Policy
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.audit.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "ds2api_site.urls"
ASGI_APPLICATION = "ds2api_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASE_URL = env("DATABASE_URL", "postgres://root@127.0.0.1:5432/ds2api")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if not DATABASES["default"]["ENGINE"].endswith("postgresql"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("ds2api needs PostgreSQL: DATABASE_URL must be a postgres:// URL.")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# Prefix for every key and channel ds2api writes in Redis, so several deployments or test runs can share one.
REDIS_PREFIX = env("DS2API_REDIS_PREFIX", "ds2api")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_PREFIX}:asgi"},
    }
}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_PREFIX}:celery:"}
CELERY_TASK_DEFAULT_QUEUE = f"{REDIS_PREFIX}"
# Tasks are idempotent: acknowledge after they finish, so a worker lost mid-task has it run again elsewhere.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # keep the LOGGING below (JSON or plain) in workers too

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "templates" / "static"]
WHITENOISE_USE_FINDERS = True  # serve straight from templates/static; collectstatic is optional
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ds2api management API",
    "DESCRIPTION": "Teams, tokens, providers, credentials, routes, prices, usage and the audit log. "
    "Authenticate with a dashboard session or an admin gateway token (Authorization: Bearer ds2-...).",
    "VERSION": "0.1.0",
    "COMPONENT_SPLIT_REQUEST": True,  # request bodies without the read-only fields, responses without write-only
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"TokenStatusEnum": "accounts.api.TOKEN_STATUSES",
                            "InviteStatusEnum": "accounts.api.INVITE_STATUSES"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "accounts.api_schema.add_error_responses",
    ],
}

# --- ds2api knobs --------------------------------------------------------------------------------
# Provider-secret key ring: comma-separated Fernet keys, newest first. Never derived from SECRET_KEY.
DS2API_ENCRYPTION_KEYS = env_secret("DS2API_ENCRYPTION_KEYS", "encryption_keys").replace("\n", ",").split(",")
DS2API_ENCRYPTION_KEYS = [key.strip() for key in DS2API_ENCRYPTION_KEYS if key.strip()]
# Upstream base URLs on loopback/private/link-local addresses are refused unless this is on.
DS2API_ALLOW_PRIVATE_UPSTREAMS = env_bool("DS2API_ALLOW_PRIVATE_UPSTREAMS", False)
# Largest accepted request body on the proxy path (bytes); larger gets 413.
DS2API_MAX_BODY_BYTES = env_int("DS2API_MAX_BODY_BYTES", 20 * 1024 * 1024)
# Failed gateway-token authentications per client address and minute before it gets 429 (0: no throttle).
DS2API_AUTH_MAX_FAILURES = env_int("DS2API_AUTH_MAX_FAILURES", 30)
# Largest non-streamed answer read from a provider (bytes); beyond it the answer counts as a failure (502).
DS2API_MAX_RESPONSE_BYTES = env_int("DS2API_MAX_RESPONSE_BYTES", 64 * 1024 * 1024)
# Largest image the gateway downloads from a client's image URL (for local models; larger: 400).
DS2API_IMAGE_MAX_BYTES = env_int("DS2API_IMAGE_MAX_BYTES", 20 * 1024 * 1024)
# Seconds between safety-net reloads of the in-process config snapshot (changes also arrive via pub/sub).
DS2API_SNAPSHOT_REFRESH_SECONDS = env_float("DS2API_SNAPSHOT_REFRESH_SECONDS", 30.0)
# Usage rows are written in batches: at most this many rows or this many seconds apart.
DS2API_USAGE_BATCH_SIZE = env_int("DS2API_USAGE_BATCH_SIZE", 500)
DS2API_USAGE_FLUSH_SECONDS = env_float("DS2API_USAGE_FLUSH_SECONDS", 0.5)
# Rows kept in memory while the database is unreachable; beyond this, new rows are dropped and logged.
DS2API_USAGE_BUFFER_MAX = env_int("DS2API_USAGE_BUFFER_MAX", 100_000)
# Default upstream timeouts (seconds); a provider may override them.
DS2API_CONNECT_TIMEOUT = env_float("DS2API_CONNECT_TIMEOUT", 10.0)
DS2API_READ_TIMEOUT = env_float("DS2API_READ_TIMEOUT", 600.0)
# Key pooling (routing/limits.py): how long a request may wait for a busy credential, how many may wait per
# route, Redis timeout before falling back to per-process limits, in-flight lease length (renewed while a
# request runs), and credential cooldowns (exponential backoff; non-429 failures in a row before one starts).
DS2API_QUEUE_TIMEOUT = env_float("DS2API_QUEUE_TIMEOUT", 10.0)
DS2API_QUEUE_MAX_WAITING = env_int("DS2API_QUEUE_MAX_WAITING", 1000)
DS2API_REDIS_TIMEOUT = env_float("DS2API_REDIS_TIMEOUT", 0.5)
DS2API_LEASE_SECONDS = env_float("DS2API_LEASE_SECONDS", 60.0)
DS2API_COOLDOWN_BASE_SECONDS = env_float("DS2API_COOLDOWN_BASE_SECONDS", 1.0)
DS2API_COOLDOWN_MAX_SECONDS = env_float("DS2API_COOLDOWN_MAX_SECONDS", 300.0)
DS2API_COOLDOWN_AFTER_FAILURES = env_int("DS2API_COOLDOWN_AFTER_FAILURES", 3)
# Dashboard sign-in throttling: after this many failed sign-ins for one (client address, username) pair,
# that pair is refused for this many seconds (counters in Redis, shared by every process).
DS2API_LOGIN_MAX_FAILURES = env_int("DS2API_LOGIN_MAX_FAILURES", 5)
DS2API_LOGIN_LOCK_SECONDS = env_int("DS2API_LOGIN_LOCK_SECONDS", 900)

# --- background work (Celery beat + worker) and observability ---------------------------------------
# Seconds between health probes of every enabled credential (one cheap request each).
DS2API_PROBE_INTERVAL_SECONDS = env_float("DS2API_PROBE_INTERVAL_SECONDS", 60.0)
# Seconds between usage rollup runs (each catches up on everything written since the last one).
DS2API_ROLLUP_INTERVAL_SECONDS = env_float("DS2API_ROLLUP_INTERVAL_SECONDS", 60.0)
# Raw usage rows (the request log) are deleted after this many days; hour and day rollups are kept.
DS2API_USAGE_RETENTION_DAYS = env_int("DS2API_USAGE_RETENTION_DAYS", 90)
# Minute rollups (short-range charts) are deleted after this many days.
DS2API_MINUTE_ROLLUP_RETENTION_DAYS = env_int("DS2API_MINUTE_ROLLUP_RETENTION_DAYS", 7)
# Stored request/response bodies (when a route keeps them) are deleted after this many days.
DS2API_BODY_RETENTION_DAYS = env_int("DS2API_BODY_RETENTION_DAYS", 7)
# Each stored body (request, response) is cut at this many bytes after redaction.
DS2API_BODY_MAX_BYTES = env_int("DS2API_BODY_MAX_BYTES", 64 * 1024)
# Responses API answers stored with `store: true` stay readable for this long (Redis keys expire).
DS2API_RESPONSE_TTL_SECONDS = env_int("DS2API_RESPONSE_TTL_SECONDS", 30 * 24 * 3600)
# GET /metrics: a bearer token, and/or client addresses/networks allowed without one.
# With neither set, only loopback clients may scrape.
DS2API_METRICS_TOKEN = env_secret("DS2API_METRICS_TOKEN")
DS2API_METRICS_ALLOW = env_list("DS2API_METRICS_ALLOW", "")
# One JSON line per proxied request on the `ds2api.requests` logger (stdout).
DS2API_REQUEST_LOG = env_bool("DS2API_REQUEST_LOG", True)

CELERY_BEAT_SCHEDULE = {
    "probe-credentials": {
        "task": "ds2api.probe_credentials",
        "schedule": DS2API_PROBE_INTERVAL_SECONDS,
        # A probe that could not start within its interval is stale: the next one is already due.
        "options": {"expires": DS2API_PROBE_INTERVAL_SECONDS},
    },
    "roll-up-usage": {
        "task": "ds2api.roll_up_usage",
        "schedule": DS2API_ROLLUP_INTERVAL_SECONDS,
        "options": {"expires": DS2API_ROLLUP_INTERVAL_SECONDS},
    },
    "prune-usage": {"task": "ds2api.prune_usage", "schedule": 3600.0, "options": {"expires": 3600.0}},
    # Budget periods are checked hourly rather than at midnight on the 1st, so a missed run catches up.
    "reset-budget-periods": {"task": "ds2api.reset_budget_periods", "schedule": 3600.0},
    "warn-budgets": {"task": "ds2api.warn_budgets", "schedule": 300.0, "options": {"expires": 300.0}},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "ds2api_site.jsonlog.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json" if env_bool("LOG_JSON") else "plain"},
        # Request lines are always JSON, on stdout, so a log shipper can parse them without configuration.
        # Written in batches (at most 0.2 s late): a write per request line was a system call per request.
        "requests": {"class": "ds2api_site.jsonlog.BatchingStreamHandler", "formatter": "json",
                     "stream": "ext://sys.stdout"},
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "ds2api.requests": {"handlers": ["requests"], "level": "INFO", "propagate": False},
    },
}
