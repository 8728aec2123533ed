"""Zoom as it really behaves (issue: retries, a 429 on start, expired leases, containers, duplicates):
each scenario through a real gunicorn and the local Zoom stand-in, on SQLite and, where processes
must agree, on PostgreSQL."""
import json
import time

import pytest
import requests

from tests.conftest import event, signed_headers, wait_until
from tests.zoom_standin import Reply


@pytest.fixture(params=["sqlite", "postgres"])
def db_env(request):
    if request.param == "sqlite":
        return {}
    from tests.backends import migrated_postgres_schema
    return {"DATABASE_URL": migrated_postgres_schema()}


def instances(make_server, zoom, db_env: dict, **env) -> list:
    """reactor as a deployment runs it: on SQLite one gunicorn (two worker processes); on PostgreSQL two
    gunicorn instances on one database, as two hosts would."""
    if not db_env:
        return [make_server(zoom=zoom, env=env)]
    return [make_server(zoom=zoom, env={**db_env, **env}, sub=name) for name in ("a", "b")]


def confirmation(meeting_id, uuid_, name="meeting.live_streaming_started"):
    body = event(name, meeting_id=int(meeting_id), uuid_=uuid_)
    body["payload"]["object"]["live_streaming"] = {"service": "Custom_Live_Streaming_Service",
                                                   "date_time": "2026-11-26T17:00:10Z"}
    return body


def start_job(server):
    [job] = [j for j in server.jobs() if j["action"]["kind"] == "livestream.start"]
    return job


# -- 1. Zoom's retries after an outage keep their first timestamp (unconfirmed): they are accepted


def test_a_redelivery_signed_85_minutes_ago_is_accepted_once(make_server):
    server = make_server()
    body = event(topic="Town Hall")
    raw = json.dumps(body).encode()
    first_try = int(time.time()) - 85 * 60  # Zoom's third retry, if it keeps the first attempt's timestamp
    late = requests.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw, timestamp=first_try),
                         timeout=10)
    assert late.status_code == 200 and late.json()["status"] == "accepted", late.text
    replay = requests.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw, timestamp=first_try),
                           timeout=10)
    assert server.outcome(replay) == {**server.outcome(late), "status": "duplicate", "actions": 0}, "a replay is a duplicate"
    assert len(server.history()) == 1


def test_a_signature_window_longer_than_the_history_stops_start_up(make_server):
    server = make_server(env={"REACTOR_SIGNATURE_TOLERANCE": "90000", "REACTOR_HISTORY_DAYS": "1"}, start=False)
    server.start(wait=False)
    assert server.proc.wait(20) != 0
    assert "REACTOR_SIGNATURE_TOLERANCE (90000 s) must be shorter than REACTOR_HISTORY_DAYS" in server.logs()


# -- 2. a 429 on start does not leave a running stream recorded as dead or retried


def test_a_429_start_that_zoom_confirms_is_done_and_not_retried(make_server, zoom, db_env):
    zoom.script("/v2/meetings/9100/livestream/status", [Reply(429, {"message": "Too many requests"},
                                                              headers={"Retry-After": "3"})])
    first, *others = instances(make_server, zoom, db_env)
    server = (others or [first])[-1]  # the confirmation reaches another instance than the start
    first.post(event(meeting_id="9100", uuid_="u-9100"))
    zoom.wait_for(1)
    wait_until(lambda: start_job(server)["status"] == "pending")
    assert server.post(confirmation(9100, "u-9100")).status_code == 200
    time.sleep(4.5)  # past the Retry-After: a retry would have been sent by now
    assert len(zoom.api_calls()) == 1, "the confirmed start was retried"
    job = start_job(server)
    assert job["status"] == "done" and job["confirmed_at"] is not None
    assert job["attempt_log"][-1]["outcome"] == "confirmed"


def test_a_confirmation_while_the_call_is_in_flight_is_not_lost(make_server, zoom, db_env):
    zoom.script("/v2/meetings/9200/livestream/status", [Reply(504, {"message": "gateway timeout"}, delay=2)])
    first, *others = instances(make_server, zoom, db_env)
    server = (others or [first])[-1]
    first.post(event(meeting_id="9200", uuid_="u-9200"))
    zoom.wait_for(1)
    assert server.post(confirmation(9200, "u-9200")).status_code == 200  # Zoom: started, while we still wait
    job = wait_until(lambda: (j := start_job(server))["status"] != "running" and j)
    time.sleep(1.5)  # a 5xx would be retried after ~1 s
    assert job["status"] == "done" and job["confirmed_at"] is not None
    assert len(zoom.api_calls()) == 1


def test_another_instance_or_a_refused_start_is_never_confirmed(make_server, zoom):
    zoom.script("/v2/meetings/9300/livestream/status", [Reply(404, {"code": 1001, "message": "User does not exist."})])
    server = make_server(zoom=zoom, env={"REACTOR_ACTION_DEADLINE": "3"})
    server.post(event(meeting_id="9300", uuid_="u-9300"))
    server.post(event(meeting_id="9301", uuid_="u-9301-monday"))
    server.wait_jobs(2)
    server.post(confirmation(9300, "u-9300"))             # the host started it by hand after reactor was refused
    server.post(confirmation(9301, "u-9301-tuesday"))     # the next occurrence of a recurring meeting
    jobs = {j["action"]["path"].split("/")[2]: j for j in server.jobs()}
    assert jobs["9300"]["status"] == "dead" and jobs["9300"]["confirmed_at"] is None
    assert jobs["9301"]["status"] == "done" and jobs["9301"]["confirmed_at"] is None


# -- 3. an expired lease is never acted on; tokens are fetched once at a time


def test_a_stalled_token_endpoint_doubles_no_call(make_server, zoom, db_env):
    """The token endpoint stalls 30 s (past the 20 s read timeout) three times, under a burst in two
    processes: calls wait, are retried, and each meeting is started exactly once."""
    zoom.script_token([Reply(200, {"access_token": "late", "expires_in": 3600}, delay=30)] * 3)
    servers = instances(make_server, zoom, db_env, REACTOR_DISPATCH_THREADS="8")
    server = servers[0]
    ids = [str(9_400_000 + n) for n in range(16)]
    for n, mid in enumerate(ids):
        assert servers[n % len(servers)].post(event(meeting_id=mid, uuid_=f"u-{mid}")).status_code == 200
    server.wait_jobs(len(ids), statuses=("done",), timeout=150)
    time.sleep(2)
    started = [c.path for c in zoom.api_calls()]
    assert sorted(started) == sorted(f"/v2/meetings/{mid}/livestream/status" for mid in ids), "a call was doubled"


# -- 4. dead processes are found by their heartbeat, not their pid: containers sharing a hostname


def test_containers_sharing_a_hostname_keep_each_others_live_leases(make_server, zoom, db_env):
    """Instance B runs in its own PID namespace (as a container would), with a 16 s call in flight (below
    the 20 s read timeout). Instance A, on the same host name and database, must not take B's live lease."""
    zoom.script("/v2/meetings/9500/livestream/status", [Reply(204, delay=16)])
    b = make_server(zoom=zoom, sub="b", start=False)
    b.env["DATABASE_URL"] = db_env.get("DATABASE_URL") or f"sqlite:///{b.tmp.parent / 'shared.db'}"
    b.wrapper = ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
                 'echo 30000 > /proc/sys/kernel/ns_last_pid; exec "$@"', "sh"]  # pids no process of A's has
    b.start()
    b.post(event(meeting_id="9500", uuid_="u-9500"))
    zoom.wait_for(1)
    a = make_server(zoom=zoom, sub="a", start=False)
    a.env["DATABASE_URL"] = b.env["DATABASE_URL"]
    a.start()
    time.sleep(12)  # A's upkeep has looked at B's lease several times
    assert len(zoom.api_calls()) == 1, "A took over the live lease of B's in-flight call"
    b.wait_jobs(1, statuses=("done",), timeout=30)
    assert len(zoom.api_calls()) == 1


# -- 6. duplicates are found by what the event is, not by its bytes


def participant(event_name="meeting.participant_joined", user_id="16778240", join_time="2026-11-26T17:01:00Z",
                **extra):
    body = event(event_name, meeting_id="9600", uuid_="u-9600")
    body["payload"]["object"]["participant"] = {"user_id": user_id, "user_name": "Guest", "id": "pQ7",
                                                "join_time": join_time, "email": "guest@example.org", **extra}
    return body


@pytest.mark.parametrize("first, again, duplicate", [
    pytest.param(participant(), participant(registrant_id="r-1"), True, id="participant-redelivered-with-new-bytes"),
    pytest.param(participant(), participant(join_time="2026-11-26T17:20:00Z"), False, id="participant-rejoins"),
    pytest.param(participant(), participant(user_id="16778999"), False, id="another-participant"),
    pytest.param(participant("meeting.participant_left", leave_time="2026-11-26T17:05:00Z"),
                 participant("meeting.participant_left", leave_time="2026-11-26T17:05:00Z", registrant_id="x"),
                 True, id="participant-left-redelivered"),
    pytest.param(confirmation(9600, "u-9600"), {**confirmation(9600, "u-9600"), "event_ts": 1}, True,
                 id="stream-started-redelivered-with-another-event_ts"),
    pytest.param(event("recording.completed", meeting_id="9600", uuid_="u-9600", download_token="a"),
                 event("recording.completed", meeting_id="9600", uuid_="u-9600", download_token="b"),
                 True, id="recording-completed-with-a-new-download-token"),
    pytest.param(event("meeting.started", uuid_="u-9601"), event("meeting.started", uuid_="u-9601", ts_ms=5), True,
                 id="started-same-uuid-other-event_ts"),
])
def test_duplicates_are_found_by_what_the_event_is(make_server, first, again, duplicate):
    server = make_server()
    assert server.outcome(server.post(first))["status"] == "accepted"
    assert server.outcome(server.post(again))["status"] == ("duplicate" if duplicate else "accepted")


# -- 7. operator retries cannot start the wrong meeting


def test_an_operator_retry_shows_what_it_sends_and_refuses_ended_or_late_actions(make_server, zoom):
    from tests.conftest import run_cli

    zoom.script("/v2/meetings/", [Reply(404, {"code": 1001, "message": "User does not exist."})] * 2)
    server = make_server(zoom=zoom, env={"REACTOR_ACTION_DEADLINE": "4"})
    server.post(event(meeting_id="9700", uuid_="u-9700-monday"))
    server.post(event(meeting_id="9701", uuid_="u-9701"))
    server.wait_jobs(2)
    server.post(event("meeting.ended", meeting_id="9700", uuid_="u-9700-monday", topic="Renamed"))  # no stop rule
    ended, late = sorted((j for j in server.jobs() if j["status"] == "dead"), key=lambda j: j["action"]["path"])
    env = {"DATABASE_URL": f"sqlite:///{server.db}"}

    refused = run_cli("retry", str(ended["id"]), env=env)
    assert refused.returncode == 1 and "refused: its meeting instance has ended" in refused.stdout
    assert "PATCH /meetings/9700/livestream/status" in refused.stdout, "it shows what it would send"
    time.sleep(4.5)  # now 9701's deadline has passed too
    listing = run_cli("retry", "--dead", env=env)
    assert listing.returncode == 1 and "0 of 2 dead action(s) would be re-queued" in listing.stdout
    assert "past its deadline" in listing.stdout
    time.sleep(1)
    assert len(zoom.api_calls()) == 2, "refusing or listing sent nothing"

    forced = run_cli("retry", "--dead", "--yes", "--force", env=env)
    assert forced.returncode == 0 and "re-queued 2 dead action(s)" in forced.stdout
    zoom.wait_for(4)
    assert sorted(c.path for c in zoom.api_calls()[2:]) == ["/v2/meetings/9700/livestream/status",
                                                          "/v2/meetings/9701/livestream/status"]


# -- 8. errors say what to do; 9. a stop with nothing to stop is done


def test_a_missing_scope_is_named_and_zoom_tracking_ids_are_kept(make_server, zoom):
    zoom.script("/v2/meetings/9800/livestream/status", [Reply(400, {
        "code": 4711, "message": "Invalid access token, does not contain scopes:[meeting:update:livestream_status:admin]"},
        headers={"x-zm-trackingid": "v=2.0;clid=us06;rid=WEB_abc123"})])
    server = make_server(zoom=zoom)
    server.post(event(meeting_id="9800"))
    [job] = server.wait_jobs(1)
    [attempt] = job["attempt_log"]
    assert job["status"] == "dead" and "add the scope meeting:update:livestream_status:admin" in attempt["message"]
    assert attempt["tracking_id"] == "v=2.0;clid=us06;rid=WEB_abc123"


def test_a_stop_of_a_stream_that_is_not_running_is_done_not_dead(make_server, zoom):
    zoom.script("/v2/meetings/9900/livestream/status", [Reply(400, {"code": 3001, "message": "Meeting is not in progress."})])
    server = make_server(zoom=zoom)
    server.post(event("meeting.ended", meeting_id="9900"))  # the Town Hall stop rule; Zoom ended the stream already
    [job] = server.wait_jobs(1)
    assert job["status"] == "done" and job["last_message"].startswith("nothing to stop: Zoom answered 400 code 3001")


# -- 12. time zones work where the OS has no zoneinfo (slim images)


def test_time_windows_work_without_the_systems_zoneinfo(tmp_path):
    from tests.conftest import run_cli

    (tmp_path / "r.yaml").write_text("""
rules:
  - name: Berlin mornings
    on: meeting.started
    when:
      during: {days: [sun], from: "09:30", to: "12:30", timezone: Europe/Berlin}
    do: [livestream.start]
    examples:
      - event: meeting.started
        with: {event_ts: 1764498600000}   # Sunday 2025-11-30 11:30 in Berlin, 10:30 UTC
        expect: match
""")
    result = run_cli("check", "--strict", str(tmp_path), env={"PYTHONTZPATH": str(tmp_path / "no-zoneinfo-here")})
    assert result.returncode == 0, result.stdout + result.stderr
