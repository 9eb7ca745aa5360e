"""prosaas-greetings: the hook implementations, and nothing heavy at import time."""

from pathlib import Path

from prosaas_core import JobType, hookimpl

#: the plugin contract versions this plugin works with (prosaas_core.CONTRACT_VERSION)
PROSAAS_CONTRACT = ">=1,<2"


@hookimpl
def prosaas_job_types():
    from prosaas_greetings import jobs  # pydantic and SQLAlchemy load only when needed

    return [
        JobType(
            "greetings_send",
            jobs.send,
            queue="greetings",
            payload_model=jobs.SendGreetings,
            description="Write COUNT greetings for NAME, in batches",
            max_attempts=5,
            timeout=600,
        )
    ]


@hookimpl
def prosaas_blueprints():
    from prosaas_greetings.api import bp

    return [bp]


@hookimpl
def prosaas_migrations():
    return [str(Path(__file__).parent / "migrations")]
