"""Faults: kill -9 at random moments, and Zoom failing in every way it can."""
from __future__ import annotations

import json
import random
import sqlite3
import threading
import time

import requests

from tests.conftest import event, free_port, signed_headers
from tests.zoom_standin import Reply

PLAIN = """
rules:
  - name: Plain start
    on: meeting.started
    when: {topic: {glob: "Plain*"}}
    do: [livestream.start]
"""


def test_kill9_at_random_moments_loses_no_acknowledged_delivery(make_server, zoom):
    rng = random.Random(7)
    zoom.chaos = lambda call: (Reply(503, {"message": "chaos"}) if rng.random() < 0.2 else
                               Reply(204, delay=0.3) if rng.random() < 0.1 else None)
    server = make_server(PLAIN, zoom=zoom, env={"REACTOR_ZOOM_RATE": "1000"})
    ids = [str(40_000_000_000 + n) for n in range(500)]
    acked: list[str] = []
    done = threading.Event()

    def deliver():
        session = requests.Session()
        for mid in ids:
            raw = json.dumps(event(meeting_id=mid, topic="Plain", uuid_=f"u-{mid}")).encode()
            while True:  # like Zoom: redeliver until acknowledged
                try:
                    r = session.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw), timeout=5)
                    if r.status_code == 200:
                        acked.append(mid)
                        break
                    assert r.status_code == 503, r.text
                except requests.RequestException:
                    session = requests.Session()
                time.sleep(0.05)
        done.set()

    poster = threading.Thread(target=deliver)
    poster.start()
    # Kill at random points *of the stream* (after a random count of acknowledgements, then a
    # random instant), so the kills land inside it however fast this machine delivers.
    thresholds = sorted(rng.sample(range(30, 470), 4))
    kills = 0
    for threshold in thresholds:
        while len(acked) < threshold and not done.is_set():
            time.sleep(0.01)
        if done.is_set():
            break
        time.sleep(rng.uniform(0, 0.2))
        server.kill9()
        kills += 1
        server.start()
    poster.join(120)
    assert kills == 4, f"only {kills} kill(s) fell inside the stream of deliveries"
    assert sorted(set(acked)) == ids
    zoom.chaos = None
    jobs = server.wait_jobs(500, statuses=("done",), timeout=120)
    deliveries = server.history(limit=10000)
    assert len(deliveries) == 500, "each acknowledged delivery stored once"
    assert all(len(d["jobs"]) == 1 for d in deliveries), "no delivery without its action, none with two"
    assert all(j["status"] == "done" for j in jobs)
    reached = {c.path.split("/")[3] for c in zoom.api_calls() if c.body == {"action": "start", "settings": {}}}
    assert set(ids) <= reached


def test_connection_refused_retries_then_dead_at_the_deadline(make_server, zoom):
    closed = free_port()
    server = make_server(PLAIN, zoom=zoom, env={"ZOOM_API_URL": f"http://127.0.0.1:{closed}/v2",
                                               "REACTOR_ACTION_DEADLINE": "4"})
    server.post(event(meeting_id="41000000000", topic="Plain"))
    [job] = server.wait_jobs(1, timeout=20)
    assert job["status"] == "dead" and "gave up at the deadline" in job["last_message"]
    outcomes = [a["outcome"] for a in job["attempt_log"]]
    assert outcomes[0] == "retry" and outcomes[-1] == "dead" and len(outcomes) >= 2
    assert "cannot reach Zoom" in job["attempt_log"][0]["message"]


def test_reset_mid_response_and_invalid_json_answers(make_server, zoom):
    zoom.script("/v2/meetings/42000000001/", [Reply(reset=True)])
    zoom.script("/v2/meetings/42000000002/", [Reply(400, "<html>bad gateway</html>")])
    zoom.script("/v2/meetings/42000000003/", [Reply(200, "not json at all")])
    server = make_server(PLAIN, zoom=zoom)
    for n in (1, 2, 3):
        server.post(event(meeting_id=f"4200000000{n}", topic="Plain"))
    jobs = {j["action"]["path"].split("/")[2]: j for j in server.wait_jobs(3, timeout=20)}
    reset, bad, odd = jobs["42000000001"], jobs["42000000002"], jobs["42000000003"]
    assert [a["outcome"] for a in reset["attempt_log"]] == ["retry", "done"]
    assert bad["status"] == "dead" and "not JSON" in bad["last_message"] and "bad gateway" in bad["last_message"]
    assert odd["status"] == "done"


def test_stalled_zoom_calls_do_not_stop_the_dispatcher(make_server, zoom):
    for n in range(3):
        zoom.script(f"/v2/meetings/4300000000{n}/", [Reply(204, delay=10)])
    server = make_server(PLAIN, zoom=zoom, env={"WEB_CONCURRENCY": "1"})
    for n in range(3):
        server.post(event(meeting_id=f"4300000000{n}", topic="Plain"))
    zoom.wait_for(3)
    started = time.time()
    for n in range(20):
        server.post(event(meeting_id=f"4400000{n:04d}", topic="Plain"))
    server.wait_jobs(20, statuses=("done",), timeout=30)
    assert time.time() - started < 5, "other work drained while three calls stalled for 10 s"
    assert server.wait_jobs(23, statuses=("done",), timeout=30)


def test_a_calls_outcome_refused_at_first_by_the_database_is_recorded_once_it_is_free_and_not_sent_again(
        make_server, zoom):
    """Zoom answered 204 while another process held the SQLite file's write lock past the dispatcher's 2 s
    wait. The outcome used to be dropped: the job stayed 'running', to be claimed and sent again once its
    lease ran out (60 s). It is recorded once the lock is free, and Zoom gets the call once."""
    server = make_server(PLAIN, zoom=zoom, env={"WEB_CONCURRENCY": "1", "REACTOR_ZOOM_RATE": "1000"})
    holder = sqlite3.connect(str(server.db), timeout=10, isolation_level=None, check_same_thread=False)
    held: list[float] = []

    def hold_the_file_as_zoom_answers(call):
        if not held:
            holder.execute("BEGIN IMMEDIATE")
            held.append(time.time())
            threading.Timer(3.5, lambda: holder.execute("COMMIT")).start()
        return None  # the call is answered 204

    zoom.chaos = hold_the_file_as_zoom_answers
    try:
        assert server.post(event(meeting_id="41000000001", topic="Plain")).status_code == 200
        zoom.wait_for(1)
        deadline = time.time() + 15
        while True:
            [(status, attempts)] = sqlite3.connect(str(server.db), timeout=10).execute(
                "SELECT j.status, (SELECT count(*) FROM attempts a WHERE a.job_id = j.id) FROM jobs j").fetchall()
            if status != "running":
                break
            assert time.time() < deadline, "the call's outcome was never recorded: it would be sent again"
            time.sleep(0.2)
        assert (status, attempts) == ("done", 1)
        assert "could not be recorded yet" in server.logs()
        time.sleep(1)
        assert len(zoom.api_calls()) == 1
    finally:
        holder.close()


def test_a_call_waiting_past_its_lease_for_a_pacing_slot_keeps_its_job_and_zoom_gets_it_once(tmp_path, zoom):
    """A slow rate (or many threads queued on one account or chat) puts a call's slot past its 60 s lease.
    The lease ran out mid-wait: another thread of the same process (the same owner) could claim the job,
    both extends succeeded, and Zoom got the call twice. The dispatcher runs here in-process on its own
    clock (its `clock` and `sleep`), with the real store and the Zoom stand-in."""
    from reactor.accounts import single_account
    from reactor.dispatch import LEASE_SECONDS, Dispatcher
    from reactor.plan import PlannedAction
    from reactor.settings import Settings
    from reactor.store.contract import NewDelivery
    from reactor.store.sqlite import SQLiteStore
    from tests.conftest import ACCOUNT_ID, CLIENT_SECRET

    store = SQLiteStore(str(tmp_path / "paced.db"))
    store.migrate()
    settings = Settings.from_env({"ZOOM_WEBHOOK_SECRET_TOKEN": "s", "ZOOM_ACCOUNT_ID": ACCOUNT_ID,
                                  "ZOOM_CLIENT_ID": "test-client-id", "ZOOM_CLIENT_SECRET": CLIENT_SECRET,
                                  "ZOOM_API_URL": zoom.url + "/v2", "ZOOM_OAUTH_URL": zoom.url + "/oauth/token",
                                  "DATABASE_URL": f"sqlite:///{tmp_path / 'paced.db'}"})
    accounts = single_account(ACCOUNT_ID, "test-client-id", CLIENT_SECRET, ("s",), rate=1 / 90)  # a slot each 90 s
    now = [time.time()]
    claimed_meanwhile = []

    def sleep(seconds):  # the wait for the slot: time passes, and a sibling thread looks for work
        now[0] += seconds
        claimed_meanwhile.append(store.claim(dispatcher.owner, now[0], LEASE_SECONDS))

    dispatcher = Dispatcher(store, settings, lambda: accounts, threads=1, clock=lambda: now[0], sleep=sleep)
    for meeting in ("51000000001", "51000000002"):
        store.accept(NewDelivery(dedup_key=f"k{meeting}", event="meeting.started", event_ts_ms=int(now[0] * 1000),
                                 received_at=now[0], body={}, verdicts="[]", order_key=f"meetings/{meeting}"),
                     [PlannedAction("r", "livestream.start", "PATCH", f"/meetings/{meeting}/livestream/status",
                                    {"action": "start"}, f"meetings/{meeting}", "default")], now[0] + 3600)
    try:
        assert dispatcher.run_once() and dispatcher.run_once()  # the second waits 90 s for its slot
        assert claimed_meanwhile == [None], "another thread claimed the job while it waited for its slot"
        assert sorted(c.path for c in zoom.api_calls()) == ["/v2/meetings/51000000001/livestream/status",
                                                            "/v2/meetings/51000000002/livestream/status"]
    finally:
        store.close()


def test_after_the_database_held_everyone_up_no_process_takes_the_others_calls_in_flight(make_server, zoom):
    """A long transaction on the SQLite file (a big prune, a `retry --dead` on a large history, someone's
    `sqlite3` shell) holds the write lock for 12 s while six calls are in flight in three processes (two web
    workers and the worker; Zoom answers after 16 s). Every heartbeat fails meanwhile. When the lock goes,
    the first process to beat again must not take the others for dead: they were held up as it was. Before,
    it released their leases at once and sent their calls a second time."""
    from tests.conftest import Worker

    meetings = [str(68_000_000_001 + n) for n in range(6)]
    for meeting in meetings:
        zoom.script(f"/v2/meetings/{meeting}/livestream/status", [Reply(204, delay=16)])
    server = make_server(zoom=zoom, env={"WEB_CONCURRENCY": "2"})
    worker = Worker(server)
    holder = sqlite3.connect(str(server.db), timeout=10, isolation_level=None, check_same_thread=False)
    try:
        time.sleep(1)  # the worker is up and beating
        for meeting in meetings:
            assert server.post(event(meeting_id=meeting, topic="Town Hall")).status_code == 200
        zoom.wait_for(len(meetings), timeout=20)  # all six in flight
        holder.execute("BEGIN IMMEDIATE")
        time.sleep(12)
        holder.execute("COMMIT")
        time.sleep(8)  # Zoom has answered the six; a second call would have gone out by now
        calls = sorted(c.path.split("/")[3] for c in zoom.api_calls("/v2/meetings/"))
        assert calls == meetings, f"calls per meeting: {calls}"
    finally:
        holder.close()
        worker.stop()
