"""The inbox between the 200 and the ingest: with no ingester for a while, under load, nothing
acknowledged is lost, each delivery acts once, and the backlog drains; a crash between the two
steps leaves the rows for the next ingester; a full inbox answers 503 and changes nothing.

REACTOR_INGEST=off makes the web processes only acknowledge: the ingester is then the worker's,
which the tests start late, kill, or never start."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.backends import fresh_postgres_schema, migrate
from tests.conftest import Worker, event, log_lines, signed_headers, wait_until
from tests.zoom_standin import ZoomStandIn

STUCK = 4.0  # seconds the ingest stays held up after the SIGTERM: longer than a worker takes to stop without waiting
ACK_ONLY = {"REACTOR_INGEST": "off", "REACTOR_DISPATCH": "off", "REACTOR_ZOOM_RATE": "1000"}


def post_many(server, bodies: list[dict], threads: int = 8) -> list[requests.Response]:
    def post(body):
        raw = json.dumps(body).encode()
        return requests.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw), timeout=10)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, bodies))


def backlog(server) -> int:
    store = server.store()
    try:
        return store.inbox_backlog()
    finally:
        store.close()


def town_halls(n: int, first: int = 61_000_000_000) -> list[dict]:
    return [event(meeting_id=str(first + k), uuid_=f"inbox-{first + k}", topic="Town Hall") for k in range(n)]


def test_with_no_ingester_under_load_nothing_is_lost_and_the_backlog_drains_once(make_server, zoom):
    server = make_server(env=ACK_ONLY, zoom=zoom)
    answers = post_many(server, town_halls(200))
    assert [a.status_code for a in answers] == [200] * 200
    numbers = [a.json()["delivery"] for a in answers]
    assert len(set(numbers)) == 200
    time.sleep(1.0)
    assert server.history(settle=False) == [] and backlog(server) == 200, "acknowledged, waiting in the inbox"
    assert zoom.api_calls() == []

    worker = Worker(server)  # the ingester arrives late
    try:
        zoom.wait_for(200, timeout=60)
        history = server.history(limit=1000)
        assert sorted(d["id"] for d in history) == sorted(numbers), "each 200's number names its delivery"
        assert backlog(server) == 0
        time.sleep(1.0)
        paths = [c.path for c in zoom.api_calls()]
        assert len(paths) == 200 and len(set(paths)) == 200, "one call per meeting, none twice"
    finally:
        worker.stop()


def test_a_crash_between_the_200_and_the_ingest_leaves_the_deliveries_to_the_next_process(make_server, zoom):
    server = make_server(env={"REACTOR_INGEST": "off", "REACTOR_ZOOM_RATE": "1000"}, zoom=zoom)
    answers = post_many(server, town_halls(40, first=62_000_000_000))
    assert [a.status_code for a in answers] == [200] * 40
    server.kill9()  # acknowledged, in the inbox, never ingested
    restarted = make_server(env={"REACTOR_ZOOM_RATE": "1000", "DATABASE_URL": server.env["DATABASE_URL"]},
                            zoom=zoom, sub="again")
    zoom.wait_for(40, timeout=60)  # its ingester sweeps rows nobody took within a few seconds
    assert sorted(d["id"] for d in restarted.history(limit=1000)) == sorted(a.json()["delivery"] for a in answers)
    time.sleep(1.0)
    assert len({c.path for c in zoom.api_calls()}) == len(zoom.api_calls()) == 40


def test_a_graceful_stop_ingests_what_its_process_acknowledged_before_it_exits(make_server, zoom):
    """A deploy's SIGTERM while the ingest is held up (PostgreSQL, the deliveries table locked): each worker
    finishes its ingest and stores what it was handed on its way out, once the lock is gone, so nothing is
    left in the inbox for another process's sweep (here there is none)."""
    import psycopg

    url = fresh_postgres_schema()
    migrate(url)
    server = make_server(env={"DATABASE_URL": url, "REACTOR_ZOOM_RATE": "1000"}, zoom=zoom)
    with psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE deliveries IN EXCLUSIVE MODE")
        answers = post_many(server, town_halls(60, first=66_000_000_000))
        assert [a.status_code for a in answers] == [200] * 60 and backlog(server) == 60
        stopping = threading.Thread(target=server.stop)  # SIGTERM, as a PaaS stops a dyno
        stopping.start()
        time.sleep(STUCK)
        blocker.rollback()  # the lock goes while the workers are stopping
    stopping.join(30)
    assert server.proc.returncode == 0
    assert backlog(server) == 0, "acknowledged deliveries were left in the inbox"
    assert sorted(d["id"] for d in server.history(settle=False, limit=1000)) == sorted(
        a.json()["delivery"] for a in answers)


def test_a_duplicate_waiting_in_the_inbox_is_stored_once_and_its_number_names_the_first(make_server, zoom):
    server = make_server(env=ACK_ONLY, zoom=zoom)
    [body] = town_halls(1, first=63_000_000_000)
    first, again = server.post(body), server.post(body)
    assert first.json()["delivery"] != again.json()["delivery"]
    worker = Worker(server)
    try:
        assert server.outcome(again) == {"status": "duplicate", "delivery": first.json()["delivery"], "actions": 0}
        zoom.wait_for(1)
        time.sleep(0.5)
        assert len(zoom.api_calls()) == 1 and len(server.history()) == 1
    finally:
        worker.stop()


def test_a_full_inbox_answers_503_alerts_and_stores_nothing_until_it_drains(make_server, zoom):
    chat = ZoomStandIn()  # a chat webhook (REACTOR_ALERT_URL), played by a second stand-in
    server = make_server(env={**ACK_ONLY, "REACTOR_INBOX_LIMIT": "100", "WEB_CONCURRENCY": "1",
                              "REACTOR_ALERT_URL": chat.url + "/hooks/inbox"}, zoom=zoom)
    assert {a.status_code for a in post_many(server, town_halls(101, first=64_000_000_000))} == {200}
    time.sleep(2.5)  # the backlog is counted every 2 s, off the request path
    refused = server.post(town_halls(1, first=64_100_000_000)[0])
    assert refused.status_code == 503 and "Zoom will retry" in refused.json()["error"], refused.text
    assert backlog(server) == 101
    worker = Worker(server)  # it ingests, and sends the alert the web process queued
    try:
        wait_until(lambda: backlog(server) == 0, timeout=30)
        time.sleep(2.5)
        assert server.post(town_halls(1, first=64_100_000_000)[0]).status_code == 200
        [alert] = chat.wait_for(1, "/hooks/inbox", timeout=30)
        assert "more than 100 acknowledged deliveries wait to be ingested" in alert.body["text"], alert.body
    finally:
        worker.stop()
        chat.close()


def test_postgresql_an_ingest_held_up_by_a_lock_under_load_loses_nothing(make_server, zoom):
    """Two instances on one PostgreSQL; the deliveries table is locked for a while (a long migration, a
    stuck transaction): the webhooks are still acknowledged, then every one is ingested once."""
    import psycopg

    url = fresh_postgres_schema()
    migrate(url)
    env = {"DATABASE_URL": url, "REACTOR_ZOOM_RATE": "1000"}
    a, b = make_server(env=env, zoom=zoom, sub="a"), make_server(env=env, zoom=zoom, sub="b")
    with psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE deliveries IN EXCLUSIVE MODE")
        bodies = town_halls(120, first=65_000_000_000)
        answers = post_many(a, bodies[:60]) + post_many(b, bodies[60:])
        assert [r.status_code for r in answers] == [200] * 120, "acknowledged while the ingest is held up"
        assert backlog(a) >= 100 and zoom.api_calls() == []
        blocker.rollback()
    zoom.wait_for(120, timeout=60)
    assert sorted(d["id"] for d in a.history(limit=1000)) == sorted(r.json()["delivery"] for r in answers)
    time.sleep(1.0)
    assert len({c.path for c in zoom.api_calls()}) == len(zoom.api_calls()) == 120


def test_at_a_steady_200_a_second_each_delivery_is_stored_at_once_even_after_a_burst(make_server):
    """Under load the ingester gathers for 0.1 s, so that one transaction takes what arrived meanwhile; at a
    steady 200 deliveries a second (under GATHER_ABOVE) it must not: a burst of 16 at once, then one every
    5 ms, and every paced delivery is stored within milliseconds (the log's stored_ms), not gathered."""
    server = make_server(env={"WEB_CONCURRENCY": "1", "REACTOR_DISPATCH": "off"})
    assert all(r.status_code == 200 for r in post_many(server, town_halls(16), threads=16))
    session, paced = requests.Session(), town_halls(200, first=62_000_000_000)
    started = time.monotonic()
    for k, body in enumerate(paced):
        time.sleep(max(0.0, started + k * 0.005 - time.monotonic()))
        raw = json.dumps(body).encode()
        assert session.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw), timeout=10).ok
    wait_until(lambda: len(log_lines(server, "accepted")) == 216, timeout=10)
    delays = sorted(line["stored_ms"] for line in log_lines(server, "accepted")
                    if line["target"].startswith("meetings/62"))
    assert len(delays) == 200
    assert delays[100] < 20, f"median {delays[100]} ms from the 200 to the ingest at 200/s: gathered"
