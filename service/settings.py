"""The one settings object, read from the environment; invalid values fail at start, named."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

T = TypeVar("T")

# Connections a worker keeps for what the queues do not count: /healthz and /readyz probes, the
# admin API, idle keep-alive connections (closed after HTTP_IDLE_TIMEOUT) and the requests
# that are being refused (a 503 takes a connection for a millisecond).
CONNECTION_HEADROOM = 1024
# Connections of a worker's pool that neither invests, pages nor list loads take: the
# housekeeping chore (forgetting old keys) and the admin API.
CHORE_CONNECTIONS = 2


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names the setting."""


# The password of a URL (scheme://user:password@host; up to the word's last @, so a password
# with an unencoded / or @ is hidden whole, at worst with some of the host) and of a libpq
# keyword string (password=...).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:@/\s'\"]*:)[^\s'\"]*@")
_KEYWORD_PASSWORD = re.compile(r"(?i)\b(password\s*=\s*)('[^']*'|\S+)")
REDACTED = "***"


def redact(text: str) -> str:
    """`text` with every database password in it replaced by ***: the one place that decides what
    a log line, an error message or a repr may show of a URL."""
    if "://" not in text and "assword" not in text:  # the common case: nothing to look for
        return text
    text = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", text)
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{REDACTED}", text)


# Settings a serving process never gets: the owner's credentials are for the children that
# migrate (service/ops/start.py), not for the processes that answer requests.
OWNER_ONLY = frozenset({"MIGRATION_DATABASE_URL"})


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    # Optional: a standby (Patroni's read route) for the product list only; a standby whose last
    # replayed commit is older than read_max_lag_seconds is not used (the primary answers).
    read_database_url: str | None = None
    read_max_lag_seconds: float = 1.0
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = os.cpu_count() or 1
    db_pool_size: int = 50
    timezone: str = "Asia/Seoul"
    list_cache_seconds: float = 1.0
    # Per worker. A list of 1,000 products serializes to about 250 kB: 32 MiB holds some 130
    # such lists, far more distinct windows than clients ask for within one second, while
    # bounding what any number of distinct windows can pin (1,024 of them once took 255 MiB).
    list_cache_max_bytes: int = 32 * 1024 * 1024
    max_body_bytes: int = 16 * 1024
    # How long an idle keep-alive connection stays open. It must outlast every proxy and client
    # pool in front (AWS ALB, nginx upstream and haproxy keep 60 s; nginx clients 75 s): the side
    # that closes an idle connection first races the other side's next request on it. granian
    # 2.8 has one timer for the idle wait and the request head after it (hyper's
    # header_read_timeout, counted from the last response), so this also bounds a head that never
    # completes (docs/deploy.md, "Keep-alive and the timeouts in front").
    http_idle_timeout: float = 75.0
    db_acquire_timeout: float = 2.0
    db_statement_timeout: float = 5.0
    db_prepared_statements: bool = True
    server_runtime_mode: str = "auto"
    server_runtime_threads: int = 1
    db_runtime_threads: int = 0  # 0: Tokio's default, a thread per core
    invest_batch_max: int = 500
    invest_queue_max: int = 10_000
    invest_calls_in_flight: int = 1
    # Calls per worker that may hold a connection while waiting for a product row held elsewhere.
    invest_wait_calls: int = 2
    # Cancellations per worker that may hold a connection at once (each its own statement; one
    # waiting for a product row held elsewhere waits at most DB_ACQUIRE_TIMEOUT for it).
    cancel_calls_in_flight: int = 2
    # Under load a worker starts an invest call no sooner than this after the previous one's
    # start while fewer than INVEST_CALL_SPACING_FULL invests wait (service/coalesce.py), only
    # while they arrive fast enough for the wait to gather INVEST_CALL_SPACING_ARRIVALS of them
    # (400 a second per worker at 10 ms and 4); 0: at once, always.
    invest_call_spacing_seconds: float = 0.010
    invest_call_spacing_full: int = 16
    invest_call_spacing_arrivals: int = 4
    read_batch_max: int = 200
    read_calls_in_flight: int = 2
    # Under load a worker starts a page call no sooner than this after the previous one's start
    # while fewer than READ_CALL_SPACING_FULL pages wait (service/coalesce.py); 0: at once, always.
    read_call_spacing_seconds: float = 0.004
    read_call_spacing_full: int = 32
    # Concurrent list loads (cache misses) per worker; 0: what the pool share leaves
    # (list_loads()). Distinct windows then wait for a turn, at most DB_ACQUIRE_TIMEOUT.
    list_loads_max: int = 0
    # Connections granian holds open per worker (its `backpressure`); 0: derived from the
    # queues (connections_per_worker()). Beyond it connections wait in the kernel, unanswered.
    server_backpressure: int = 0
    idempotency_retention_hours: int = 24
    idempotency_cleanup_seconds: float = 600.0
    log_level: str = "INFO"
    metrics_enabled: bool = True
    access_log: bool = False
    admin_token: str | None = field(default=None, repr=False)
    migration_database_url: str | None = None
    allow_unsafe_durability: bool = False
    # Serve as DATABASE_URL's own role even when it is a superuser or the tables' owner (else
    # requests run as investment_service: db_session_role).
    allow_privileged_service: bool = False
    # The role every request session takes (`-c role=...`): decided at start by the preflight
    # (service/ops/roles.py session_role), handed to the workers; None: DATABASE_URL's own role.
    db_session_role: str | None = None
    metrics_token: str | None = field(default=None, repr=False)
    # Where the workers' metric files go (prometheus-client reads it too); None: `run` makes one.
    prometheus_multiproc_dir: str | None = None
    # The embedded PostgreSQL of `just run` (no DATABASE_URL); None: .data/ of the checkout.
    embedded_pg_port: int = 55432
    embedded_pg_data: str | None = None
    embedded_pg_archive: str | None = None
    # Events (docs/reliability.md "Events"): NATS_URL (comma-separated servers) turns the outbox
    # relay on; its session needs a server connection of its own (a session advisory lock), so
    # behind PgBouncer's transaction pooling RELAY_DATABASE_URL names the server directly.
    nats_url: str | None = None
    relay_database_url: str | None = None
    relay_batch: int = 500  # events per publish batch (its acks awaited together)
    # A round at most this often while the relay keeps up (at once while a backlog is left): under
    # load a round publishes what this long wrote, each paying its statement and ack once. 100 ms
    # against 25: the relay's chain about a third less CPU per event, events on / off about 0.89
    # against 0.85, publish latency p50 100 ms against 25 (docs/performance.md, tenth set).
    relay_poll_seconds: float = 0.1
    nats_publish_timeout: float = 5.0  # a round's acks, else NATS counts as down (backoff)
    nats_stream_replicas: int = 1  # INVESTMENTS' settings, applied when the relay creates it
    nats_stream_max_age_hours: int = 7 * 24
    nats_duplicate_window_seconds: float = 120.0
    relay_abandon_hours: int = 24  # no relay that long: the outbox is switched off and emptied

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def owner_url(self) -> str | None:
        """Where migrations run: the owner's URL, else DATABASE_URL (one role for both)."""
        return self.migration_database_url or self.database_url

    @property
    def relay_url(self) -> str | None:
        """Where the outbox relay's session goes: RELAY_DATABASE_URL, else DATABASE_URL."""
        return self.relay_database_url or self.database_url

    def pool_share(self) -> int:
        """Connections one worker may open: the total cap split evenly, never above it."""
        return max(2, self.db_pool_size // self.workers)

    def __repr__(self) -> str:
        """Tokens left out, URLs without their passwords."""
        shown = (f"{f.name}={redact(repr(getattr(self, f.name)))}" for f in fields(self) if f.repr)
        return f"Settings({', '.join(shown)})"

    def list_loads(self) -> int:
        """Concurrent list loads per worker: LIST_LOADS_MAX, else the pool share less what
        invests (shared and waiting calls), pages and the chores may hold at once (at least
        one), so that a flood of distinct windows never takes the connections invests and pages
        need."""
        if self.list_loads_max:
            return self.list_loads_max
        return max(1, self.pool_share() - self.reserved_connections() - CHORE_CONNECTIONS)

    def reserved_connections(self) -> int:
        """Connections of a worker's pool that invests (the shared call and the calls waiting
        for held products), cancellations and my-investments pages may hold at once."""
        return (
            self.invest_calls_in_flight + self.invest_wait_calls + self.cancel_calls_in_flight
            + self.read_calls_in_flight
        )  # fmt: skip

    def connections_per_worker(self) -> int:
        """granian's backpressure: SERVER_BACKPRESSURE, else every request the worker's queues
        admit (waiting and in its calls: invests, held products' and pages) plus
        CONNECTION_HEADROOM. A connection past it is not accepted and waits in the kernel with
        no deadline; below it every request reaches the queues, which answer 503 at once when
        full and at DB_ACQUIRE_TIMEOUT otherwise."""
        if self.server_backpressure:
            return self.server_backpressure
        calls = self.invest_calls_in_flight + self.invest_wait_calls
        invests = self.invest_queue_max + calls * self.invest_batch_max
        pages = self.invest_queue_max + self.read_calls_in_flight * self.read_batch_max
        return invests + pages + CONNECTION_HEADROOM

    def as_env(self, *, owner: bool = False) -> dict[str, str]:
        """The settings written back as environment variables, for child and worker processes;
        the owner's URL only with `owner` (a child that migrates)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (owner or f.name.upper() not in OWNER_ONLY):
                env[f.name.upper()] = str(value)
        return env


def child_environment(settings: Settings, *, owner: bool = False) -> dict[str, str]:
    """This process's environment with `settings` over it, for a child process: without the
    owner's URL unless `owner`, even when it came from this process's own environment."""
    env = {key: value for key, value in os.environ.items() if key not in OWNER_ONLY}
    return env | settings.as_env(owner=owner)


def _integer(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _seconds(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not low <= value <= high or value != value:
        raise SettingsError(f"{name} must be between {low} and {high} seconds, got {raw!r}")
    return value


def _zone(name: str, raw: str) -> str:
    try:
        ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"{name} must be an IANA time zone such as Asia/Seoul, got {raw!r}"
        ) from None
    return raw.strip()


def _database_url(name: str, raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    if not raw.startswith(("postgres://", "postgresql://")):
        raise SettingsError(f"{name} must be a postgresql:// URL, got {redact(repr(raw))}")
    return raw


def _log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise SettingsError(f"{name} must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _token(name: str, raw: str) -> str | None:
    """A bearer token: unset or empty disables what it guards (the admin API) or leaves it
    open (/metrics); a short one is refused."""
    token = raw.strip()
    if not token:
        return None
    if len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token:
        raise SettingsError(f"{name} must be at least 16 visible ASCII characters")
    return token


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise SettingsError(f"{name} must not be empty")
    return raw.strip()


def _optional_text(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _role(name: str, raw: str) -> str | None:
    """A PostgreSQL role name that needs no quoting (it goes into the `-c role=` option)."""
    role = raw.strip()
    if role and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise SettingsError(f"{name} must be a lower-case role name such as investment_service")
    return role or None


def _nats_url(name: str, raw: str) -> str | None:
    """One or more nats:// (or tls://) server URLs, comma-separated; empty: events off."""
    servers = [part.strip() for part in raw.split(",") if part.strip()]
    for server in servers:
        if not server.startswith(("nats://", "tls://")):
            raise SettingsError(
                f"{name} must be nats:// URLs, comma-separated, got {redact(server)!r}"
            )
    return ",".join(servers) or None


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "DATABASE_URL": _database_url,
    "READ_DATABASE_URL": _database_url,
    "READ_MAX_LAG_SECONDS": lambda n, r: _seconds(n, r, 0.0, 60.0),
    "HOST": _text,
    "PORT": lambda n, r: _integer(n, r, 0, 65535),
    "WORKERS": lambda n, r: _integer(n, r, 1, 256),
    "DB_POOL_SIZE": lambda n, r: _integer(n, r, 1, 10_000),
    "TIMEZONE": _zone,
    "LIST_CACHE_SECONDS": lambda n, r: _seconds(n, r, 0.0, 60.0),
    "LIST_CACHE_MAX_BYTES": lambda n, r: _integer(n, r, 64 * 1024, 4 * 1024**3),
    "MAX_BODY_BYTES": lambda n, r: _integer(n, r, 64, 16 * 1024 * 1024),
    "HTTP_IDLE_TIMEOUT": lambda n, r: _seconds(n, r, 0.1, 3600.0),
    "DB_ACQUIRE_TIMEOUT": lambda n, r: _seconds(n, r, 0.01, 120.0),
    "DB_STATEMENT_TIMEOUT": lambda n, r: _seconds(n, r, 0.01, 600.0),
    "DB_PREPARED_STATEMENTS": _flag,
    "SERVER_RUNTIME_MODE": lambda n, r: _choice(n, r, ("auto", "st", "mt")),
    "SERVER_RUNTIME_THREADS": lambda n, r: _integer(n, r, 1, 64),
    "DB_RUNTIME_THREADS": lambda n, r: _integer(n, r, 0, 64),
    "INVEST_BATCH_MAX": lambda n, r: _integer(n, r, 1, 10_000),
    "INVEST_QUEUE_MAX": lambda n, r: _integer(n, r, 1, 1_000_000),
    "INVEST_CALLS_IN_FLIGHT": lambda n, r: _integer(n, r, 1, 64),
    "INVEST_WAIT_CALLS": lambda n, r: _integer(n, r, 1, 64),
    "CANCEL_CALLS_IN_FLIGHT": lambda n, r: _integer(n, r, 1, 64),
    "READ_BATCH_MAX": lambda n, r: _integer(n, r, 1, 10_000),
    "READ_CALLS_IN_FLIGHT": lambda n, r: _integer(n, r, 1, 64),
    "INVEST_CALL_SPACING_SECONDS": lambda n, r: _seconds(n, r, 0.0, 0.1),
    "INVEST_CALL_SPACING_FULL": lambda n, r: _integer(n, r, 1, 10_000),
    "INVEST_CALL_SPACING_ARRIVALS": lambda n, r: _integer(n, r, 1, 1_000),
    "READ_CALL_SPACING_SECONDS": lambda n, r: _seconds(n, r, 0.0, 0.1),
    "READ_CALL_SPACING_FULL": lambda n, r: _integer(n, r, 1, 10_000),
    "LIST_LOADS_MAX": lambda n, r: _integer(n, r, 0, 10_000),
    "SERVER_BACKPRESSURE": lambda n, r: _integer(n, r, 0, 1_000_000),
    "IDEMPOTENCY_RETENTION_HOURS": lambda n, r: _integer(n, r, 24, 24 * 366),
    "IDEMPOTENCY_CLEANUP_SECONDS": lambda n, r: _seconds(n, r, 0.0, 86_400.0),
    "LOG_LEVEL": _log_level,
    "METRICS_ENABLED": _flag,
    "ACCESS_LOG": _flag,
    "ADMIN_TOKEN": _token,
    "MIGRATION_DATABASE_URL": _database_url,
    "ALLOW_UNSAFE_DURABILITY": _flag,
    "ALLOW_PRIVILEGED_SERVICE": _flag,
    "DB_SESSION_ROLE": _role,
    "METRICS_TOKEN": _token,
    "PROMETHEUS_MULTIPROC_DIR": _optional_text,
    "EMBEDDED_PG_PORT": lambda n, r: _integer(n, r, 1, 65535),
    "EMBEDDED_PG_DATA": _optional_text,
    "EMBEDDED_PG_ARCHIVE": _optional_text,
    "NATS_URL": _nats_url,
    "RELAY_DATABASE_URL": _database_url,
    "RELAY_BATCH": lambda n, r: _integer(n, r, 1, 100_000),
    "RELAY_POLL_SECONDS": lambda n, r: _seconds(n, r, 0.001, 10.0),
    "NATS_PUBLISH_TIMEOUT": lambda n, r: _seconds(n, r, 0.1, 120.0),
    "NATS_STREAM_REPLICAS": lambda n, r: _integer(n, r, 1, 5),
    "NATS_STREAM_MAX_AGE_HOURS": lambda n, r: _integer(n, r, 1, 24 * 3660),
    "NATS_DUPLICATE_WINDOW_SECONDS": lambda n, r: _seconds(n, r, 1.0, 86_400.0),
    "RELAY_ABANDON_HOURS": lambda n, r: _integer(n, r, 1, 24 * 366),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment; unset variables keep their defaults."""
    env = os.environ if environ is None else environ
    if "HTTP_HEADER_TIMEOUT" in env:  # a deployment that set it meant a bound it no longer names
        raise SettingsError(
            "HTTP_HEADER_TIMEOUT is replaced by HTTP_IDLE_TIMEOUT (default 75 s): granian's one"
            " timer bounds the idle keep-alive wait and the request head together; unset it and"
            " set HTTP_IDLE_TIMEOUT longer than the idle timeout of every proxy and pool in front"
        )
    values: dict[str, Any] = {}
    for key, parse in _PARSERS.items():
        raw = env.get(key)
        if raw is not None:
            values[key.lower()] = parse(key, raw)
    settings = Settings(**values)
    if settings.db_pool_size < 2 * settings.workers:
        raise SettingsError(
            f"DB_POOL_SIZE ({settings.db_pool_size}) must be at least twice WORKERS"
            f" ({settings.workers}): each worker's pool needs 2 connections (psqlpy's minimum)"
        )
    room = settings.pool_share() - settings.reserved_connections()
    if settings.list_loads_max > max(1, room):
        raise SettingsError(
            f"LIST_LOADS_MAX ({settings.list_loads_max}) must leave the connections invests"
            f" and pages need: at most {max(1, room)} with {settings.pool_share()} connections"
            " per worker (DB_POOL_SIZE / WORKERS)"
        )
    for name, spacing, what in (
        ("READ_CALL_SPACING_SECONDS", settings.read_call_spacing_seconds, "a page"),
        ("INVEST_CALL_SPACING_SECONDS", settings.invest_call_spacing_seconds, "an invest"),
    ):
        if spacing >= settings.db_acquire_timeout:
            raise SettingsError(
                f"{name} must be shorter than DB_ACQUIRE_TIMEOUT: {what} waiting for its"
                " call's spacing would be answered 503 before it is sent"
            )
    if settings.nats_duplicate_window_seconds <= settings.nats_publish_timeout:
        raise SettingsError(
            "NATS_DUPLICATE_WINDOW_SECONDS must be longer than NATS_PUBLISH_TIMEOUT: a round"
            " published again after its acks timed out must fall within the window"
        )
    return settings
