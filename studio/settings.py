"""Studio's settings: every value comes from the environment, read once, with embedded defaults.

See the configuration table in README.md. Without any variable set, Studio runs embedded: SQLite, the
filesystem stores and a broker that needs no server, all under STUDIO_HOME.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from studio.env import env_bool, env_int, env_list, env_secret, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent

STUDIO_HOME = Path(env_str("STUDIO_HOME", "./.studio")).expanduser().resolve()
try:
    STUDIO_HOME.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise ImproperlyConfigured(
        f"STUDIO_HOME={str(STUDIO_HOME)!r} cannot be created: {exc.strerror}."
    ) from None


def _generated_secret_key() -> str:
    """A key made once and kept under STUDIO_HOME, so sessions survive a restart."""
    path = STUDIO_HOME / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(64))
    return path.read_text().strip()


SECRET_KEY = env_secret("SECRET_KEY") or _generated_secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Behind TLS (production), cookies are secure and plain HTTP is redirected.
STUDIO_HTTPS = env_bool("STUDIO_HTTPS", False)
if STUDIO_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^internal/"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "studio.apps.StudioConfig",
    "registry.apps.RegistryConfig",
    "endpoints.apps.EndpointsConfig",
    "monitoring.apps.MonitoringConfig",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "django_htmx",
    "drf_spectacular",
    "drf_spectacular_sidecar",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "studio.urls"
WSGI_APPLICATION = "studio.wsgi.application"
ASGI_APPLICATION = "studio.asgi.application"

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
                "studio.context_processors.studio",
            ],
        },
    },
]

DATABASE_URL = env_url(
    "DATABASE_URL",
    f"sqlite:///{STUDIO_HOME / 'studio.db'}",
    schemes=("sqlite", "postgres", "postgresql", "pgsql"),
)
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, beat) share the embedded database: WAL lets readers run beside a
    # writer, and IMMEDIATE transactions queue writers instead of failing them with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # One test database per test process, so two runs in one checkout do not share a file.
    DATABASES["default"]["TEST"] = {"NAME": str(STUDIO_HOME / f"test-{os.getpid()}.db")}
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHE_URL = env_str("STUDIO_CACHE_URL", "")
if CACHE_URL.startswith("redis://"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
elif CACHE_URL:
    raise ImproperlyConfigured(f"STUDIO_CACHE_URL={CACHE_URL!r} is not supported: use redis://host:port/db.")
else:
    # Shared by every process on this host, unlike the in-memory cache, so failed-login throttling holds.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(STUDIO_HOME / "cache"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "studio:login"
LOGIN_REDIRECT_URL = "studio:dashboard"
LOGOUT_REDIRECT_URL = "studio:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
# An image collects its static files at build time, outside the STUDIO_HOME volume that would hide them.
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(STUDIO_HOME / "static")))
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Served from the source folders too, so the embedded mode needs no collectstatic step.
WHITENOISE_USE_FINDERS = True

# Uploads larger than this go to temporary files, never held whole in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = str(STUDIO_HOME / "tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
STUDIO_MAX_UPLOAD_BYTES = env_int("STUDIO_MAX_UPLOAD_BYTES", 4 * 1024**3, minimum=1)
STUDIO_MAX_ARCHIVE_FILES = env_int("STUDIO_MAX_ARCHIVE_FILES", 10_000, minimum=1)
# A folder chosen in the browser arrives as one upload per file.
DATA_UPLOAD_MAX_NUMBER_FILES = STUDIO_MAX_ARCHIVE_FILES

STUDIO_ARTIFACT_STORE = env_url(
    "STUDIO_ARTIFACT_STORE", f"file://{STUDIO_HOME / 'artifacts'}", schemes=("file", "s3")
)
STUDIO_TELEMETRY_STORE = env_url(
    "STUDIO_TELEMETRY_STORE", f"file://{STUDIO_HOME / 'telemetry'}", schemes=("file", "s3")
)
STUDIO_GATEWAY_URL = env_url("STUDIO_GATEWAY_URL", "http://127.0.0.1:8080", schemes=("http", "https"))
# Where the gateway spools telemetry on this host (the gateway's own default); shipped by monitoring.
STUDIO_GATEWAY_SPOOL_DIR = Path(env_str("STUDIO_GATEWAY_SPOOL_DIR", str(STUDIO_HOME / "spool" / "gateway")))
STUDIO_METRICS_RETENTION_DAYS = env_int("STUDIO_METRICS_RETENTION_DAYS", 90, minimum=1)
STUDIO_TELEMETRY_RETENTION_DAYS = env_int("STUDIO_TELEMETRY_RETENTION_DAYS", 30, minimum=1)

# The docker target (docs/docker-target.md). The engine itself is found as the docker CLI finds it
# (DOCKER_HOST, else the local socket).
STUDIO_DOCKER_BASE_IMAGE = env_str("STUDIO_DOCKER_BASE_IMAGE", "python:3.11-slim")
# A network the gateway shares with the containers (docker-compose); empty: publish ports instead.
STUDIO_DOCKER_NETWORK = env_str("STUDIO_DOCKER_NETWORK", "")
# The host address container ports are published on, and the one replicas are reached at.
STUDIO_DOCKER_PUBLISH_ADDRESS = env_str("STUDIO_DOCKER_PUBLISH_ADDRESS", "127.0.0.1")
# Wheels fetched for images, kept per Python version and platform and shared by every build.
STUDIO_WHEEL_CACHE = Path(env_str("STUDIO_WHEEL_CACHE", str(STUDIO_HOME / "cache" / "wheels")))

# Replicas on Studio's own interpreter are forked from a template that has the serving stack imported
# (serving.warm), so they answer in a fraction of a cold start.
STUDIO_WARM_START = env_bool("STUDIO_WARM_START", True)

# The reconciler (docs/reconciler.md). A pass holds its deployment's lease and renews it as it works; a
# killed worker's lease lapses after this long, and the next supervision sweep hands the work to another.
STUDIO_RECONCILE_LEASE_S = env_int("STUDIO_RECONCILE_LEASE_S", 15, minimum=2)
# How often supervision looks at every replica (and re-queues work nobody holds).
STUDIO_SUPERVISE_INTERVAL_S = env_int("STUDIO_SUPERVISE_INTERVAL_S", 5, minimum=1)
# The longest a replica leaving the route table waits for every live gateway to acknowledge a table
# without it; past this it is stopped anyway, and the gateways that did not answer are logged.
STUDIO_DRAIN_TIMEOUT_S = env_int("STUDIO_DRAIN_TIMEOUT_S", 30, minimum=1)

# Tokens and failed sign-in throttling for the API.
STUDIO_AUTH_FAILURES_PER_MINUTE = env_int("STUDIO_AUTH_FAILURES_PER_MINUTE", 20, minimum=1)

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker = STUDIO_HOME / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Without control_folder, kombu keeps its fanout tables in ./control of whatever the current
        # directory is, so a worker and `celery inspect` started from different folders never meet.
        "control_folder": str(_broker / "control"),
        "data_folder_in": str(_broker / "queue"),
        "data_folder_out": str(_broker / "queue"),
        "processed_folder": str(_broker / "processed"),
        "store_processed": False,
        # The default one-second poll would add up to a second to every job's start.
        "polling_interval": 0.1,
    }
elif not CELERY_BROKER_URL.startswith(("redis://", "rediss://", "amqp://")):
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL={CELERY_BROKER_URL!r} is not supported: use filesystem://, redis:// or amqp://."
    )
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE_FILENAME = str(STUDIO_HOME / "celerybeat-schedule")
CELERY_TIMEZONE = "UTC"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "studio.authentication.AccessTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["studio.roles.RolePermission"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "studio.api.pagination.StudioPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "studio.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Studio API",
    "DESCRIPTION": "Register, version, deploy and watch models.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}

FILE_UPLOAD_HANDLERS = [
    "registry.uploads.BoundedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

CELERY_BEAT_SCHEDULE = {
    "supervise": {"task": "endpoints.tasks.supervise", "schedule": float(STUDIO_SUPERVISE_INTERVAL_S)},
    "ship-telemetry": {"task": "monitoring.tasks.ship_telemetry", "schedule": 10.0},
    "rollup-telemetry": {"task": "monitoring.tasks.rollup_telemetry", "schedule": 15.0},
    "discover-telemetry": {"task": "monitoring.tasks.discover_telemetry", "schedule": 600.0},
    "telemetry-retention": {"task": "monitoring.tasks.enforce_telemetry_retention", "schedule": 3600.0},
}
