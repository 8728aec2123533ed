"""The README's promises that a refactor could break silently, each with a test that fails when it does.

Each test names the promise; the README's "Promises and how we know" table points here.
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import formatdate

import pytest
import requests

from reactor.retry_policy import backoff
from reactor.zoom import parse_retry_after
from tests.conftest import event, run_cli, signed_headers
from tests.syscalls import Trace, children, flushes_before_each_200
from tests.zoom_standin import Reply

NO_RULES = "rules: []\n"  # accepting stores the delivery and nothing else: no jobs, no dispatcher writes
FSYNCS = ("fdatasync", "fsync")


# -- an acknowledged delivery is on the disk before its 200 ------------------------------------------------


def test_each_acknowledged_delivery_is_fsynced_before_its_200(make_server, tmp_path):
    """A SIGKILL keeps the page cache, so only the system calls show that a commit reached the disk:
    for each sequential delivery, an fsync of the database happens after the previous answer and
    before this delivery's 200 is sent (synchronous=FULL on the connection that accepts)."""
    server = make_server(NO_RULES)
    trace = Trace(children(server.proc.pid), (*FSYNCS, "sendto"), tmp_path / "strace.txt")
    try:
        for n in range(20):
            response = server.post(event(meeting_id=str(51_000_000_000 + n)))
            assert response.status_code == 200 and response.json()["status"] == "accepted"
    finally:
        calls = trace.stop()
    fsyncs_before_each_200 = flushes_before_each_200(calls, lambda call: call.call in FSYNCS)
    assert len(fsyncs_before_each_200) == 20, f"saw {len(fsyncs_before_each_200)} acknowledgements in the trace"
    assert min(fsyncs_before_each_200) >= 1, f"fsyncs before each 200: {fsyncs_before_each_200}"


def test_concurrent_accepts_share_one_commit_counted_in_fsyncs(make_server, tmp_path):
    """Group commit: concurrent deliveries in one process share one commit, so there are far fewer
    fsyncs than acknowledged deliveries (each delivery committed alone costs one fsync at least)."""
    server = make_server(NO_RULES)
    trace = Trace(children(server.proc.pid), FSYNCS, tmp_path / "strace.txt")
    answers: list[int] = []
    try:
        def post(offset):
            session = requests.Session()
            for n in range(8):
                raw = json.dumps(event(meeting_id=str(52_000_000_000 + offset * 100 + n))).encode()
                answers.append(session.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw),
                                            timeout=10).status_code)

        threads = [threading.Thread(target=post, args=(k,)) for k in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        fsyncs = [c for c in trace.stop() if c.call in FSYNCS]
    assert answers == [200] * 128
    assert counts(server)["deliveries"] == 128
    assert len(fsyncs) <= 0.75 * 128, f"{len(fsyncs)} fsyncs for 128 concurrent deliveries: commits are not shared"


# -- a late redelivery does not start a stream blindly ------------------------------------------------------


def test_an_event_85_minutes_old_is_dead_at_the_deadline_and_retry_sends_it_once(make_server, zoom):
    server = make_server(zoom=zoom)
    late = event(meeting_id="53000000000", topic="Town Hall", ts_ms=int((time.time() - 85 * 60) * 1000))
    response = server.post(late)  # signed now: Zoom redelivering an old event
    assert server.outcome(response)["actions"] == 1
    [job] = server.wait_jobs(1)
    assert job["status"] == "dead", job
    assert "older than REACTOR_ACTION_DEADLINE" in job["last_message"]
    assert "python -m reactor retry ACTION --force" in job["last_message"]
    assert zoom.api_calls() == [], "no stream started blindly"

    refused = run_cli("retry", str(job["id"]), env={"DATABASE_URL": server.env["DATABASE_URL"]})
    assert refused.returncode == 1 and "past its deadline" in refused.stdout, "an operator must force a late start"
    result = run_cli("retry", str(job["id"]), "--force", env={"DATABASE_URL": server.env["DATABASE_URL"]})
    assert result.returncode == 0 and "re-queued 1 action" in result.stdout, result.stderr
    zoom.wait_for(1)
    server.wait_jobs(1, statuses=("done",))
    time.sleep(1.0)
    assert len(zoom.api_calls()) == 1, "retry ID sends it exactly once"


# -- leases of a killed process are released within 10 s on the same host -----------------------------------


def test_the_lease_of_a_killed_process_is_released_by_the_reaper_not_the_60s_expiry(make_server, zoom):
    zoom.script("/v2/meetings/54000000000/", [Reply(204, delay=30)])  # the first call is certainly in flight
    server = make_server(zoom=zoom)
    assert server.post(event(meeting_id="54000000000", topic="Town Hall")).status_code == 200
    zoom.wait_for(1)
    [job] = server.jobs()
    assert job["status"] == "running"
    killed = time.time()
    server.kill9()
    server.start()
    again = zoom.wait_for(2, timeout=25)[1]
    # heartbeat silent for 10 s, looked at every 2 s, plus the restart: well before the 60 s lease expiry
    assert again.at - killed <= 15, f"the call was made again {again.at - killed:.1f} s after the kill"
    assert server.wait_jobs(1, statuses=("done",))[0]["attempt_log"][-1]["outcome"] == "done"


# -- duplicate keys ----------------------------------------------------------------------------------------


def test_dedup_keys_by_what_the_event_is_else_by_the_raw_body(make_server):
    """The keying of README "Duplicates". If the keying changes on purpose, change this test with it."""
    server = make_server()
    first = event(uuid_="instance-55-a", topic="Town Hall")
    assert server.outcome(server.post(first))["status"] == "accepted"
    later_ts = {**first, "event_ts": first["event_ts"] + 4321}
    assert server.outcome(server.post(later_ts))["status"] == "duplicate", "same started event + uuid, another event_ts"
    assert server.outcome(server.post(event("meeting.ended", uuid_="instance-55-a")))["status"] == "accepted"
    assert server.outcome(server.post(event(uuid_="instance-55-b", topic="Town Hall")))["status"] == "accepted"

    joined = event("meeting.participant_joined", uuid_="instance-55-a",
                   participant={"user_id": "16778240", "user_name": "Ada", "email": "ada@example.org"})
    raw = json.dumps(joined).encode()
    one_byte = raw.replace(b'"Ada"', b'"Adb"')
    assert len(one_byte) == len(raw) and sum(a != b for a, b in zip(raw, one_byte)) == 1
    assert server.outcome(server.post(None, raw=raw))["status"] == "accepted"
    assert server.outcome(server.post(None, raw=raw))["status"] == "duplicate", "the same bytes again"
    assert server.outcome(server.post(None, raw=one_byte))["status"] == "accepted", \
        "without a join_time a participant event has no identity: one byte changed is a new event"
    timed = event("meeting.participant_joined", uuid_="instance-55-a",
                  participant={"user_id": "16778240", "user_name": "Ada", "join_time": "2026-11-26T17:01:00Z"})
    raw = json.dumps(timed).encode()
    assert server.outcome(server.post(None, raw=raw))["status"] == "accepted"
    assert server.outcome(server.post(None, raw=raw.replace(b'"Ada"', b'"Adb"')))["status"] == "duplicate", \
        "the same participant joining at the same time, redelivered with other bytes, is the same event"
    assert counts(server)["deliveries"] == 6


# -- bounds: backoff, Retry-After, 401 before parsing -------------------------------------------------------


def test_backoff_is_1s_doubling_to_a_60s_cap_with_20_percent_jitter():
    bases = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    for failures, base in enumerate(bases, start=1):
        assert backoff(failures, rng=lambda: 0.0) == pytest.approx(0.8 * base)
        assert backoff(failures, rng=lambda: 0.5) == pytest.approx(base)
        assert backoff(failures, rng=lambda: 0.999999) == pytest.approx(1.2 * base, rel=1e-5)
    assert backoff(500, rng=lambda: 0.999999) <= 72.0, "capped however many failures"
    samples = [backoff(3) for _ in range(4000)]  # the real random source: 4 s +- 20 %
    assert 3.2 <= min(samples) < 3.3 and 4.7 < max(samples) <= 4.8, (min(samples), max(samples))


def test_retry_after_is_read_as_seconds_http_date_or_iso_time():
    now = 1_795_000_000.0
    at = datetime.fromtimestamp(now, timezone.utc)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 7 ", now) == 7.0
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now) == pytest.approx(90, abs=1)
    assert parse_retry_after((at + timedelta(seconds=45)).strftime("%Y-%m-%dT%H:%M:%SZ"), now) == pytest.approx(45)
    assert parse_retry_after((at + timedelta(seconds=45)).isoformat(), now) == pytest.approx(45)
    berlin = (at + timedelta(seconds=30)).astimezone(timezone(timedelta(hours=2)))
    assert parse_retry_after(berlin.isoformat(), now) == pytest.approx(30), "an ISO time with its offset"
    assert parse_retry_after((at + timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%S"), now) == pytest.approx(20), \
        "an ISO time without offset is UTC"
    assert parse_retry_after(formatdate(now - 100, usegmt=True), now) == 0.0, "a date in the past: now"
    assert parse_retry_after(None, now) is None and parse_retry_after("", now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("\u00b2", now) is None, "a digit only to str.isdigit(): float() refuses it"


def test_429_without_retry_after_waits_30s_and_5xx_waits_the_jittered_second(make_server, zoom):
    zoom.script("/v2/meetings/56000000001/", [Reply(429, {"code": 429, "message": "Too many requests"})])
    zoom.script("/v2/meetings/56000000002/", [Reply(503, {"message": "busy"})])
    server = make_server(zoom=zoom)
    for n in (1, 2):
        assert server.post(event(meeting_id=f"5600000000{n}", topic="Town Hall")).status_code == 200
    server.wait_jobs(1, statuses=("done",))
    jobs = {j["action"]["path"].split("/")[2]: j for j in server.jobs()}
    limited = jobs["56000000001"]["attempt_log"][0]
    assert limited["outcome"] == "rate_limited" and "retry after 30 s" in limited["message"]
    waited = limited["next_at"] - limited["at"] - limited["duration_ms"] / 1000
    assert 29.9 <= waited <= 30.1, f"429 without Retry-After: retry {waited:.2f} s after the answer"
    assert jobs["56000000001"]["status"] == "pending"

    failed, done = jobs["56000000002"]["attempt_log"]
    assert failed["outcome"] == "retry" and done["outcome"] == "done"
    delay = failed["next_at"] - failed["at"] - failed["duration_ms"] / 1000
    assert 0.8 - 0.01 <= delay <= 1.2 + 0.01, f"first 5xx retry {delay:.3f} s after the answer"
    assert done["at"] >= failed["next_at"] - 0.01


GARBAGE = [b"\x00\xff not json at all", b"{", b"[1, 2, 3]", b'{"no": "event"}', b"[" * 5000, b'{"event": NaN}', b""]


def test_unsigned_garbage_is_exactly_401_and_stores_nothing(make_server):
    """Verification comes before parsing: garbage that is not signed is a 401, never a 400."""
    server = make_server()
    for raw in GARBAGE:
        attempts = [
            {"content-type": "application/json"},
            {"content-type": "application/json", "x-zm-request-timestamp": str(int(time.time())),
             "x-zm-signature": "v0=" + "0" * 64},
            signed_headers(raw, secret="not-the-secret"),
            signed_headers(raw, timestamp=int(time.time()) - 7300),  # outside the two-hour window
        ]
        for headers in attempts:
            response = requests.post(server.url + "/webhooks/zoom", data=raw, headers=headers, timeout=10)
            assert response.status_code == 401, (raw[:20], headers, response.status_code, response.text)
    assert counts(server)["deliveries"] == 0


def counts(server) -> dict:
    server.settle()
    store = server.store()
    try:
        return store.counts()
    finally:
        store.close()


def test_the_job_a_call_comes_from_is_on_the_disk_before_the_call_leaves(make_server, zoom, tmp_path):
    """The ingest (the job made, the inbox row deleted) and the claim commit without waiting for the disk; a
    crash of the machine after the call would then bring the inbox row back, and ingesting it again would
    send the call twice. So the extend right before each call is committed with an fsync, which carries
    them: between each delivery's 200 and its PATCH, an fsync of the database."""
    server = make_server(zoom=zoom, env={"WEB_CONCURRENCY": "1"})
    trace = Trace(children(server.proc.pid), (*FSYNCS, "sendto"), tmp_path / "strace.txt", strlen=120)
    try:
        for n in range(5):
            response = server.post(event(meeting_id=str(57_000_000_000 + n), topic="Town Hall"))
            assert response.status_code == 200
            zoom.wait_for(n + 1)
    finally:
        calls = trace.stop()
    between, flushes, answered = [], 0, False
    for call in calls:
        if call.call in FSYNCS:
            flushes += 1
        elif call.call == "sendto" and r'\"status\":\"accepted' in call.args:
            flushes, answered = 0, True
        elif call.call == "sendto" and "PATCH /v2/meetings/" in call.args:
            if answered:
                between.append(flushes)
            answered = False
    assert len(between) == 5, f"saw {len(between)} answer-then-call pairs in the trace"
    assert min(between) >= 1, f"fsyncs between each 200 and its call: {between}"
