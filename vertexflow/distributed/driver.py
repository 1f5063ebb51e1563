"""The driver side: connect to a Dask cluster, submit shards, follow them to the end.

``--cluster tcp://HOST:8786`` connects to a running scheduler;
``--cluster local:N`` starts a ``LocalCluster`` of N single-threaded worker
processes on 127.0.0.1 for the length of the job.

:func:`run_shards` submits one task per shard (with ``retries``: a task
that raises is run again, on any worker; a task whose worker dies is
rescheduled by the scheduler itself), then polls about four times a second:
it drains the job's progress queue into one :class:`JobStats` (the client's
single progress bar), publishes the job's *control* value (a Dask
``Variable``: the bandwidth share of :mod:`.bandwidth`, and whether to stop),
and hands every finished shard to the caller, who records it in the
journal. It never waits on a single future, so a Ctrl-C is seen within a
poll; it then asks the running shards to stop (they finish the transfers in
flight, as a one-process run does on its first Ctrl-C, within about a
second) and cancels the shards not started. Stopping them, not only
cancelling the tasks, matters on a long-lived cluster: Dask cannot cancel a
task that is running, and a rerun must not race an old attempt on the same
keys.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ClusterError
from ..interrupts import INTERRUPTS
from ..logs import get_logger
from ..pipeline.stats import JobStats
from .bandwidth import slots_share
from .worker import SNAPSHOT_FIELDS, ShardTask, run_shard

log = get_logger(__name__)

#: Dask re-runs a shard task that raised this many times (a killed worker is rescheduled besides)
RETRIES = 2
#: seconds between polls of the queue and the futures
POLL = 0.25
#: seconds to wait for a scheduler to answer
CONNECT_TIMEOUT = 30
#: seconds a stopped job waits for its running shards to finish their transfers in flight
STOP_GRACE = 30
_LOCAL = re.compile(r"^local(?::(\d+))?$")


@contextmanager
def connect(address: str) -> Iterator[Any]:
    """A Dask ``Client`` for ``address`` (``tcp://...``, ``tls://...`` or ``local:N``), closed on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ClusterError("--cluster needs Dask: pip install 'vertexflow[dask]'") from exc
    m = _LOCAL.match(address)
    if m:
        workers = int(m.group(1) or 2)
        if not 1 <= workers <= 256:
            raise ClusterError(f"--cluster {address}: use local:N with N from 1 to 256")
        # processes, one thread each: shards do not share a GIL, and each runs its own event loop
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, worker_dashboard_address=None,
                               silence_logs=logging.ERROR)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    if not re.match(r"^(tcp|tls|inproc|ucx)://", address):
        raise ClusterError(f"--cluster {address!r}: use tcp://HOST:PORT (a Dask scheduler) or local:N")
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
    with client:
        yield client


#: what each worker evaluates to say which vertexflow it runs; an expression, not a function of
#: vertexflow, because a worker without vertexflow cannot unpickle one (its error would be a raw traceback)
VERSION_PROBE = "__import__('vertexflow').__version__"


def check_workers(client: Any) -> None:
    """Every worker imports the vertexflow this process runs; a :class:`ClusterError` names each that does not."""
    from .. import __version__

    answers = client.run(eval, VERSION_PROBE, on_error="return")
    problems = []
    for address, got in sorted(answers.items()):
        if isinstance(got, BaseException):
            problems.append(f"{address} cannot import vertexflow ({type(got).__name__}: {got})")
        elif got != __version__:
            problems.append(f"{address} runs vertexflow {got}")
    if problems:
        raise ClusterError(f"{len(problems)} of {len(answers)} workers cannot run this job: {'; '.join(problems)}. "
                           f"Install vertexflow {__version__} (this driver's) in every worker's environment; "
                           "no shard was started")


def worker_slots(client: Any) -> int:
    """Worker threads in the cluster now (at least 1)."""
    return max(1, sum(client.nthreads().values()))


@dataclass(slots=True)
class ShardOutcome:
    index: int
    result: dict[str, Any] | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class ShardProgress:
    """The job's progress from its shards' events: per shard, the newest attempt's counters.

    What it shows never goes backwards while the job runs: a shard retried
    (a worker lost, an attempt failed) counts again from zero, so each
    shard is shown at the most it reached in any attempt until its newest
    one passes that (its bytes are replaced, not added twice and then
    taken away). :meth:`apply` with ``exact`` gives the true sums: the
    summary at the end.
    """

    attempt: dict[int, str] = field(default_factory=dict)
    snapshot: dict[int, dict[str, int]] = field(default_factory=dict)
    final: dict[int, dict[str, int]] = field(default_factory=dict)
    #: per shard, the most each counter reached in any attempt
    high: dict[int, dict[str, int]] = field(default_factory=dict)
    #: shards with an attempt seen starting and not yet seen ending
    running: set[int] = field(default_factory=set)

    def take(self, event: dict[str, Any], on_start: Callable[[int], None] = lambda _: None) -> None:
        """One event of a shard attempt (``start``, ``progress``, ``end``); another attempt's stale ones are dropped."""
        index, attempt = event["shard"], event["attempt"]
        if event["event"] == "start":
            self.attempt[index] = attempt
            self.running.add(index)
            self.snapshot.pop(index, None)  # a new attempt starts counting again
            on_start(index)
        elif event["event"] == "end" and self.attempt.get(index) == attempt:
            self.running.discard(index)
        elif event["event"] == "progress" and self.attempt.get(index) == attempt and index not in self.final:
            self.snapshot[index] = {f: int(event.get(f, 0)) for f in SNAPSHOT_FIELDS}
            self._seen(index, self.snapshot[index])

    def finish(self, index: int, result: dict[str, Any] | None) -> None:
        """Shard ``index`` ended: with its result's counters, or (failed) with none."""
        self.running.discard(index)
        self.snapshot.pop(index, None)
        if result is not None:
            self.final[index] = _counters(result)
            self._seen(index, self.final[index])

    def _seen(self, index: int, counters: dict[str, int]) -> None:
        high = self.high.setdefault(index, {})
        for f, v in counters.items():
            if v > high.get(f, 0):
                high[f] = v

    def apply(self, live: JobStats, *, exact: bool = False) -> None:
        """Set ``live``'s counters: the shown (never decreasing) sums, or with ``exact`` the true ones."""
        for f in SNAPSHOT_FIELDS:
            if f == "in_flight" or exact:
                total = (sum(c.get(f, 0) for c in self.final.values())
                         + sum(c.get(f, 0) for c in self.snapshot.values()))
            else:
                total = sum(c.get(f, 0) for c in self.high.values())
            setattr(live, f, total)


def run_shards(client: Any, tasks: Sequence[ShardTask], *, live: JobStats,
               on_start: Callable[[int], None], on_finish: Callable[[ShardOutcome], None],
               redraw: Callable[[], None] = lambda: None, bandwidth: bool = False,
               retries: int = RETRIES) -> list[ShardOutcome]:
    """Run ``tasks`` on ``client``'s cluster; returns an outcome per finished task (in finishing order).

    ``live`` is kept up to date with the sum of every shard's progress.
    ``on_start`` is called when a shard attempt starts on a worker,
    ``on_finish`` once per shard that ran to its end (a stopped shard's
    summary says ``interrupted``). A first KeyboardInterrupt stops the job:
    shards not started are cancelled, running ones are asked to stop and
    are waited for (at most ``STOP_GRACE`` seconds), then KeyboardInterrupt
    is raised again. A second one, or any other error, cancels everything
    at once.
    """
    from distributed import Queue, Variable

    token = uuid.uuid4().hex[:12]
    queue = Queue(f"vertexflow-progress-{token}", client=client)
    variable = Variable(f"vertexflow-control-{token}", client=client)
    slots = worker_slots(client)
    share = slots_share(len(tasks), slots) if bandwidth else 1.0
    variable.set({"share": share, "stop": False})
    tasks = [replace(t, queue=queue.name, variable=variable.name, share=share) for t in tasks]
    futures = {client.submit(run_shard, t, key=f"vertexflow-shard-{token}-{t.index}", retries=retries,
                             pure=False): t.index for t in tasks}
    state = ShardProgress()
    outcomes: list[ShardOutcome] = []
    with INTERRUPTS.receiving(_interrupt_here):
        _drive(client, futures, state, outcomes, queue, variable, live=live, on_start=on_start,
               on_finish=on_finish, redraw=redraw, bandwidth=bandwidth, share=share, slots=slots)
    return outcomes


def _interrupt_here(signum: int) -> None:
    """The driver's loop is synchronous: a signal interrupts it where it waits, as Ctrl-C does by default."""
    raise KeyboardInterrupt


def _drive(client: Any, futures: dict[Any, int], state: ShardProgress, outcomes: list[ShardOutcome], queue: Any,
           variable: Any, *, live: JobStats, on_start: Callable[[int], None],
           on_finish: Callable[[ShardOutcome], None], redraw: Callable[[], None], bandwidth: bool, share: float,
           slots: int) -> None:
    next_slots = time.monotonic() + 1.0
    stop_by: float | None = None  # set once a stop is requested: the end of the grace period
    try:
        while futures:
            try:
                for event in queue.get(batch=True):
                    state.take(event, on_start)
                _collect(futures, state, outcomes, on_finish, stopping=stop_by is not None)
                if bandwidth and stop_by is None:
                    if time.monotonic() >= next_slots:
                        slots, next_slots = worker_slots(client), time.monotonic() + 1.0
                    new = slots_share(len(futures), slots)
                    if new != share:
                        share = new
                        variable.set({"share": share, "stop": False})
                state.apply(live)
                redraw()
                if stop_by is not None and time.monotonic() > stop_by:
                    log.warning("shards still running after the stop request", shards=sorted(state.running))
                    break
                if futures:
                    time.sleep(POLL)
            except KeyboardInterrupt:
                if stop_by is not None:
                    raise
                stop_by = time.monotonic() + STOP_GRACE
                variable.set({"share": share, "stop": True})
                client.cancel([f for f, index in futures.items() if index not in state.running])
        if stop_by is not None:
            raise KeyboardInterrupt
    finally:
        if futures:
            client.cancel(list(futures))
        try:  # the scheduler keeps named queues and variables until told
            queue.close()
            variable.delete()
        except Exception as exc:  # noqa: BLE001 - clean-up is best effort; the job's outcome stands
            log.debug("cluster names not released", error=type(exc).__name__)
        state.apply(live, exact=True)


def _collect(futures: dict[Any, int], state: ShardProgress, outcomes: list[ShardOutcome],
             on_finish: Callable[[ShardOutcome], None], *, stopping: bool) -> None:
    """Hand every future that is done to ``on_finish`` (a shard cancelled by a stop is dropped: it did not run)."""
    for future, index in list(futures.items()):
        if not future.done():
            continue
        del futures[future]
        if future.status == "cancelled" and stopping:
            state.finish(index, None)
            continue
        outcome = ShardOutcome(index)
        if future.status == "finished":
            outcome.result = future.result()
            state.finish(index, outcome.result)
        else:
            state.finish(index, None)
            try:
                outcome.error = future.exception()
            except Exception as exc:  # noqa: BLE001 - cancelled by the scheduler: that is the error
                outcome.error = exc
        outcomes.append(outcome)
        on_finish(outcome)


def _counters(result: dict[str, Any]) -> dict[str, int]:
    s = result.get("stats") or {}
    return {"done_objects": s.get("objects", 0), "done_bytes": s.get("bytes", 0), "moved_bytes": s.get("bytes", 0),
            "skipped_objects": s.get("skipped", 0), "failed_objects": s.get("failed", 0),
            "retries": s.get("retries", 0), "in_flight": 0, "deleted_objects": s.get("deleted", 0)}
