"""Scale-out on PostgreSQL: two gunicorn instances and a worker on one database, as on a PaaS."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.backends import fresh_postgres_schema, migrate
from tests.conftest import TOWN_HALL_RULES, Worker, event, run_cli, signed_headers
from tests.zoom_standin import Reply

PLAIN = TOWN_HALL_RULES + """
  - name: Plain start
    on: meeting.started
    when: {topic: {glob: "Plain*"}}
    do: [livestream.start]
"""


@pytest.fixture
def pg_url():
    return fresh_postgres_schema()


def cluster(make_server, zoom, url, workers=1, env=None):
    migrate(url)
    env = {"DATABASE_URL": url, "WEB_CONCURRENCY": "2", **(env or {})}
    a = make_server(PLAIN, zoom=zoom, env=env, sub="a")
    b = make_server(PLAIN, zoom=zoom, env=env, sub="b")
    started = [Worker(a) for _ in range(workers)]
    return a, b, started


def post_raw(url, body):
    raw = json.dumps(body).encode()
    return requests.post(url + "/webhooks/zoom", data=raw, headers=signed_headers(raw), timeout=10)


def test_web_refuses_to_start_on_an_unmigrated_database(make_server, pg_url):
    server = make_server(PLAIN, env={"DATABASE_URL": pg_url}, start=False)
    server.start(wait=False)
    assert server.proc.wait(30) != 0
    assert "run `python -m reactor migrate`" in server.logs()


def test_burst_over_two_instances_gives_one_call_per_meeting(make_server, zoom, pg_url):
    a, b, workers = cluster(make_server, zoom, pg_url, env={"REACTOR_ZOOM_RATE": "1000"})
    try:
        ids = [str(20_000_000_000 + n) for n in range(300)]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: post_raw((a, b)[int(i) % 2].url, event(meeting_id=i, topic="Plain")),
                                    ids))
        assert all(r.status_code == 200 for r in answers)
        zoom.wait_for(300, timeout=60)
        time.sleep(1.0)
        paths = [c.path for c in zoom.api_calls()]
        assert len(paths) == 300 and len(set(paths)) == 300
    finally:
        [w.stop() for w in workers]


def test_same_delivery_at_two_instances_at_once_is_acted_on_once(make_server, zoom, pg_url):
    a, b, workers = cluster(make_server, zoom, pg_url, workers=0)
    body = event(meeting_id="31000000000", topic="Plain")
    barrier = threading.Barrier(2)
    answers = []

    def go(server):
        barrier.wait()
        answers.append(server.outcome(post_raw(server.url, body))["status"])

    threads = [threading.Thread(target=go, args=(s,)) for s in (a, b, a, b)[:2]]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(answers) == ["accepted", "duplicate"]
    zoom.wait_for(1)
    time.sleep(1.0)
    assert len(zoom.api_calls()) == 1


def test_start_and_stop_at_different_instances_reach_zoom_in_event_order(make_server, zoom, pg_url):
    a, b, workers = cluster(make_server, zoom, pg_url)
    try:
        for n in range(10):
            mid = str(32_000_000_000 + n)
            t0 = int(time.time() * 1000)
            start = event(meeting_id=mid, topic="Town Hall", ts_ms=t0)
            stop = event("meeting.ended", meeting_id=mid, topic="Town Hall", ts_ms=t0 + 5)
            assert post_raw(a.url, start).status_code == 200
            assert post_raw(b.url, stop).status_code == 200
        zoom.wait_for(20, timeout=30)
        by_meeting = {}
        for call in zoom.api_calls():
            by_meeting.setdefault(call.path, []).append(call.body["action"])
        assert all(actions == ["start", "stop"] for actions in by_meeting.values()), by_meeting
    finally:
        [w.stop() for w in workers]


def test_kill9_of_one_instance_the_survivors_complete_its_work(make_server, zoom, pg_url):
    zoom.script("/v2/meetings/", [Reply(503, {"message": "down"})] * 30)
    a, b, workers = cluster(make_server, zoom, pg_url, workers=0)
    ids = [str(33_000_000_000 + n) for n in range(20)]
    for mid in ids:
        assert post_raw(a.url, event(meeting_id=mid, topic="Plain")).status_code == 200
    zoom.wait_for(10)
    a.kill9()
    zoom.clear_scripts()
    b.wait_jobs(20, statuses=("done",), timeout=60)
    assert set(ids) <= {c.path.split("/")[3] for c in zoom.api_calls()}


def test_postgres_restart_under_load_loses_nothing(make_server, zoom, pg_url):
    a, b, workers = cluster(make_server, zoom, pg_url)
    acked, statuses, stop = [], [], threading.Event()

    def load(server, offset):
        n = 0
        while not stop.is_set():
            mid = str(34_000_000_000 + offset + n)
            n += 1
            try:
                r = post_raw(server.url, event(meeting_id=mid, topic="Plain"))
                statuses.append(r.status_code)
                if r.status_code == 200:
                    acked.append(mid)
            except requests.RequestException:
                statuses.append("error")
            time.sleep(0.01)

    threads = [threading.Thread(target=load, args=(s, off)) for s, off in ((a, 0), (b, 500_000))]
    try:
        [t.start() for t in threads]
        time.sleep(1.0)
        cluster_name = os.listdir("/etc/postgresql")[0]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster_name, "main", "restart"], check=True,
                       timeout=120, capture_output=True)
        time.sleep(3.0)
    finally:
        stop.set()
        [t.join() for t in threads]
    assert set(statuses) <= {200, 503, "error"}, set(statuses)
    before = len(acked)
    # after the restart, new deliveries are accepted again and dispatch resumes by itself
    deadline = time.time() + 30
    while time.time() < deadline:
        if post_raw(a.url, event(meeting_id=str(35_000_000_000 + len(acked)), topic="Plain")).status_code == 200:
            acked.append(str(35_000_000_000 + len(acked)))
            break
        time.sleep(0.5)
    assert len(acked) == before + 1, "accepting again after the restart"
    deadline = time.time() + 60
    while time.time() < deadline and not set(acked) <= {c.path.split("/")[3] for c in zoom.api_calls()}:
        time.sleep(0.2)
    called = {c.path.split("/")[3] for c in zoom.api_calls()}
    assert set(acked) <= called, f"{len(set(acked) - called)} acknowledged deliveries never reached Zoom"
    [w.stop() for w in workers]


def test_history_says_to_migrate_on_an_unmigrated_database(pg_url):
    result = run_cli("history", env={"DATABASE_URL": pg_url})
    assert result.returncode != 0 and "run `python -m reactor migrate`" in result.stderr
    migrate(pg_url)
    result = run_cli("history", env={"DATABASE_URL": pg_url})
    assert result.returncode == 0 and "no deliveries recorded" in result.stdout


def test_a_dedicated_worker_is_woken_by_the_commit_not_by_its_poll(make_server, zoom, pg_url):
    """Web processes that do not dispatch NOTIFY at commit; the worker calls Zoom within moments,
    not at its next poll (every 0.5 s)."""
    a, _, workers = cluster(make_server, zoom, pg_url, env={"REACTOR_DISPATCH": "off"})
    try:
        assert post_raw(a.url, event(meeting_id="24000000000", topic="Plain")).status_code == 200
        zoom.wait_for(1, timeout=30)  # the worker is up
        waits = []
        for n in range(1, 11):
            time.sleep(0.05 * n % 0.35)  # land at different points of the poll cycle
            posted = time.time()
            assert post_raw(a.url, event(meeting_id=str(24_000_000_000 + n), topic="Plain")).status_code == 200
            call = zoom.wait_for(n + 1, timeout=10)[-1]
            waits.append(call.at - posted)
        assert statistics.median(waits) < 0.15, f"webhook to Zoom call, seconds: {sorted(waits)}"
    finally:
        [w.stop() for w in workers]
