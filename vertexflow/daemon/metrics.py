"""Prometheus metrics of one daemon (prometheus-client, a registry per daemon).

Live values (counters of the run in progress, queue depths, requests in
flight) are read from the job controllers when ``/metrics`` is scraped, by
:class:`JobsCollector`; job durations are a histogram observed as each run
ends. Every metric is named ``vertexflow_...``; ``docs/daemon.md`` lists them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .jobs import JobState

if TYPE_CHECKING:
    from .controller import JobController
    from .jobs import RunResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: job durations: from a no-change sync (well under a second) to a long migration
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf"))
RELOAD_RESULTS = ("applied", "refused")


class JobsCollector(Collector):
    """Reads every job's counters at scrape time."""

    def __init__(self, jobs: Callable[[], Iterable[JobController]]) -> None:
        self._jobs = jobs

    def collect(self) -> Iterator[Metric]:
        objects = CounterMetricFamily("vertexflow_objects_transferred", "Objects transferred", labels=["job"])
        bytes_ = CounterMetricFamily("vertexflow_bytes_transferred", "Bytes moved, counted as they move (a retried object's bytes count again)",
                                     labels=["job"])
        deleted = CounterMetricFamily("vertexflow_objects_deleted", "Destination objects deleted", labels=["job"])
        failures = CounterMetricFamily("vertexflow_failures", "Objects that failed, by reason",
                                       labels=["job", "reason"])
        retries = CounterMetricFamily("vertexflow_retries", "Retried requests", labels=["job"])
        runs = CounterMetricFamily("vertexflow_job_runs", "Finished runs by outcome", labels=["job", "outcome"])
        waits = CounterMetricFamily("vertexflow_throttle_waits", "Waits for the bandwidth limit",
                                    labels=["job", "direction"])
        wait_s = CounterMetricFamily("vertexflow_throttle_wait_seconds", "Seconds spent waiting for the "
                                     "bandwidth limit", labels=["job", "direction"])
        queue = GaugeMetricFamily("vertexflow_queue_depth", "Objects planned but not yet started "
                                  "(pending_objects), and runs waiting (pending_runs)", labels=["job", "queue"])
        in_flight = GaugeMetricFamily("vertexflow_in_flight_requests", "Requests in flight by remote",
                                      labels=["job", "remote"])
        state = GaugeMetricFamily("vertexflow_job_state", "1 for the job's current state", labels=["job", "state"])
        last_ok = GaugeMetricFamily("vertexflow_job_last_success_timestamp_seconds",
                                    "Unix time of the last successful run (0: none yet)", labels=["job"])
        overdue = GaugeMetricFamily("vertexflow_job_overdue", "1 while no run has succeeded within the "
                                    "expected interval", labels=["job"])
        failing = GaugeMetricFamily("vertexflow_job_consecutive_failures", "Failed runs in a row", labels=["job"])
        for job in self._jobs():
            name, stats = job.name, job.stats
            totals = job.totals.with_live(stats)
            objects.add_metric([name], totals.objects)
            bytes_.add_metric([name], totals.bytes)
            deleted.add_metric([name], totals.deleted)
            retries.add_metric([name], totals.retries)
            for reason, n in totals.failures.items():
                failures.add_metric([name, reason], n)
            for outcome, n in job.totals.runs.items():
                runs.add_metric([name, outcome], n)
            for direction in ("up", "down"):
                waits.add_metric([name, direction], job.runner.throttle.waits[direction])
                wait_s.add_metric([name, direction], job.runner.throttle.seconds[direction])
            pending = 0
            if stats is not None:
                pending = max(0, stats.listed_objects - stats.skipped_objects - stats.done_objects
                              - stats.failed_objects - stats.in_flight)
                for remote, n in job.runner.remotes_in_flight(stats).items():
                    in_flight.add_metric([name, remote], n)
            queue.add_metric([name, "pending_objects"], pending)
            queue.add_metric([name, "pending_runs"], 1 if job.pending else 0)
            for s in JobState:
                state.add_metric([name, str(s)], 1 if job.state == s else 0)
            last_ok.add_metric([name], job.last_success or 0)
            overdue.add_metric([name], 1 if job.overdue else 0)
            failing.add_metric([name], job.failures)
        yield from (objects, bytes_, deleted, failures, retries, runs, waits, wait_s, queue, in_flight, state,
                    last_ok, overdue, failing)


class DaemonMetrics:
    """The registry of one daemon and the metrics it updates itself."""

    def __init__(self, jobs: Callable[[], Iterable[JobController]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(JobsCollector(jobs))
        ProcessCollector(registry=self.registry)  # RSS, open fds, CPU: what a soak run watches
        self.durations = Histogram("vertexflow_job_duration_seconds", "Duration of finished runs",
                                   ["job", "outcome"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.loop_lag = Gauge("vertexflow_event_loop_lag_seconds", "How late the event loop woke a timer "
                              "(the last sample)", registry=self.registry)
        self.loop_lag_max = Gauge("vertexflow_event_loop_lag_max_seconds", "The largest event-loop lag over "
                                  "the last minute", registry=self.registry)
        self.started = Gauge("vertexflow_daemon_start_timestamp_seconds", "Unix time the daemon started",
                             registry=self.registry)
        self.started.set(time.time())
        self.reloads = Counter("vertexflow_daemon_config_reloads", "Config reloads (SIGHUP) by result: "
                               "applied, or refused (a bad file; the running config stays)", ["result"],
                               registry=self.registry)
        for result in RELOAD_RESULTS:  # both series exist from the start, so increase() sees the first refusal
            self.reloads.labels(result)
        self.reload_ok = Gauge("vertexflow_daemon_config_last_reload_successful", "1 unless the last reload "
                               "was refused (0 until a later one is applied)", registry=self.registry)
        self.reload_ok.set(1)
        self._outcomes: dict[str, set[str]] = {}

    def observe(self, job: JobController, result: RunResult) -> None:
        self.durations.labels(job.name, result.outcome).observe(result.seconds)
        self._outcomes.setdefault(job.name, set()).add(result.outcome)

    def reloaded(self, applied: bool) -> None:
        self.reloads.labels("applied" if applied else "refused").inc()
        self.reload_ok.set(1 if applied else 0)

    def forget(self, job: str) -> None:
        """Drop a removed job's series (the live ones go with its controller; durations are kept here)."""
        for outcome in self._outcomes.pop(job, ()):
            self.durations.remove(job, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)
