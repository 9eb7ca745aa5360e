"""Settings in one place, read from the environment (or a mapping in tests)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prosaas_core.errors import ConfigError, SettingError

DEFAULT_DATABASE_URL = "sqlite:///prosaas.db"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: seconds per unit of a duration: "500ms", "30", "30s", "5m" or "5min", "2h", "1d"
_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|min|m|h|d)?$")


def parse_names(value: str | None) -> frozenset[str]:
    """Split a comma-separated list of names, as in PROSAAS_DISABLE_PLUGINS."""
    return frozenset(n.strip() for n in (value or "").split(",") if n.strip())


def _bounds(
    key: str, raw: str, value: float, what: str, low: float | None, high: float | None
) -> None:
    """SettingError unless low <= value <= high (either bound may be None)."""
    if low is not None and high is not None and not low <= value <= high:
        raise SettingError(key, raw, f"{what} between {low:g} and {high:g}")
    if low is not None and value < low:
        raise SettingError(key, raw, f"{what} >= {low:g}")
    if high is not None and value > high:
        raise SettingError(key, raw, f"{what} <= {high:g}")


def _float(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(key, raw, "a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingError(key, raw, "a finite number")
    return value


def _number(env: Mapping[str, str], key: str, default: float) -> float:
    raw = (env.get(key) or "").strip()
    return _float(key, raw) if raw else default


def _choice(env: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(key) or choices[0]).strip().lower()
    if raw not in choices:
        raise SettingError(key, raw, f"one of {', '.join(choices)}")
    return raw


def _retention(key: str, raw: str) -> float | None:
    """Days as a number, or "never" (None: not pruned)."""
    if raw.strip().lower() == "never":
        return None
    try:
        days = float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number of days or 'never', got {raw!r}") from None
    if days < 0:
        raise ConfigError(f"{key} must not be negative, got {raw!r}")
    return days


def _days(env: Mapping[str, str], key: str, default: float) -> float | None:
    raw = env.get(key)
    return default if raw in (None, "") else _retention(key, raw)


_FINAL = ("succeeded", "failed", "cancelled")


def _overrides(value: str | None) -> dict[tuple[str, str | None], float | None]:
    """PROSAAS_RETENTION_OVERRIDES: "broadcast=90,delete_leads.failed=never"."""
    key = "PROSAAS_RETENTION_OVERRIDES"
    out: dict[tuple[str, str | None], float | None] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        name, sep, days = item.partition("=")
        job_type, _, status = name.strip().partition(".")
        if not sep or not job_type or (status and status not in _FINAL):
            raise ConfigError(
                f"{key}: {item.strip()!r} is not TYPE=DAYS or TYPE.STATUS=DAYS"
                f" (STATUS one of {', '.join(_FINAL)})"
            )
        out[(job_type, status or None)] = _retention(key, days)
    return out


@dataclass(frozen=True)
class Settings:
    """Every setting prosaas reads. Plugins read their own keys through `get()`."""

    database_url: str = DEFAULT_DATABASE_URL
    migration_database_url: str | None = None
    #: PostgreSQL connections a process keeps open in its pool, and how many more it may open
    #: for a burst (closed again when returned). Below a process's concurrent users (API
    #: threads, dialer or download threads) each burst connection is a new PostgreSQL backend
    db_pool_size: int = 10
    db_max_overflow: int = 20
    redis_url: str = DEFAULT_REDIS_URL
    #: REDIS_SENTINELS: (host, port) of each sentinel; empty for a plain REDIS_URL server
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    #: REDIS_SENTINEL_MASTER: the master name the sentinels monitor
    redis_sentinel_master: str | None = None
    #: REDIS_SENTINEL_PASSWORD: the sentinels' own password (requirepass in sentinel.conf)
    redis_sentinel_password: str | None = None
    #: REDIS_PASSWORD: the Redis master's password (overrides the one in REDIS_URL)
    redis_password: str | None = None
    run_migrations: bool = False
    disable_plugins: frozenset[str] = frozenset()
    disable_services: frozenset[str] = frozenset()
    #: seconds a migrator polls for the advisory lock before giving up
    migration_lock_wait: float = 120.0
    #: statement_timeout on the migration connection, seconds
    migration_statement_timeout: float = 120.0
    #: lock_timeout for DDL on the migration connection, milliseconds
    migration_lock_timeout_ms: int = 500
    #: total seconds DDL may keep retrying after lock timeouts
    migration_ddl_budget: float = 60.0
    #: seconds between worker/job heartbeats
    heartbeat_interval: float = 30.0
    #: a running job whose heartbeat is older than this is rescued by the sweeper
    stale_after: float = 90.0
    #: seconds between full sweeps for queued rows Redis lost (a flush or a Redis restart is
    #: noticed within a second anyway, see prosaas_core/worker.py's Maintenance)
    sweep_interval: float = 10.0
    #: seconds a worker's lease lasts; renewed every second, its running jobs are rescued as
    #: soon as it lapses (a killed worker's job resumes after about this long)
    lease_ttl: float = 5.0
    #: seconds a job's progress/checkpoint/finish write keeps retrying on fresh database
    #: connections (a PostgreSQL restart, a terminated backend) before the attempt gives up
    db_retry: float = 10.0
    #: socket timeout of the push to Redis after an enqueue: a hung Redis never holds a request
    #: longer; the row is committed and the sweeper pushes it later
    push_timeout: float = 1.0
    #: first retry delay of a failed job, seconds; doubled per attempt up to retry_backoff_max
    retry_backoff: float = 10.0
    retry_backoff_max: float = 600.0
    #: first restart delay of a crashed service, seconds; doubled up to service_backoff_max
    service_backoff: float = 1.0
    service_backoff_max: float = 60.0
    #: seconds a stopping worker waits for the running job and services before it exits
    shutdown_timeout: float = 30.0
    #: RQ worker class: "simple" (in-process, the default by measurement) or "fork"
    worker_class: str = "simple"
    #: lease of a flow-control slot, seconds: a dead holder's slot comes back within it, and
    #: per-business limit overrides take effect within it
    flow_lease: float = 30.0
    #: seconds between two scheduler ticks of a worker (one fires at a time)
    schedule_tick: float = 1.0
    #: an occurrence older than this (seconds) when the scheduler gets to it counts as missed,
    #: and then the schedule's catch-up policy decides
    schedule_grace: float = 60.0
    #: most missed occurrences a catch_up="all" schedule fires at once
    schedule_catch_up_max: int = 100
    #: largest request body the API accepts, bytes
    max_body_bytes: int = 16 * 1024 * 1024
    #: days finished jobs are kept, per status (None: kept for ever); per job type overrides in
    #: retention_overrides, "type=days" or "type.status=days", comma-separated
    retention_days: Mapping[str, float | None] = field(
        default_factory=lambda: {"succeeded": 7.0, "failed": 30.0, "cancelled": 30.0}
    )
    retention_overrides: Mapping[tuple[str, str | None], float | None] = field(default_factory=dict)
    #: cron of the core history task (roll up, then prune), run by one worker per occurrence
    history_cron: str = "*/10 * * * *"
    #: rows per DELETE of the pruning, and seconds it pauses between two
    prune_batch: int = 1000
    prune_pause: float = 0.01
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `env` (default: `os.environ`), then apply `overrides`."""
        env = dict(os.environ if env is None else env)
        database_url = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
        from prosaas_core.redisconn import parse_sentinels

        sentinels = parse_sentinels(env.get("REDIS_SENTINELS"))
        sentinel_master = (env.get("REDIS_SENTINEL_MASTER") or "").strip() or None
        if sentinels and not sentinel_master:
            raise ConfigError("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not")
        typed = cls(env=env)  # the typed getters, for the settings below that use them
        settings = cls(
            database_url=database_url,
            # DATABASE_MIGRATION_URL; MIGRATION_DATABASE_URL is the older spelling
            migration_database_url=(
                env.get("DATABASE_MIGRATION_URL") or env.get("MIGRATION_DATABASE_URL") or None
            ),
            db_pool_size=typed.get_int("PROSAAS_DB_POOL_SIZE", 10, minimum=1, maximum=1000),
            db_max_overflow=typed.get_int("PROSAAS_DB_MAX_OVERFLOW", 20, minimum=0, maximum=1000),
            redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
            redis_sentinels=sentinels,
            redis_sentinel_master=sentinel_master,
            redis_sentinel_password=env.get("REDIS_SENTINEL_PASSWORD") or None,
            redis_password=env.get("REDIS_PASSWORD") or None,
            run_migrations=(env.get("RUN_MIGRATIONS") or "").strip().lower() in _TRUE,
            disable_plugins=parse_names(env.get("PROSAAS_DISABLE_PLUGINS")),
            disable_services=parse_names(env.get("PROSAAS_DISABLE_SERVICES")),
            migration_lock_wait=_number(env, "PROSAAS_MIGRATION_LOCK_WAIT", 120.0),
            migration_statement_timeout=_number(env, "PROSAAS_MIGRATION_STATEMENT_TIMEOUT", 120.0),
            migration_lock_timeout_ms=int(_number(env, "PROSAAS_MIGRATION_LOCK_TIMEOUT_MS", 500)),
            migration_ddl_budget=_number(env, "PROSAAS_MIGRATION_DDL_BUDGET", 60.0),
            heartbeat_interval=_number(env, "PROSAAS_HEARTBEAT_INTERVAL", 30.0),
            stale_after=_number(env, "PROSAAS_STALE_AFTER", 90.0),
            sweep_interval=_number(env, "PROSAAS_SWEEP_INTERVAL", 10.0),
            lease_ttl=_number(env, "PROSAAS_LEASE_TTL", 5.0),
            db_retry=_number(env, "PROSAAS_DB_RETRY", 10.0),
            push_timeout=_number(env, "PROSAAS_PUSH_TIMEOUT", 1.0),
            retry_backoff=_number(env, "PROSAAS_RETRY_BACKOFF", 10.0),
            retry_backoff_max=_number(env, "PROSAAS_RETRY_BACKOFF_MAX", 600.0),
            service_backoff=_number(env, "PROSAAS_SERVICE_BACKOFF", 1.0),
            service_backoff_max=_number(env, "PROSAAS_SERVICE_BACKOFF_MAX", 60.0),
            shutdown_timeout=_number(env, "PROSAAS_SHUTDOWN_TIMEOUT", 30.0),
            worker_class=_choice(env, "PROSAAS_WORKER_CLASS", ("simple", "fork")),
            flow_lease=_number(env, "PROSAAS_FLOW_LEASE", 30.0),
            schedule_tick=_number(env, "PROSAAS_SCHEDULE_TICK", 1.0),
            schedule_grace=_number(env, "PROSAAS_SCHEDULE_GRACE", 60.0),
            schedule_catch_up_max=int(_number(env, "PROSAAS_SCHEDULE_CATCH_UP_MAX", 100)),
            max_body_bytes=int(_number(env, "PROSAAS_MAX_BODY_BYTES", 16 * 1024 * 1024)),
            retention_days={
                st: _days(env, f"PROSAAS_RETENTION_{st.upper()}_DAYS", d)
                for st, d in (("succeeded", 7.0), ("failed", 30.0), ("cancelled", 30.0))
            },
            retention_overrides=_overrides(env.get("PROSAAS_RETENTION_OVERRIDES")),
            history_cron=env.get("PROSAAS_HISTORY_CRON") or "*/10 * * * *",
            prune_batch=int(_number(env, "PROSAAS_PRUNE_BATCH", 1000)),
            prune_pause=_number(env, "PROSAAS_PRUNE_PAUSE", 0.01),
            env=env,
        )
        return replace(settings, **overrides) if overrides else settings

    @property
    def migration_url(self) -> str:
        """The URL migrations connect with: a direct one when the app goes through PgBouncer."""
        return self.migration_database_url or self.database_url

    def get(self, key: str, default: str | None = None) -> str | None:
        """A raw environment value, for plugin settings such as `TWILIO_AUTH_TOKEN`."""
        value = self.env.get(key)
        return default if value in (None, "") else value

    # Typed getters for plugin settings. Each treats an unset or empty (or blank) variable as
    # unset and returns `default`; a value it cannot use raises SettingError naming the key,
    # the value and what was expected, so a bad setting is one clear line, never a traceback.

    def _raw(self, key: str) -> str | None:
        value = (self.env.get(key) or "").strip()
        return value or None

    def get_int(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        """An integer (``"8"``; ``"8.0"`` is refused), within the bounds when given."""
        raw = self._raw(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingError(key, raw, "an integer") from None
        _bounds(key, raw, value, "an integer", minimum, maximum)
        return value

    def get_float(
        self,
        key: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        """A finite number (``"2.5"``), within the bounds when given."""
        raw = self._raw(key)
        if raw is None:
            return default
        value = _float(key, raw)
        _bounds(key, raw, value, "a number", minimum, maximum)
        return value

    def get_bool(self, key: str, default: bool = False) -> bool:
        """``1/true/yes/on`` or ``0/false/no/off`` (any case); anything else is an error."""
        raw = self._raw(key)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise SettingError(key, raw, "one of 1, true, yes, on, 0, false, no, off")

    def get_list(
        self, key: str, default: Iterable[str] = (), *, choices: Iterable[str] | None = None
    ) -> tuple[str, ...]:
        """A comma-separated list (``"a, b,c"`` -> ``("a", "b", "c")``): items stripped, empty
        ones and repeats dropped, order kept. With `choices`, an unknown item is an error."""
        raw = self._raw(key)
        if raw is None:
            return tuple(default)
        items = tuple(dict.fromkeys(i.strip() for i in raw.split(",") if i.strip()))
        if choices is not None:
            allowed = tuple(choices)
            unknown = [i for i in items if i not in allowed]
            if unknown:
                raise SettingError(key, raw, f"a comma-separated list of {', '.join(allowed)}")
        return items

    def get_duration(
        self,
        key: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        """Seconds, as a float: ``"30"`` (seconds), ``"500ms"``, ``"30s"``, ``"5m"`` or
        ``"5min"``, ``"2h"``, ``"1d"``; within the bounds (in seconds) when given."""
        raw = self._raw(key)
        if raw is None:
            return default
        match = _DURATION.match(raw.lower())
        if match is None:
            raise SettingError(key, raw, "a duration such as 30, 500ms, 30s, 5m, 2h or 1d")
        value = float(match.group(1)) * _UNITS[match.group(2) or ""]
        _bounds(key, raw, value, "a duration in seconds", minimum, maximum)
        return value
