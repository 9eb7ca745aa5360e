"""Settings in one place, read from the environment (or a mapping in tests)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prosaas_core.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///prosaas.db"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"

_TRUE = {"1", "true", "yes", "on"}


def parse_names(value: str | None) -> frozenset[str]:
    """Split a comma-separated list of names, as in PROSAAS_DISABLE_PLUGINS."""
    return frozenset(n.strip() for n in (value or "").split(",") if n.strip())


def _number(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from None


def _choice(env: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(key) or choices[0]).strip().lower()
    if raw not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {raw!r}")
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
    redis_url: str = DEFAULT_REDIS_URL
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
        settings = cls(
            database_url=database_url,
            migration_database_url=env.get("MIGRATION_DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
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
