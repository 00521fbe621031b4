"""Herald's settings: one typed object, read once at start-up from ``HERALD_*`` variables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta

ENV_PREFIX = "HERALD_"
#: The PostgreSQL setting that moves ``herald_now()`` (migration 0031, herald/clock.py).
CLOCK_PG_SETTING = "herald.clock_offset"
#: The PostgreSQL setting ``herald_business_tz()`` reads (migration 0045); unset means the default.
BUSINESS_TZ_PG_SETTING = "herald.business_tz"
DEFAULT_BUSINESS_TZ = "Europe/Kyiv"

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
Port = Annotated[int, Meta(ge=1, le=65535)]


class SettingsError(ValueError):
    """A setting has a wrong value; the message names the environment variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything configurable about a Herald process.

    Each field is read from the variable ``HERALD_<FIELD>`` (upper case). Defaults work
    on a developer machine set up by ``scripts/ensure-services.sh``.
    """

    environment: Literal["development", "test", "production"] = "development"

    # PostgreSQL. The application role cannot modify the audit journal; the admin
    # (owner) role runs migrations and the bulk seeder.
    database_url: str = "postgresql://herald_app:herald_app@localhost:5432/herald"
    database_admin_url: str = "postgresql://herald:herald@localhost:5432/herald"
    db_pool_min: NonNegativeInt = 1
    db_pool_max: PositiveInt = 10
    db_statement_timeout_ms: NonNegativeInt = 30_000
    # A session idle inside a transaction this long is ended by PostgreSQL, releasing its
    # locks: a worker host lost mid-transaction (no FIN, no RST) would otherwise hold them
    # until TCP keepalive gives up (2 h by default) and block the host taking over its work.
    db_idle_in_transaction_timeout_ms: NonNegativeInt = 30_000

    amqp_url: str = "amqp://guest:guest@localhost:5672/"
    redis_url: str = "redis://localhost:6379/0"
    # Prefix of every queue, exchange and Redis key: lets tests and several
    # installations share one broker and one Redis without touching each other.
    namespace: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_.-]{0,62}$")] = "herald"

    http_host: str = "127.0.0.1"
    http_port: Port = 8080
    # Seconds a readiness probe waits for each service before calling it down.
    readiness_timeout: Annotated[float, Meta(gt=0, le=60)] = 2.0

    # Days Herald's clock (Python and PostgreSQL alike, herald/clock.py) runs ahead of the
    # wall clock; negative runs behind. Zero in production; the test suite is run at other
    # offsets to prove that no test depends on today's date.
    clock_offset_days: Annotated[float, Meta(ge=-36_500, le=36_500)] = 0.0
    # The business's time zone (IANA name): what "today" is for billing, meters, segments'
    # relative dates, case numbers and the UI's times, and the zone of a region without one.
    # Python reads it as herald.clock.business_tz(), SQL as herald_business_tz().
    business_tz: Annotated[str, Meta(min_length=1, max_length=64)] = DEFAULT_BUSINESS_TZ

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Dispatcher topology (used by the messaging engine).
    shards: PositiveInt = 8
    worker_processes: PositiveInt = 2
    # Recipients per unit of work (one queue message, one outcome transaction).
    dispatch_batch_size: Annotated[int, Meta(ge=1, le=10_000)] = 1000
    # Seconds a worker keeps the small rule tables (rate limits, quiet windows, time
    # zones) before reading them again: how long an administrator's change takes to apply.
    rules_cache_seconds: Annotated[float, Meta(ge=0, le=300)] = 5.0

    # Authentication.
    session_ttl_seconds: PositiveInt = 8 * 3600
    password_min_length: Annotated[int, Meta(ge=8, le=256)] = 12
    # argon2id costs of new password hashes (argon2-cffi's defaults). Production refuses
    # less than OWASP's floor (19 MiB, 2 passes); the test suite uses the least there is.
    password_hash_time_cost: Annotated[int, Meta(ge=1, le=10)] = 3
    password_hash_memory_kib: Annotated[int, Meta(ge=64, le=1_048_576)] = 65_536
    # Log-in throttling (crm/login_guard.py; the README's auth section has the rule): an
    # account or a known device is locked after login_max_failures failures in a row, first
    # for login_lockout_seconds, each next lock twice as long up to login_lockout_max_seconds;
    # a client address may fail login_address_free_failures times within
    # login_address_window_seconds, then waits 1 s, 2 s, 4 s... up to
    # login_address_max_delay_seconds between attempts. A browser stays a known device for
    # login_device_days after its user's last login from it.
    login_max_failures: Annotated[int, Meta(ge=1, le=1000)] = 5
    login_lockout_seconds: Annotated[int, Meta(ge=1, le=86_400)] = 60
    login_lockout_max_seconds: Annotated[int, Meta(ge=1, le=86_400)] = 15 * 60
    login_address_free_failures: Annotated[int, Meta(ge=0, le=100_000)] = 10
    login_address_window_seconds: Annotated[int, Meta(ge=1, le=86_400)] = 15 * 60
    login_address_max_delay_seconds: Annotated[int, Meta(ge=1, le=3600)] = 60
    login_device_days: Annotated[int, Meta(ge=1, le=3650)] = 90

    # Local simulators of outside providers (herald simulators).
    simulators_host: str = "127.0.0.1"
    simulators_port: Port = 8090

    # Outside providers. Defaults point at the local simulators.
    sms_gateway_url: str = "http://127.0.0.1:8090/sms"
    viber_api_url: str = "http://127.0.0.1:8090/viber"
    provider_api_token: str = "dev-token"
    smtp_host: str = "127.0.0.1"
    smtp_port: Port = 8025
    smtp_sender: str = "Herald <no-reply@herald.local>"
    # Where providers post delivery and read receipts: Herald's own public base URL.
    public_base_url: str = "http://127.0.0.1:8080"
    # Key of the signed unsubscribe links in e-mails (<public_base_url>/u/<token>).
    # Empty: derived from the provider token and namespace, for development and tests
    # only; production refuses to start without one of at least 32 characters.
    unsubscribe_secret: str = ""

    # The billing service (Client 360 card): its base URL (the simulator by default),
    # how long a card waits for a billing refresh before showing cached data marked
    # stale, and the age after which cached billing data is refreshed.
    billing_url: str = "http://127.0.0.1:8090/billing"
    billing_timeout_seconds: Annotated[float, Meta(gt=0, le=30)] = 0.3
    billing_max_age_seconds: NonNegativeInt = 300

    # Live screens: changes committed within this window reach a supervisor's stream as
    # one batch (one query per window, not per changed row).
    supervisor_push_window_seconds: Annotated[float, Meta(ge=0.01, le=5)] = 0.2
    # A campaign's progress stream reads the figures this often (and sends them if changed).
    campaign_stream_interval_seconds: Annotated[float, Meta(ge=0.01, le=60)] = 1.0

    # Exports (SR-13): above this many rows an export runs in the background and leaves a
    # file in export_dir (empty: a herald-exports folder in the system's temporary
    # directory; the API processes must share it), kept export_keep_hours, then deleted.
    export_background_rows: PositiveInt = 100_000
    export_dir: str = ""
    export_keep_hours: Annotated[float, Meta(gt=0, le=24 * 365)] = 24.0
    # Rows of one XLSX sheet, header included (Excel's limit; lowered only by tests).
    export_sheet_rows: Annotated[int, Meta(ge=2, le=1_048_576)] = 1_048_576

    # The organisation's constants that templates may use.
    org_contact_phone: str = "0 800 300 000"
    org_service_centre: str = "м. Київ, вул. Січових Стрільців, 1; пн–пт 8:00–17:00"
    org_cabinet_url: str = "https://my.example.ua"
    org_app_url: str = "https://app.example.ua"
    org_payment_url: str = "https://pay.example.ua"


_URL_SCHEMES: dict[str, tuple[str, ...]] = {
    "database_url": ("postgresql", "postgres"),
    "database_admin_url": ("postgresql", "postgres"),
    "amqp_url": ("amqp", "amqps"),
    "redis_url": ("redis", "rediss", "unix"),
    "sms_gateway_url": ("http", "https"),
    "viber_api_url": ("http", "https"),
    "billing_url": ("http", "https"),
    "public_base_url": ("http", "https"),
    "org_cabinet_url": ("https",),
    "org_app_url": ("https",),
    "org_payment_url": ("https",),
}

_MSGSPEC_PATH = re.compile(r"\s*-\s*at `\$\.(\w+)`")


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build settings from an environment mapping; raise SettingsError naming the variable."""
    fields = {f.name for f in msgspec.structs.fields(Settings)}
    unknown = sorted(
        k
        for k in environ
        if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() not in fields
    )
    if unknown:
        raise SettingsError(
            unknown[0],
            "unknown setting (typo?); known: " + ", ".join(sorted(env_name(f) for f in fields)),
        )
    raw: dict[str, str] = {}
    for name in fields:
        value = environ.get(env_name(name))
        if value is not None:
            raw[name] = value.strip()
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _MSGSPEC_PATH.search(message)
        variable = env_name(match.group(1)) if match else ENV_PREFIX + "*"
        detail = _MSGSPEC_PATH.sub("", message)
        shown = raw.get(match.group(1)) if match else None
        raise SettingsError(variable, f"{detail} (value: {shown!r})") from None
    for name, schemes in _URL_SCHEMES.items():
        _check_url(env_name(name), getattr(settings, name), schemes)
    app, admin = urlsplit(settings.database_url), urlsplit(settings.database_admin_url)
    if (app.hostname, app.port or 5432, app.path) != (
        admin.hostname,
        admin.port or 5432,
        admin.path,
    ):
        # The admin URL migrates and seeds the database the app URL serves: pointing one of
        # them elsewhere seeded one database and served another (seen with a 13 M seed).
        raise SettingsError(
            env_name("database_admin_url"),
            f"must name the same database as {env_name('database_url')} "
            f"({app.hostname}:{app.port or 5432}{app.path}); set both",
        )
    if settings.environment == "production" and len(settings.unsubscribe_secret) < 32:
        raise SettingsError(
            env_name("unsubscribe_secret"), "production needs a secret of at least 32 characters"
        )
    if settings.environment == "production" and (
        settings.password_hash_memory_kib < 19_456 or settings.password_hash_time_cost < 2
    ):
        raise SettingsError(
            env_name("password_hash_memory_kib"),
            "production needs at least 19456 KiB and 2 passes (HERALD_PASSWORD_HASH_TIME_COST)",
        )
    if settings.environment == "production" and settings.clock_offset_days:
        raise SettingsError(
            env_name("clock_offset_days"), "production runs on the real clock (offset 0)"
        )
    if settings.db_pool_min > settings.db_pool_max:
        raise SettingsError(
            env_name("db_pool_min"), f"must not exceed HERALD_DB_POOL_MAX ({settings.db_pool_max})"
        )
    try:
        ZoneInfo(settings.business_tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            env_name("business_tz"),
            f"{settings.business_tz!r} is not an IANA time zone (e.g. Europe/Kyiv)",
        ) from None
    return with_clock_offset(settings, settings.clock_offset_days)


def with_clock_offset(settings: Settings, days: float) -> Settings:
    """``settings`` with the clock ``days`` ahead of the wall clock, in Python and PostgreSQL.

    The offset goes into the database URLs too, so that every connection of every process
    gets the same clock, whatever opens it (asyncpg passes unknown URL parameters on as
    session settings).
    """
    offset = f"{days * 86_400:.3f} seconds"
    zone = settings.business_tz if settings.business_tz != DEFAULT_BUSINESS_TZ else None
    return msgspec.structs.replace(
        settings,
        clock_offset_days=days,
        database_url=_with_session_settings(settings.database_url, offset if days else None, zone),
        database_admin_url=_with_session_settings(
            settings.database_admin_url, offset if days else None, zone
        ),
    )


def _with_session_settings(url: str, offset: str | None, zone: str | None) -> str:
    """``url`` carrying the clock offset and the business time zone as session settings
    (each left out when it has its default)."""
    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query)
        if k not in (CLOCK_PG_SETTING, BUSINESS_TZ_PG_SETTING)
    ]
    if offset is not None:
        query.append((CLOCK_PG_SETTING, offset))
    if zone is not None:
        query.append((BUSINESS_TZ_PG_SETTING, zone))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _check_url(variable: str, url: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # reading it raises ValueError for a port out of range
    except ValueError as exc:
        raise SettingsError(variable, f"not a valid URL: {exc}") from None
    if parts.scheme not in schemes:
        raise SettingsError(
            variable,
            f"URL scheme must be one of {', '.join(schemes)}, "
            f"got {parts.scheme or 'none'!r} in {_redact(url)!r}",
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingsError(variable, f"URL has no host: {_redact(url)!r}")


def _redact(url: str) -> str:
    """The URL with its password hidden, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


redact_url = _redact
