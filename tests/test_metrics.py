"""GET /metrics through the real gunicorn: counted across workers, gauges read from the store, the token."""
from __future__ import annotations

import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from reactor.metrics import default_dirs
from tests.backends import migrated_postgres_schema
from tests.conftest import event

NO_RULES = "rules: []\n"


def scrape(server, token: str | None = None) -> dict:
    """{(name, frozenset(labels.items())): value} of one scrape."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.get(server.url + "/metrics", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_when(server, name: str, expected: float, **labels) -> dict:
    """A scrape once `name` (with `labels`) reads `expected`: another process's counts are written to the shared
    files within reactor.metrics.FLUSH_EVERY (0.2 s); fails after 3 s with what it read."""
    deadline = time.time() + 3
    while (got := value(samples := scrape(server), name, **labels)) != expected and time.time() < deadline:
        time.sleep(0.05)
    assert got == expected, f"{name} {labels}: {got}, expected {expected}"
    return samples


def metrics_folder(server) -> Path:
    return Path(default_dirs(str(server.tmp))[0])  # /dev/shm/reactor-metrics-<uid>-<hash of the folder>


def worker_pids_with_counters(server) -> set[str]:
    return {p.stem.rsplit("_", 1)[1] for p in metrics_folder(server).glob("counter_*.db")}


def test_webhooks_over_two_workers_are_counted_exactly_once_and_a_restart_after_a_crash_starts_from_zero(make_server):
    server = make_server()  # two gunicorn workers (WEB_CONCURRENCY=2), dry run
    n = 60
    for i in range(n):  # a new connection each: gunicorn hands them to both workers
        assert server.post(event(meeting_id=str(1000 + i))).status_code == 200
    for _ in range(3):
        assert server.post(event(), secret="not-the-secret").status_code == 401
    scrape_when(server, "reactor_webhook_duration_seconds_count", n + 3)
    assert len(worker_pids_with_counters(server)) == 2, "both workers must have served webhooks"
    for _ in range(4):  # whichever worker answers the scrape, it adds up every process's counts
        samples = scrape(server)
        assert value(samples, "reactor_webhooks_total", event="meeting.started", outcome="accepted") == n
        assert value(samples, "reactor_webhooks_total", event="-", outcome="rejected_signature") == 3
        assert value(samples, "reactor_webhook_duration_seconds_count") == n + 3
    server.wait_jobs(n)
    samples = scrape_when(server, "reactor_ingested_total", n, event="meeting.started", outcome="stored")
    assert value(samples, "reactor_actions_total", action="livestream.start", outcome="done") == n
    assert value(samples, "reactor_outbox_jobs", status="done") == n
    assert value(samples, "reactor_ingested_total", event="meeting.started", outcome="stored") == n
    assert value(samples, "reactor_ingest_delay_seconds_count") == n and value(samples, "reactor_inbox_backlog") == 0
    assert value(samples, "reactor_outbox_jobs", status="pending") == 0
    info = [(dict(labels), v) for (name, labels), v in samples.items() if name == "reactor_rules_info"]
    assert len(info) == 1 and info[0][1] == 1 and info[0][0]["version"]

    server.kill9()  # a crash leaves the folder behind (a clean stop removes it)
    assert worker_pids_with_counters(server)
    server.start()  # the master empties the folder at start: nothing is counted twice
    samples = scrape(server)
    assert value(samples, "reactor_webhooks_total", event="meeting.started", outcome="accepted") == 0
    assert server.post(event(meeting_id="99")).status_code == 200
    scrape_when(server, "reactor_webhooks_total", 1, event="meeting.started", outcome="accepted")


def test_outbox_gauges_are_right_on_postgresql_with_two_instances(make_server):
    url = migrated_postgres_schema()
    env = {"DATABASE_URL": url, "REACTOR_DISPATCH": "off"}  # nothing dispatches: the jobs stay pending
    a = make_server(env=env, sub="a")
    b = make_server(env=env, sub="b")
    ten_minutes_ago = int((time.time() - 600) * 1000)
    assert a.post(event(meeting_id="1", ts_ms=ten_minutes_ago)).status_code == 200
    assert a.post(event(meeting_id="2")).status_code == 200
    assert b.post(event(meeting_id="3")).status_code == 200
    a.settle()
    for server in (a, b):  # each instance reads the shared store, not its own memory
        samples = scrape(server)
        assert value(samples, "reactor_outbox_jobs", status="pending") == 3
        assert value(samples, "reactor_outbox_jobs", status="done") == 0
        assert 600 <= value(samples, "reactor_outbox_oldest_pending_seconds") < 700
    # but each machine counts its own webhooks (its own multiprocess folder)
    scrape_when(a, "reactor_webhooks_total", 2, event="meeting.started", outcome="accepted")
    scrape_when(b, "reactor_webhooks_total", 1, event="meeting.started", outcome="accepted")


def test_the_metrics_token_is_required_when_set_and_never_logged(make_server):
    token = "metrics-token-5be1c0"
    server = make_server(env={"REACTOR_METRICS_TOKEN": token})
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 401
    assert requests.get(server.url + "/metrics", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert requests.get(server.url + "/metrics", headers={"Authorization": token}, timeout=10).status_code == 401
    assert "reactor_outbox_jobs" in str(scrape(server, token))
    assert token not in server.logs()


def test_metrics_off_serves_no_page_and_counts_nothing(make_server):
    server = make_server(env={"REACTOR_METRICS": "0"})
    assert server.post(event()).status_code == 200
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 404
    assert not metrics_folder(server).exists() or not list(metrics_folder(server).glob("*.db"))


def test_a_clean_stop_removes_reactors_own_metrics_folder(make_server):
    server = make_server()
    assert server.post(event()).status_code == 200
    assert metrics_folder(server).is_dir()
    server.stop()
    assert not metrics_folder(server).exists()


def test_queued_durations_land_in_the_buckets_observe_would_put_them_in():
    """The flush writes a queue of durations as one increment per bucket and one of the sum: the same
    exposition as observe() of each, bounds included (a value equal to a bound is in that bound's bucket)."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from reactor.metrics import WEBHOOK_BUCKETS, _observe_all

    values = [0.0, 0.0005, 0.001, 0.0011, 0.0025, 0.003, 0.01, 0.02, 1.0, 5.0, 7.0, 100.0, 0.001]
    one, batched = CollectorRegistry(), CollectorRegistry()
    each = Histogram("reactor_seconds", "each", buckets=WEBHOOK_BUCKETS, registry=one)
    for value in values:
        each.observe(value)
    _observe_all(Histogram("reactor_seconds", "each", buckets=WEBHOOK_BUCKETS, registry=batched), values)
    drop_created = lambda text: [line for line in text.decode().splitlines() if "_created" not in line]  # noqa: E731
    assert drop_created(generate_latest(batched)) == drop_created(generate_latest(one))
    assert 'reactor_seconds_bucket{le="0.001"} 4.0' in generate_latest(batched).decode()
