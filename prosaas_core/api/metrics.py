"""Prometheus metrics, computed from the database, Redis and worker heartbeats at scrape time.

Every figure is read from shared state when scraped (nothing is counted inside this process),
so any API process on any host answers the same numbers: no prometheus multiprocess mode is
needed under gunicorn, and workers on other hosts need no port of their own. No read grows
with the history of ``background_jobs``:

- active jobs (queued, running) by type, status and queue: the partial index on the active
  rows (``ix_background_jobs_active``), bounded by the active rows;
- finished jobs and their run-time histogram (``prosaas_job_duration_seconds``, worker-side
  ``finished_at - started_at``): ``prosaas_job_totals``, which the core history task keeps up
  to date, plus the rows finished since its watermark (an index range on ``finished_at``);
  see ``prosaas_core.jobs.history``. They are counters: they survive pruning and restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from prosaas_core.jobs.history import BUCKETS

if TYPE_CHECKING:
    from prosaas_core.runtime import Runtime

log = logging.getLogger("prosaas.api")


class ProsaasCollector(Collector):
    """Jobs by type and status, queue depth, job durations, live workers and services."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "prosaas_metrics_source_up",
            "1 when the source could be read for this scrape",
            labels=["source"],
        )
        for source, gen in (
            ("database", self._jobs),
            ("redis", self._queues),
            ("workers", self._workers),
            ("flow", self._flow),
            ("schedules", self._schedules),
        ):
            try:
                metrics = list(gen())
            except Exception as exc:  # one source down must not hide the others
                log.warning("metrics: %s unavailable: %s", source, str(exc).splitlines()[0])
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from metrics
        yield up

    def _jobs(self) -> Iterator[Metric]:
        from sqlalchemy import func, select

        from prosaas_core.jobs.history import totals
        from prosaas_core.jobs.store import c

        jobs = GaugeMetricFamily(
            "prosaas_jobs",
            "Active jobs by type and status; finished ones: all that finished (history kept"
            " after pruning)",
            labels=["job_type", "status"],
        )
        finished = CounterMetricFamily(
            "prosaas_jobs_finished",
            "Jobs that finished, by type and status (kept after their rows are pruned)",
            labels=["job_type", "status"],
        )
        queued = GaugeMetricFamily(
            "prosaas_queued_jobs", "Rows with status queued, per queue", labels=["queue"]
        )
        hist = HistogramMetricFamily(
            "prosaas_job_duration_seconds",
            "Run time of finished jobs (finished_at - started_at), per job type",
            labels=["job_type"],
        )
        per_queue = dict.fromkeys(self.rt.registry.queues, 0)
        with self.rt.engine.connect() as conn:
            active = conn.execute(
                select(c.job_type, c.status, c.queue, func.count())
                .where(c.status.in_(("queued", "running")))
                .group_by(c.job_type, c.status, c.queue)
            ).all()
        by_type_status: dict[tuple[str, str], int] = {}
        for job_type, status, queue, n in active:
            by_type_status[(job_type, status)] = by_type_status.get((job_type, status), 0) + n
            if status == "queued":
                per_queue[queue] = per_queue.get(queue, 0) + n
        for (job_type, status), n in sorted(by_type_status.items()):
            jobs.add_metric([job_type, status], n)
        per_type: dict[str, Any] = {}
        for (job_type, status), f in sorted(totals(self.rt).items()):
            jobs.add_metric([job_type, status], f.jobs)
            finished.add_metric([job_type, status], f.jobs)
            agg = per_type.setdefault(job_type, [0.0, [0] * (len(BUCKETS) + 1)])
            agg[0] += f.duration_sum
            agg[1] = [a + b for a, b in zip(agg[1], f.buckets, strict=True)]
        for job_type, (total, per) in sorted(per_type.items()):
            cum, buckets = 0, []
            for bound, n in zip([*map(str, BUCKETS), "+Inf"], per, strict=True):
                cum += n
                buckets.append((bound, cum))
            hist.add_metric([job_type], buckets, float(total))
        for queue, n in sorted(per_queue.items()):
            queued.add_metric([queue], n)
        yield from (jobs, finished, queued, hist)

    def _queues(self) -> Iterator[Metric]:
        from rq import Queue

        depth = GaugeMetricFamily(
            "prosaas_queue_depth", "RQ jobs waiting in each Redis queue", labels=["queue"]
        )
        for queue in self.rt.registry.queues:
            depth.add_metric([queue], Queue(queue, connection=self.rt.request_redis).count)
        yield depth

    def _workers(self) -> Iterator[Metric]:
        from prosaas_core.jobs.heartbeat import live_workers

        workers = live_workers(self.rt)
        live = GaugeMetricFamily("prosaas_workers_live", "Workers with a fresh heartbeat")
        live.add_metric([], len(workers))
        state = GaugeMetricFamily(
            "prosaas_service_state",
            "1 for the current state of each service on each live worker",
            labels=["worker", "service", "state"],
        )
        restarts = GaugeMetricFamily(
            "prosaas_service_restarts",
            "Times each service has been restarted on each live worker",
            labels=["worker", "service"],
        )
        for w in workers:
            for name, svc in sorted((w.get("services") or {}).items()):
                state.add_metric([str(w.get("name")), name, str(svc.get("state"))], 1)
                restarts.add_metric([str(w.get("name")), name], int(svc.get("restarts") or 0))
        yield from (live, state, restarts)

    def _flow(self) -> Iterator[Metric]:
        from prosaas_core.jobs.flow import summary

        labels = ["job_type", "business_id"]
        held = GaugeMetricFamily(
            "prosaas_flow_slots_held", "Concurrency slots held per business", labels=labels
        )
        limit = GaugeMetricFamily(
            "prosaas_flow_slots_limit", "Concurrency limit per business", labels=labels
        )
        parked = GaugeMetricFamily(
            "prosaas_flow_parked_jobs",
            "Jobs parked by flow limits, by reason",
            labels=[*labels, "reason"],
        )
        used = GaugeMetricFamily(
            "prosaas_flow_rate_used", "Starts in the current rate window", labels=labels
        )
        rate = GaugeMetricFamily(
            "prosaas_flow_rate_limit_per_second", "Rate limit per business", labels=labels
        )
        from prosaas_core.limits import parse_rate

        for r in summary(self.rt):
            key = [r["job_type"], str(r["business_id"])]
            if r["concurrency"]:
                held.add_metric(key, r["slots_held"])
                limit.add_metric(key, r["concurrency"])
            if r["rate"]:
                used.add_metric(key, r["rate_used"] or 0)
                rate.add_metric(key, parse_rate(r["rate"]).per_second)
            for reason, n in sorted(r["parked_reasons"].items()):
                parked.add_metric([*key, reason.split(":", 1)[0]], n)
        yield from (held, limit, parked, used, rate)

    def _schedules(self) -> Iterator[Metric]:
        from datetime import datetime

        from prosaas_core.schedules import status

        labels = ["schedule", "business_id"]
        last = GaugeMetricFamily(
            "prosaas_schedule_last_occurrence_timestamp_seconds",
            "Latest fired occurrence of each schedule",
            labels=labels,
        )
        nxt = GaugeMetricFamily(
            "prosaas_schedule_next_occurrence_timestamp_seconds",
            "Next occurrence of each active schedule",
            labels=labels,
        )
        problem = GaugeMetricFamily(
            "prosaas_schedule_problem",
            "1 when a schedule is overdue or its job type is not installed",
            labels=labels,
        )
        for r in status(self.rt):
            key = [r["name"], str(r["business_id"] or "")]
            if r["last_occurrence"]:
                last.add_metric(key, datetime.fromisoformat(r["last_occurrence"]).timestamp())
            if r["next_occurrence"]:
                nxt.add_metric(key, datetime.fromisoformat(r["next_occurrence"]).timestamp())
            problem.add_metric(key, 1 if r["problem"] else 0)
        yield from (last, nxt, problem)


def make_registry(rt: Runtime) -> CollectorRegistry:
    """A registry of this app's metrics (one per app: tests build many apps)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProsaasCollector(rt))
    return registry
