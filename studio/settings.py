"""Studio's settings: every value comes from the environment, read once, with embedded defaults.

See the configuration table in README.md. Without any variable set, Studio runs embedded: SQLite, the
filesystem stores and a broker that needs no server, all under STUDIO_HOME.
"""

import os
import re
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from serving import proxies
from studio import broker
from studio.cache import caches_for
from studio.env import env_bool, env_choice, env_int, env_list, env_secret, env_str, env_url, env_urls
from studio.home import keep_private, private_home

BASE_DIR = Path(__file__).resolve().parent.parent

# Before anything is created: STUDIO_HOME and all in it are this user's only (studio/home.py).
keep_private()
STUDIO_HOME = private_home(Path(env_str("STUDIO_HOME", "./.studio")).expanduser().resolve())


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
    "studio.api.middleware.UnstorableURLMiddleware",
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

# Redis, with JSON values (never pickles: studio/cache.py); else a file cache under STUDIO_HOME, shared
# by every process on this host, unlike the in-memory cache, so failed-login throttling holds.
CACHES = caches_for(env_str("STUDIO_CACHE_URL", ""), STUDIO_HOME)

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
# Every request body that is not a file upload (JSON, YAML, form fields) is refused with a 413 past this.
STUDIO_MAX_BODY_BYTES = env_int("STUDIO_MAX_BODY_BYTES", 2_621_440, minimum=1024)
# The most input files one batch job scores (one invocation of a batch endpoint).
STUDIO_BATCH_MAX_FILES = env_int("STUDIO_BATCH_MAX_FILES", 100_000, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = STUDIO_MAX_BODY_BYTES

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

# The targets deployments may use. docker-compose allows `docker` only: a local replica, or the build of
# its environment, would run other people's code in the worker, beside the database and the broker.
STUDIO_TARGETS = env_list(
    "STUDIO_TARGETS", ["local", "docker", "kubernetes"], choices=("local", "docker", "kubernetes")
)

# The docker target (docs/docker-target.md). The engine itself is found as the docker CLI finds it
# (DOCKER_HOST, else the local socket; docker-compose: the engine proxy, studio/engine_proxy.py).
STUDIO_DOCKER_BASE_IMAGE = env_str("STUDIO_DOCKER_BASE_IMAGE", "python:3.11-slim")
# A network the gateway shares with the containers, and their only one (docker-compose); empty: publish
# ports instead. Names are resolved by Docker's DNS, which the default bridge does not have.
STUDIO_DOCKER_NETWORK = env_str("STUDIO_DOCKER_NETWORK", "")
if STUDIO_DOCKER_NETWORK in ("host", "none", "bridge", "default") or STUDIO_DOCKER_NETWORK.startswith(
    "container:"
):
    raise ImproperlyConfigured(
        f"STUDIO_DOCKER_NETWORK={STUDIO_DOCKER_NETWORK!r} is not a network replicas can share with the "
        "gateway alone: name a user-defined network the gateway is attached to (docker network create), "
        "or leave it empty to publish ports on STUDIO_DOCKER_PUBLISH_ADDRESS."
    )
# The host address container ports are published on, and the one replicas are reached at.
STUDIO_DOCKER_PUBLISH_ADDRESS = env_str("STUDIO_DOCKER_PUBLISH_ADDRESS", "127.0.0.1")
# Where `studio model profile` runs the model: `docker` as the docker target runs it (its image, its
# confinement, the instance type's limits), `local` as local processes under taskset/cgroup limits, `auto`
# on the Docker engine when one answers and has STUDIO_DOCKER_BASE_IMAGE, else locally.
STUDIO_PROFILE_TARGET = env_str("STUDIO_PROFILE_TARGET", "auto")
if STUDIO_PROFILE_TARGET not in ("auto", "docker", "local"):
    raise ImproperlyConfigured(
        f"STUDIO_PROFILE_TARGET={STUDIO_PROFILE_TARGET!r} is not one of auto, docker, local."
    )

# The kubernetes target (docs/kubernetes.md): the namespace deployments' objects go to, the registry their
# images are pushed to (and pulled from by the cluster), the Secrets that let the cluster pull them, and the
# Service type (NodePort or LoadBalancer when the gateway runs outside the cluster).
STUDIO_K8S_NAMESPACE = env_str("STUDIO_K8S_NAMESPACE", "studio-models")
STUDIO_K8S_IMAGE_REGISTRY = env_str("STUDIO_K8S_IMAGE_REGISTRY", "").rstrip("/")
STUDIO_K8S_IMAGE_PULL_SECRETS = env_list("STUDIO_K8S_IMAGE_PULL_SECRETS", [])
STUDIO_K8S_SERVICE_TYPE = env_choice(
    "STUDIO_K8S_SERVICE_TYPE", ("ClusterIP", "NodePort", "LoadBalancer"), "ClusterIP"
)
# How gateways reach a kubernetes deployment: `service` (its Service's cluster name: gateways in the
# cluster), `pods` (each ready pod's address: gateways in the cluster network, balancing themselves), or
# http://HOST (gateways outside the cluster: HOST and the Service's node port; STUDIO_K8S_SERVICE_TYPE
# NodePort).
STUDIO_K8S_GATEWAY_ADDRESS = env_str("STUDIO_K8S_GATEWAY_ADDRESS", "service")
if STUDIO_K8S_GATEWAY_ADDRESS not in ("service", "pods") and not re.fullmatch(
    r"https?://[A-Za-z0-9.\-\[\]:]+", STUDIO_K8S_GATEWAY_ADDRESS
):
    raise ImproperlyConfigured(
        f"STUDIO_K8S_GATEWAY_ADDRESS={STUDIO_K8S_GATEWAY_ADDRESS!r}: use service, pods, or http://HOST (a "
        "node's address, with STUDIO_K8S_SERVICE_TYPE=NodePort)."
    )
# Names this installation on the engines and clusters it shares with others; made once under STUDIO_HOME
# when unset. Processes that share no STUDIO_HOME (Studio on Kubernetes) must all be given the same one.
STUDIO_INSTALLATION_ID = env_str("STUDIO_INSTALLATION_ID", "")
if STUDIO_INSTALLATION_ID and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", STUDIO_INSTALLATION_ID):
    raise ImproperlyConfigured(
        f"STUDIO_INSTALLATION_ID={STUDIO_INSTALLATION_ID!r}: use 1 to 32 lowercase letters, digits and "
        "dashes, starting and ending with a letter or digit."
    )
# Wheels fetched for images, kept per Python version and platform and shared by every build.
STUDIO_WHEEL_CACHE = Path(env_str("STUDIO_WHEEL_CACHE", str(STUDIO_HOME / "cache" / "wheels")))
# Package indexes an Admin allows requirements to name with --index-url/--extra-index-url (comma-separated
# URLs); empty: requirements name no index, and builds use the one pip and uv are configured with.
STUDIO_ALLOWED_PACKAGE_INDEXES = env_urls("STUDIO_ALLOWED_PACKAGE_INDEXES", schemes=("https", "http", "file"))

# Replicas on Studio's own interpreter are forked from a template that has the serving stack imported
# (serving.warm), so they answer in a fraction of a cold start.
STUDIO_WARM_START = env_bool("STUDIO_WARM_START", True)

# Local replicas run other people's code in a sandbox (docs/security.md): `required` refuses to start one
# where the host cannot sandbox, `best-effort` then runs it as Studio's own user (and says so), `off`
# never sandboxes. Unset: `required` where the host can sandbox, else `best-effort`.
STUDIO_LOCAL_ISOLATION = env_choice("STUDIO_LOCAL_ISOLATION", ("required", "best-effort", "off"))
# Sandboxed replicas of deployment d run as uid STUDIO_REPLICA_UID_BASE + d (a uid no other process
# has) in group STUDIO_REPLICA_UID_BASE; environment builds as the base itself. The default is the start
# of the range systemd leaves unused (0x70000000); Studio refuses to sandbox if an account or subordinate
# ids lie in the 2**24 uids from it.
STUDIO_REPLICA_UID_BASE = env_int("STUDIO_REPLICA_UID_BASE", 0x70000000, minimum=65536)

# The reconciler (docs/reconciler.md). A pass holds its deployment's lease and renews it as it works; a
# killed worker's lease lapses after this long, and the next supervision sweep hands the work to another.
STUDIO_RECONCILE_LEASE_S = env_int("STUDIO_RECONCILE_LEASE_S", 15, minimum=2)
# How often supervision looks at every replica (and re-queues work nobody holds).
STUDIO_SUPERVISE_INTERVAL_S = env_int("STUDIO_SUPERVISE_INTERVAL_S", 5, minimum=1)
# How long the load must want fewer replicas before the autoscaler removes some (endpoints.autoscale).
STUDIO_AUTOSCALE_COOLDOWN_S = env_int("STUDIO_AUTOSCALE_COOLDOWN_S", 300, minimum=0)
# The longest a replica leaving the route table waits for every live gateway to acknowledge a table
# without it; past this it is stopped anyway, and the gateways that did not answer are logged.
STUDIO_DRAIN_TIMEOUT_S = env_int("STUDIO_DRAIN_TIMEOUT_S", 30, minimum=1)

# Failed sign-in throttling (studio.throttling). The API refuses a token, and a client address, after
# this many failed tokens in 60 s; a valid token is always accepted.
STUDIO_AUTH_FAILURES_PER_MINUTE = env_int("STUDIO_AUTH_FAILURES_PER_MINUTE", 20, minimum=1)
# Password sign-in (pages and console): an account, and a client address, is refused after this many
# failed passwords in a window that opens at the first failure, until the window closes.
STUDIO_LOGIN_FAILURES_PER_ACCOUNT = env_int("STUDIO_LOGIN_FAILURES_PER_ACCOUNT", 5, minimum=1)
STUDIO_LOGIN_FAILURES_PER_CLIENT = env_int("STUDIO_LOGIN_FAILURES_PER_CLIENT", 20, minimum=1)
STUDIO_LOGIN_FAILURE_WINDOW_S = env_int("STUDIO_LOGIN_FAILURE_WINDOW_S", 900, minimum=1)
# Reverse proxies whose X-Forwarded-For names the client (serving.proxies); none by default.
try:
    STUDIO_TRUSTED_PROXIES = proxies.parse_trusted_proxies(env_str("STUDIO_TRUSTED_PROXIES"))
except proxies.ConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    # kombu's filesystem transport, publishing each message whole (studio.broker), under STUDIO_HOME.
    CELERY_BROKER_TRANSPORT = broker.TRANSPORT
    CELERY_BROKER_TRANSPORT_OPTIONS = broker.transport_options(STUDIO_HOME / "broker")
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
    "DEFAULT_PARSER_CLASSES": [
        "studio.api.parsers.JSONParser",
        "studio.api.parsers.FormParser",
        "studio.api.parsers.MultiPartParser",
    ],
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
    # Several resources have a `type` with their own choices: each set gets a name of its own.
    "ENUM_NAME_OVERRIDES": {
        "ModelTypeEnum": "registry.choices.ModelTypeChoices",
        "DataTypeEnum": "registry.choices.DataTypeChoices",
        "MiniBatchStateEnum": "endpoints.choices.MiniBatchStateChoices",
        "BatchJobStatusEnum": "endpoints.choices.BatchJobStateChoices",
    },
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
    # Deployments with scale_settings.type target_utilization (endpoints.autoscale).
    "autoscale": {"task": "endpoints.tasks.autoscale", "schedule": 1.0},
}

# Webhooks (studio/webhooks.py, studio/webhook_hosts.py): hosts and ports deliveries may reach (`*`, the
# default: any public address on ports 80, 443, 8080, 8443; private, loopback and link-local addresses
# only through an address or network entry, e.g. `10.0.0.0/8:9000`), attempts and backoff, and after how
# long a subscription whose deliveries all fail is disabled.
STUDIO_WEBHOOK_ALLOWED_HOSTS = env_list("STUDIO_WEBHOOK_ALLOWED_HOSTS", ["*"])
try:
    from studio.webhook_hosts import parse_entry

    for _entry in STUDIO_WEBHOOK_ALLOWED_HOSTS:
        parse_entry(_entry)
except ValueError as exc:
    raise ImproperlyConfigured(
        f"STUDIO_WEBHOOK_ALLOWED_HOSTS={','.join(STUDIO_WEBHOOK_ALLOWED_HOSTS)}: {exc}."
    ) from None
STUDIO_WEBHOOK_MAX_ATTEMPTS = env_int("STUDIO_WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
STUDIO_WEBHOOK_RETRY_BASE_MS = env_int("STUDIO_WEBHOOK_RETRY_BASE_MS", 10000, minimum=0)
STUDIO_WEBHOOK_TIMEOUT_S = env_int("STUDIO_WEBHOOK_TIMEOUT_S", 10, minimum=1)
if STUDIO_WEBHOOK_TIMEOUT_S > 60:
    raise ImproperlyConfigured(
        f"STUDIO_WEBHOOK_TIMEOUT_S={STUDIO_WEBHOOK_TIMEOUT_S} is too large: it must be at most 60 (seconds)."
    )
STUDIO_WEBHOOK_DISABLE_AFTER_S = env_int("STUDIO_WEBHOOK_DISABLE_AFTER_S", 86400, minimum=60)
# Lifecycle events (the activity feed and what webhooks carry) are deleted after this many days.
STUDIO_EVENT_RETENTION_DAYS = env_int("STUDIO_EVENT_RETENTION_DAYS", 90, minimum=1)
CELERY_BEAT_SCHEDULE["sweep-webhook-deliveries"] = {
    "task": "studio.tasks.sweep_webhook_deliveries",
    "schedule": 60.0,
}
CELERY_BEAT_SCHEDULE["event-retention"] = {"task": "studio.tasks.enforce_event_retention", "schedule": 3600.0}

# Email (alert notifications): SMTP when EMAIL_HOST is set, else printed on the console (embedded mode).
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are both true: set one of them to false.")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "studio@localhost")
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
# Alert rules are evaluated this often (monitoring.alerts); their windows are whole minutes.
CELERY_BEAT_SCHEDULE["evaluate-alerts"] = {"task": "monitoring.tasks.evaluate_alerts", "schedule": 60.0}
# Replica CPU and memory (monitoring.resources): a few samples a minute make each minute's figures.
CELERY_BEAT_SCHEDULE["sample-resources"] = {"task": "monitoring.tasks.sample_resources", "schedule": 15.0}
# Data drift monitors (monitoring.monitors): a run reads at most this many collected rows of its window
# (and a baseline CSV may hold as many); due monitors are looked for every minute.
STUDIO_DRIFT_MAX_ROWS = env_int("STUDIO_DRIFT_MAX_ROWS", 200_000, minimum=100)
CELERY_BEAT_SCHEDULE["run-drift-monitors"] = {"task": "monitoring.tasks.run_due_monitors", "schedule": 60.0}
# Alert emails go to the team's users (any address with a Studio role); an Admin allows more, by domain,
# e.g. "example.com,oncall.example.net" (monitoring.alerts).
STUDIO_ALERT_EMAIL_DOMAINS = env_list("STUDIO_ALERT_EMAIL_DOMAINS", [])
# Progressive rollouts (endpoints/rollouts.py): a step is judged once the archive holds its whole window;
# an idle gateway never proves that, so after this many seconds past the window the step is judged on
# what the archive holds (its figures say `complete: false`). Running rollouts nobody drives are resumed
# by a sweep.
STUDIO_ROLLOUT_TELEMETRY_WAIT_S = env_int("STUDIO_ROLLOUT_TELEMETRY_WAIT_S", 120, minimum=1)
# A rollout's driver holds its lease this long between renewals; a dead driver's rollout is resumed after it.
STUDIO_ROLLOUT_LEASE_S = env_int("STUDIO_ROLLOUT_LEASE_S", 30, minimum=1)
CELERY_BEAT_SCHEDULE["sweep-rollouts"] = {"task": "endpoints.tasks.sweep_rollouts", "schedule": 15.0}
# Batch jobs (endpoints/batch_execution.py): a runner renews its claim on a mini-batch this often at
# least; a claim not renewed for this long (its runner died) is queued again by the tick, which runs every
# STUDIO_BATCH_TICK_S seconds.
STUDIO_BATCH_LEASE_S = env_int("STUDIO_BATCH_LEASE_S", 30, minimum=1)
STUDIO_BATCH_TICK_S = env_int("STUDIO_BATCH_TICK_S", 2, minimum=1)
CELERY_BEAT_SCHEDULE["batch-tick"] = {
    "task": "endpoints.tasks.batch_tick",
    "schedule": float(STUDIO_BATCH_TICK_S),
}
# A batch runner holds a pool process for as long as its job has work, so runners have a queue of their own,
# served by batch workers (`studio up` starts one; docker-compose's batch-worker): a large job never
# starves deployments, the ticks and telemetry of the worker that serves the default queue.
BATCH_QUEUE = "batch"
CELERY_TASK_ROUTES = {"endpoints.tasks.run_batch_slot": {"queue": BATCH_QUEUE}}
STUDIO_BATCH_WORKER_CONCURRENCY = env_int("STUDIO_BATCH_WORKER_CONCURRENCY", 2, minimum=1)
