"""Named exceptions. Each one a user can cause says what to do about it."""

from __future__ import annotations

from typing import Any


class ProsaasError(Exception):
    """Base class of every prosaas error."""


class PluginError(ProsaasError):
    """A plugin is malformed: bad hook result, invalid job type, duplicate name."""


class DuplicateJobTypeError(PluginError):
    """Two plugins claim the same job type name."""

    def __init__(self, name: str, first: str, second: str) -> None:
        super().__init__(
            f"job type {name!r} is claimed by two plugins: {first!r} and {second!r}; "
            f"disable one with PROSAAS_DISABLE_PLUGINS"
        )
        self.name, self.first, self.second = name, first, second


class ConfigError(ProsaasError):
    """A setting from the environment is missing or malformed."""


class SettingError(ConfigError):
    """One environment setting has a value prosaas (or a plugin) cannot use: the message names
    the key, the value and what is expected, on one line (the CLI prints it as is, a worker
    logs it without a traceback)."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        super().__init__(f"{key} must be {expected}, got {value!r}")
        self.key, self.value, self.expected = key, value, expected


class UnknownJobTypeError(ProsaasError):
    """No installed plugin provides this job type."""

    def __init__(self, name: str, installed: list[str]) -> None:
        super().__init__(
            f"unknown job type {name!r}; installed: {', '.join(sorted(installed)) or '(none)'}"
        )
        self.name, self.installed = name, installed


class PayloadError(ProsaasError):
    """A job payload failed validation; `details` lists the field errors."""

    def __init__(self, job_type: str, details: list[dict[str, Any]]) -> None:
        fields = ", ".join(".".join(str(p) for p in d.get("loc", ())) or "(root)" for d in details)
        super().__init__(f"invalid payload for {job_type!r}: {fields}")
        self.job_type, self.details = job_type, details


class TimingError(ProsaasError):
    """A job's run_at or delay is out of range (both given, negative, or more than a year
    ahead), or a schedule's cron or time zone is invalid."""


class MigrationRequiredError(ProsaasError):
    """The database rejected a job type through chk_job_type: the schema is behind the plugins."""

    def __init__(self, job_type: str) -> None:
        super().__init__(
            f"Database migration required: job type {job_type!r} is not allowed by chk_job_type; "
            f"run `prosaas db upgrade`"
        )
        self.job_type = job_type


class NotFoundError(ProsaasError):
    """The object does not exist, or belongs to another business (the two look the same)."""


class ConflictError(ProsaasError):
    """The request conflicts with the object's current state."""


class MigrationLockTimeout(ProsaasError):
    """Another migrator held the migration lock for longer than the configured wait."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (of the driver's error for a SQLAlchemy one), for
    one-line CLI errors, log lines and JSON details."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


def is_missing_schema(exc: BaseException) -> bool:
    """A table or column the code needs does not exist: the database is behind the code."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "pgcode", None) in ("42P01", "42703"):  # undefined table / column
        return True
    return any(m in str(orig) for m in ("no such table", "no such column"))
