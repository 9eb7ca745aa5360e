"""The recovery targets of issue #17 (seconds), and what a loaded 2-core CI machine may add."""

#: SIGKILL of a worker mid-job -> the job running again elsewhere
KILL_TO_RESUME = 10.0
#: Redis back (restarted empty, or flushed) -> work running again
REDIS_BACK_TO_WORK = 2.0
#: a fork worker's work horse dies -> its job handed back
HORSE_DEATH_TO_REQUEUE = 2.0
#: slack added to each target for a loaded machine
SLACK = 3.0
