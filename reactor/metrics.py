"""Edge: Prometheus metrics, right across every process on one machine (prometheus_client's
multiprocess mode: each process writes its counters to files in PROMETHEUS_MULTIPROC_DIR, a scrape
adds them up).

The folder is reactor's own when PROMETHEUS_MULTIPROC_DIR is unset: one per working directory in
/dev/shm (memory: every count is a write to a mapped file, and on disk those pages would be flushed
with the database's fsyncs; measured: ingest 20% slower with the folder under var/), else
var/prometheus, else one in the system's temp folder. The gunicorn
master empties it at start (reactor.gunicorn_conf.on_starting) and marks each exited worker dead, so a
restart does not count twice and a dead worker's gauges go. prometheus_client is imported only once
the folder is chosen (it decides single- or multi-process at import), and only when metrics are on:
with REACTOR_METRICS=0 nothing is counted and /metrics is 404.

Webhooks and ingested deliveries, counted on every request, are queued in the process and written to
the files by a thread every FLUSH_EVERY seconds (and at exit): prometheus_client's multiprocess values
take one lock per process for every write, and eight request threads queueing on it cost more than
the writes (measured: 7% of the request path's Python time under wrk). A scrape answered by this
process flushes its own queue first; another process's counts reach it within FLUSH_EVERY.

The outbox gauges and the rule version are read at scrape time (from the store and the scraping
process), so they are right however many processes and machines share a PostgreSQL store.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import re
import tempfile
import threading
import time
from bisect import bisect_left
from collections import Counter, deque

ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_DIR = os.path.join("var", "prometheus")
SHM = "/dev/shm"
WEBHOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ZOOM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0)
FLUSH_EVERY = 0.2
_ID = re.compile(r"/(?:meetings|webinars)/[^/]+")

_m = None  # the metric objects once enable() ran in this process; None: counting is off
_queued: deque = deque()  # (counter, histogram, event, outcome, seconds) not yet written (append/popleft: thread-safe)


def multiproc_dir() -> str:
    """The folder every process of this machine writes its metrics to; sets PROMETHEUS_MULTIPROC_DIR
    (inherited by forked workers) when it was unset, and creates the folder."""
    path = os.environ.get(ENV, "").strip()
    if not path:
        for path in default_dirs(os.getcwd()):
            try:
                os.makedirs(path, exist_ok=True)
                if os.access(path, os.W_OK):
                    break
            except OSError:
                continue
        os.environ[ENV] = path
    os.makedirs(path, exist_ok=True)
    return path


def default_dirs(cwd: str) -> list[str]:
    """Where the metrics go when PROMETHEUS_MULTIPROC_DIR is unset, best first: memory, then disk. One
    folder per working directory and user, so two reactors on one machine never add up each other's."""
    name = f"reactor-metrics-{os.getuid()}-{hashlib.sha256(cwd.encode()).hexdigest()[:12]}"
    return [os.path.join(SHM, name), os.path.join(cwd, DEFAULT_DIR), os.path.join(tempfile.gettempdir(), name)]


def clean(path: str) -> None:
    """Empty the folder of earlier runs' files (in the gunicorn master, before any worker starts)."""
    for name in os.listdir(path):
        if name.endswith(".db"):
            try:
                os.remove(os.path.join(path, name))
            except FileNotFoundError:
                pass


def worker_exited(pid: int) -> None:
    """A gunicorn worker exited: its live gauges no longer count."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class _Metrics:
    def __init__(self):
        from prometheus_client import Counter, Histogram

        self.webhooks = Counter("reactor_webhooks_total", "Webhook requests by event and outcome "
                                "(accepted, reply, rejected_signature, rejected_payload, unavailable, inbox_full)",
                                ["event", "outcome"])
        self.ingested = Counter("reactor_ingested_total", "Deliveries taken from the inbox by event and outcome "
                                "(stored, duplicate)", ["event", "outcome"])
        self.ingest_seconds = Histogram("reactor_ingest_delay_seconds", "Time from a delivery's receipt to its "
                                        "delivery and jobs being stored", buckets=WEBHOOK_BUCKETS)
        self.webhook_seconds = Histogram("reactor_webhook_duration_seconds", "Time to answer a webhook",
                                         buckets=WEBHOOK_BUCKETS)
        self.actions = Counter("reactor_actions_total", "Finished attempts of outbox jobs by action kind and outcome",
                               ["action", "outcome"])
        self.zoom = Counter("reactor_zoom_requests_total", "Zoom REST calls by endpoint and HTTP status "
                            "(error: no answer)", ["endpoint", "status"])
        self.zoom_seconds = Histogram("reactor_zoom_request_duration_seconds", "Zoom REST call time", ["endpoint"],
                                      buckets=ZOOM_BUCKETS)
        self.alerts = Counter("reactor_alerts_total", "Alerts and notifications by kind and outcome",
                              ["kind", "outcome"])
        self.reload_failures = Counter("reactor_rules_reload_failures_total", "Rule reloads rejected (invalid files)")


def enable() -> None:
    """Count from now on in this process (idempotent)."""
    global _m
    if _m is None:
        multiproc_dir()
        _m = _Metrics()
        threading.Thread(target=_flush_every, name="reactor-metrics", daemon=True).start()
        atexit.register(flush)


def _flush_every() -> None:
    while True:
        time.sleep(FLUSH_EVERY)
        flush()


def flush() -> None:
    """Write the queued webhook and ingest counts to this process's files: each label's count, and each
    histogram bucket's, in one write."""
    counts: Counter = Counter()
    observed: dict = {}
    while True:
        try:
            counter, histogram, event, outcome, seconds = _queued.popleft()
        except IndexError:
            break
        counts[(counter, event, outcome)] += 1
        observed.setdefault(histogram, []).append(seconds)
    for (counter, event, outcome), n in counts.items():
        counter.labels(event, outcome).inc(n)
    for histogram, values in observed.items():
        _observe_all(histogram, values)


def _observe_all(histogram, values: list[float]) -> None:
    """histogram.observe() of every value, written as one increment of the sum and of each bucket touched:
    the buckets and sum observe() itself writes (prometheus_client 0.26, pinned), else observe() each."""
    bounds, buckets, total = (getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None:
        for value in values:
            histogram.observe(value)
        return
    total.inc(sum(values))
    for index, n in Counter(bisect_left(bounds, value) for value in values).items():  # observe(): value <= bound
        buckets[index].inc(n)


def enabled() -> bool:
    return _m is not None


def endpoint(path: str) -> str:
    """A Zoom path without its meeting or webinar id: /meetings/{id}/livestream/status."""
    return _ID.sub(lambda m: "/" + m.group(0).split("/")[1] + "/{id}", path)


def webhook(event: str, outcome: str, seconds: float) -> None:
    if _m is not None:
        _queued.append((_m.webhooks, _m.webhook_seconds, event or "-", outcome, seconds))


def ingested(event: str, outcome: str, seconds: float) -> None:
    if _m is not None:
        _queued.append((_m.ingested, _m.ingest_seconds, event or "-", outcome, seconds))


def action(kind: str, outcome: str) -> None:
    if _m is not None:
        _m.actions.labels(kind, outcome).inc()


def zoom_request(path: str, status: int | None, seconds: float) -> None:
    if _m is not None:
        name = endpoint(path)
        _m.zoom.labels(name, str(status) if status else "error").inc()
        _m.zoom_seconds.labels(name).observe(seconds)


def alert(kind: str, outcome: str) -> None:
    if _m is not None:
        _m.alerts.labels(kind, outcome).inc()


def reload_failed() -> None:
    if _m is not None:
        _m.reload_failures.inc()


def exposition(outbox, rules_version: str, now: float | None = None) -> tuple[bytes, str]:
    """The text a scrape gets: every process's counters added up, then the gauges read now:
    `outbox(now)` gives {"jobs": {status: n}, "oldest_pending_seconds": s} (the store's), and the
    rule version in force in this process."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
    from prometheus_client.core import GaugeMetricFamily

    now = time.time() if now is None else now
    flush()
    state = outbox(now)

    class _AtScrape:
        def collect(self):
            jobs = GaugeMetricFamily("reactor_outbox_jobs", "Outbox jobs by status, read from the store",
                                     labels=["status"])
            for status, n in sorted(state["jobs"].items()):
                jobs.add_metric([status], n)
            yield jobs
            yield GaugeMetricFamily("reactor_outbox_oldest_pending_seconds", "Seconds since the event of the "
                                    "oldest pending or running job (0 when none)",
                                    value=state["oldest_pending_seconds"])
            yield GaugeMetricFamily("reactor_inbox_backlog", "Acknowledged deliveries not yet ingested (matched and "
                                    "planned)", value=state["inbox"])
            info = GaugeMetricFamily("reactor_rules_info", "The rule set in force (its version)", labels=["version"])
            info.add_metric([rules_version], 1)
            yield info

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_AtScrape())
    return generate_latest(registry), CONTENT_TYPE_LATEST
