"""Matched rules become Zoom calls: a real gunicorn, a real Zoom stand-in over local HTTP."""
import time
from email.utils import formatdate

import requests

import pytest

from tests.conftest import ACCOUNT_ID, CLIENT_SECRET, SECRET, STREAM_KEY, event
from tests.zoom_standin import Reply


@pytest.fixture(params=["sqlite", "postgres"])
def db_env(request):
    """The same test on the embedded store and on PostgreSQL."""
    if request.param == "sqlite":
        return {}
    from tests.backends import migrated_postgres_schema
    return {"DATABASE_URL": migrated_postgres_schema()}

CONFIGURE_AND_START = """
rules:
  - name: Town hall live
    on: [meeting.started, webinar.started]
    when:
      topic: {glob: "Town Hall*"}
    do:
      - livestream.configure:
          stream_url: rtmp://a.rtmp.youtube.com/live2
          stream_key: ${YOUTUBE_STREAM_KEY}
          page_url: https://youtube.com/@acme/live
      - livestream.start:
          display_name: "Live: {{ topic }}"
          active_speaker_name: false
  - name: Town hall stop
    on: [meeting.ended, webinar.ended]
    when:
      topic: {glob: "Town Hall*"}
    do: [livestream.stop]
  - name: Plain start
    on: meeting.started
    when:
      topic: {glob: "Plain*"}
    do: [livestream.start]
"""


def test_matching_event_makes_exactly_the_calls_the_rule_says(make_server, zoom, db_env):
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env=db_env)
    assert server.post(event(meeting_id="98765432109", topic="Town Hall - May")).status_code == 200
    configure, start = zoom.wait_for(2)
    time.sleep(0.5)
    assert len(zoom.api_calls()) == 2, "exactly one configure and one start"
    assert (configure.method, configure.path) == ("PATCH", "/v2/meetings/98765432109/livestream")
    assert configure.body == {"stream_url": "rtmp://a.rtmp.youtube.com/live2", "stream_key": STREAM_KEY,
                              "page_url": "https://youtube.com/@acme/live"}
    assert (start.method, start.path) == ("PATCH", "/v2/meetings/98765432109/livestream/status")
    assert start.body == {"action": "start", "settings": {"display_name": "Live: Town Hall - May",
                                                          "active_speaker_name": False}}
    assert configure.at <= start.at
    issued = {f"Bearer {token}" for token in zoom.issued_tokens()}
    for call in (configure, start):
        assert call.headers["content-type"] == "application/json"
        assert call.headers["authorization"] in issued
    # a token is shared by the threads of a process: each of the two web workers may fetch its own
    assert 1 <= len(zoom.token_calls) <= 2
    for token_call in zoom.token_calls:
        assert token_call.method == "POST"
        assert "grant_type=account_credentials" in token_call.path and f"account_id={ACCOUNT_ID}" in token_call.path
        assert token_call.headers["authorization"].startswith("Basic ")
    jobs = server.wait_jobs(2)
    assert [j["status"] for j in jobs] == ["done", "done"]


def test_webinars_and_big_ids(make_server, zoom):
    server = make_server(CONFIGURE_AND_START, zoom=zoom)
    server.post(event("webinar.started", meeting_id=91234567890123, topic="Town Hall webinar"))
    calls = zoom.wait_for(2)
    assert [c.path for c in calls] == ["/v2/webinars/91234567890123/livestream",
                                       "/v2/webinars/91234567890123/livestream/status"]


def test_429_retry_after_seconds_is_honoured(make_server, zoom, db_env):
    zoom.script("/v2/meetings/111/livestream/status", [Reply(429, {"code": 429, "message": "Too many requests"},
                                                             {"Retry-After": "2"}, delay=0.5)])
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env=db_env)
    server.post(event(meeting_id="111", topic="Plain"))
    first, second = zoom.wait_for(2, timeout=15)
    assert second.at - first.at >= 2.5, "2 s after the 429 answer, which took 0.5 s to come"
    [job] = server.wait_jobs(1)
    assert job["status"] == "done"
    assert [a["outcome"] for a in job["attempt_log"]] == ["rate_limited", "done"]
    assert job["failures"] == 0


def test_429_retry_after_http_date_is_honoured(make_server, zoom):
    server = make_server(CONFIGURE_AND_START, zoom=zoom)
    zoom.script("/v2/meetings/112/livestream/status",  # the date is set now, not before the server's start-up
                [Reply(429, {"message": "slow down"}, {"Retry-After": formatdate(time.time() + 3, usegmt=True)})])
    server.post(event(meeting_id="112", topic="Plain"))
    first, second = zoom.wait_for(2, timeout=15)
    assert second.at - first.at >= 1.5  # an HTTP date has whole seconds
    assert server.wait_jobs(1)[0]["status"] == "done"


def test_5xx_is_retried_with_backoff_then_succeeds(make_server, zoom, db_env):
    zoom.script("/v2/meetings/113/livestream/status", [Reply(500, {"message": "oops"}), Reply(503, "<html>busy")])
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env=db_env)
    server.post(event(meeting_id="113", topic="Plain"))
    a, b, c = zoom.wait_for(3, timeout=20)
    assert 0.7 <= b.at - a.at and 1.5 <= c.at - b.at, "about 1 s, then about 2 s"
    [job] = server.wait_jobs(1)
    assert job["status"] == "done"
    assert [(x["outcome"], x["http_status"]) for x in job["attempt_log"]] == [("retry", 500), ("retry", 503),
                                                                            ("done", 204)]
    assert "not JSON" in job["attempt_log"][1]["message"]


def test_401_fetches_a_fresh_token_and_retries_once(make_server, zoom):
    zoom.script("/v2/meetings/114/livestream/status", [Reply(401, {"code": 124, "message": "Invalid access token."})])
    server = make_server(CONFIGURE_AND_START, zoom=zoom)
    server.post(event(meeting_id="114", topic="Plain"))
    first, second = zoom.wait_for(2)
    assert first.headers["authorization"] == "Bearer standin-token-1"
    assert second.headers["authorization"] == "Bearer standin-token-2"
    assert len(zoom.token_calls) == 2
    assert server.wait_jobs(1)[0]["status"] == "done"


def test_404_1001_is_dead_at_once_with_zoom_message(make_server, zoom):
    zoom.script("/v2/meetings/115/livestream/status", [Reply(404, {"code": 1001, "message": "User does not exist: x"})])
    server = make_server(CONFIGURE_AND_START, zoom=zoom)
    server.post(event(meeting_id="115", topic="Plain"))
    [job] = server.wait_jobs(1)
    time.sleep(1.5)
    assert len(zoom.api_calls()) == 1
    assert job["status"] == "dead"
    assert job["last_message"] == "Zoom answered 404 code 1001: User does not exist: x"


def test_4700_names_the_missing_scope(make_server, zoom):
    zoom.script("/v2/meetings/116/livestream/status", [Reply(400, {"code": 4700, "message": "Invalid access token, "
                                                                   "does not contain scopes"})])
    server = make_server(CONFIGURE_AND_START, zoom=zoom)
    server.post(event(meeting_id="116", topic="Plain"))
    [job] = server.wait_jobs(1)
    assert job["status"] == "dead" and "meeting:update:livestream_status:admin" in job["last_message"]


def test_slow_zoom_delays_neither_acks_nor_other_meetings(make_server, zoom):
    zoom.script("/v2/meetings/200/livestream/status", [Reply(204, delay=6)])
    server = make_server(CONFIGURE_AND_START, zoom=zoom)
    server.post(event(meeting_id="200", topic="Plain"))
    zoom.wait_for(1)
    started = time.time()
    acks = []
    for n in range(5):
        t = time.time()
        assert server.post(event(meeting_id=str(300 + n), topic="Plain")).status_code == 200
        acks.append(time.time() - t)
    zoom.wait_for(6, timeout=5)
    assert time.time() - started < 3, "other meetings' calls went out while meeting 200 was stalled"
    assert max(acks) < 1.0
    assert server.wait_jobs(6, timeout=15)


def test_meeting_order_start_then_stop(make_server, zoom, db_env):
    zoom.script("/v2/meetings/400/livestream/status", [Reply(503, {"message": "busy"})])
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env=db_env)
    t0 = int(time.time() * 1000)
    server.post(event(meeting_id="400", topic="Plain", ts_ms=t0))
    server.post(event("meeting.ended", meeting_id="400", topic="Town Hall", ts_ms=t0 + 10))
    # the stop must wait for the start's retry, not overtake it
    zoom.wait_for(3, timeout=15)
    bodies = [c.body["action"] for c in zoom.api_calls()]
    assert bodies == ["start", "start", "stop"]


def test_earlier_stop_arriving_after_later_start_is_skipped(make_server, zoom, db_env):
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env=db_env)
    t0 = int(time.time() * 1000)
    server.post(event(meeting_id="401", topic="Plain", ts_ms=t0))
    zoom.wait_for(1)
    server.wait_jobs(1)
    server.post(event("meeting.ended", meeting_id="401", topic="Town Hall", ts_ms=t0 - 60_000))
    jobs = server.wait_jobs(2)
    time.sleep(0.3)
    assert [c.body["action"] for c in zoom.api_calls()] == ["start"]
    assert sorted(j["status"] for j in jobs) == ["done", "skipped"]


def test_kill9_with_pending_work_completes_after_restart(make_server, zoom):
    zoom.script("/v2/meetings/", [Reply(503, {"message": "down"})] * 40)
    server = make_server(CONFIGURE_AND_START, zoom=zoom)
    ids = [str(500 + n) for n in range(10)]
    for mid in ids:
        assert server.post(event(meeting_id=mid, topic="Plain")).status_code == 200
    zoom.wait_for(10)
    server.kill9()
    zoom.clear_scripts()
    before = len(zoom.api_calls())
    server.start()
    jobs = server.wait_jobs(10, statuses=("done",), timeout=30)
    assert all(j["status"] == "done" for j in jobs)
    after_restart = [c.path.split("/")[3] for c in zoom.api_calls()[before:]]
    assert sorted(set(after_restart)) == ids, "every accepted action reached Zoom after the restart"


def test_burst_is_paced_and_never_doubled(make_server, zoom):
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env={"REACTOR_ZOOM_RATE": "20"})
    ids = [str(10_000_000_000 + n) for n in range(200)]
    session = requests.Session()
    for mid in ids:
        body = event(meeting_id=mid, topic="Plain")
        import json
        from tests.conftest import signed_headers
        raw = json.dumps(body).encode()
        assert session.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw), timeout=10).ok
    calls = zoom.wait_for(200, timeout=40)
    time.sleep(1)
    calls = zoom.api_calls()
    paths = [c.path for c in calls]
    assert len(paths) == 200 and len(set(paths)) == 200
    times = sorted(c.at for c in calls)
    worst = max(sum(1 for t in times[i:i + 30] if t - start < 1.0) for i, start in enumerate(times))
    assert worst <= 20, f"{worst} calls within one second"


def test_dry_run_records_what_would_be_sent(make_server, zoom):
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env={"REACTOR_DRY_RUN": "1"})
    server.post(event(meeting_id="600", topic="Town Hall"))
    jobs = server.wait_jobs(2)
    time.sleep(0.3)
    assert zoom.api_calls() == [] and zoom.token_calls == []
    assert jobs[0]["attempt_log"][0]["message"] == "dry run: not sent"
    assert jobs[0]["attempt_log"][0]["sent"]["body"]["stream_key"] == "<secret ${YOUTUBE_STREAM_KEY}>"
    assert jobs[1]["attempt_log"][0]["sent"]["body"] == {"action": "start", "settings": {
        "display_name": "Live: Town Hall", "active_speaker_name": False}}


def test_live_streaming_started_confirms_the_start(make_server, zoom):
    server = make_server(CONFIGURE_AND_START, zoom=zoom)
    server.post(event(meeting_id="700", topic="Plain", uuid_="instance-700"))
    server.wait_jobs(1)
    body = event("meeting.live_streaming_started", meeting_id=700, topic="Plain", uuid_="instance-700")
    body["payload"]["object"]["live_streaming"] = {"service": "Custom_Live_Streaming_Service",
                                                   "custom_live_streaming_settings": {"stream_key": "zoom-sent-key"}}
    assert server.post(body).status_code == 200
    [job] = [j for j in server.jobs() if j["action"]["kind"] == "livestream.start"]
    assert job["confirmed_at"] is not None
    assert "zoom-sent-key" not in str(server.history())


def test_no_secret_in_logs_or_history(make_server, zoom):
    zoom.script("/v2/meetings/802/livestream", [Reply(400, {"code": 300, "message": f"Invalid stream key {STREAM_KEY}"})])
    server = make_server(CONFIGURE_AND_START, zoom=zoom)
    server.post(event(meeting_id="802", topic="Town Hall"))
    server.post(event(meeting_id="800", topic="Town Hall"))
    zoom.script("/v2/meetings/801/livestream", [Reply(500, {"message": "x"})])
    server.post(event(meeting_id="801", topic="Town Hall"))
    server.wait_jobs(5, timeout=20)
    echoed = [j for j in server.jobs() if "/802/" in j["action"]["path"]][0]
    assert echoed["status"] == "dead" and echoed["last_message"] == "Zoom answered 400 code 300: Invalid stream key <redacted>"
    import subprocess, sys, os
    from tests.conftest import ROOT
    cli = subprocess.run([sys.executable, "-m", "reactor", "history"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "DATABASE_URL": f"sqlite:///{server.db}"}, timeout=60)
    assert "livestream.configure" in cli.stdout and "<secret ${YOUTUBE_STREAM_KEY}>" in cli.stdout
    server.stop()
    everything = server.logs() + str(server.history()) + cli.stdout + cli.stderr + server.db.read_bytes().decode(
        "latin-1")
    for secret in [SECRET, CLIENT_SECRET, STREAM_KEY, *zoom.issued_tokens()]:
        assert secret not in everything, secret


def test_token_is_shared_and_refreshed_before_it_expires(make_server, zoom):
    zoom.token_lifetime = 62  # refreshed 60 s ahead: good for about 2 s
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env={"WEB_CONCURRENCY": "1"})
    for n in range(3):
        server.post(event(meeting_id=str(1000 + n), topic="Plain"))
    zoom.wait_for(3)
    assert len(zoom.token_calls) == 1, "one token for all threads"
    time.sleep(2.5)
    server.post(event(meeting_id="1010", topic="Plain"))
    [*_, last] = zoom.wait_for(4)
    assert len(zoom.token_calls) == 2 and last.headers["authorization"] == "Bearer standin-token-2"


def test_token_endpoint_down_retries_then_succeeds(make_server, zoom):
    from tests.zoom_standin import Reply as R
    zoom.script_token([R(503, {"reason": "down"}), R(reset=True)])
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env={"WEB_CONCURRENCY": "1"})
    server.post(event(meeting_id="1100", topic="Plain"))
    [job] = server.wait_jobs(1, timeout=20)
    assert job["status"] == "done"
    assert [a["outcome"] for a in job["attempt_log"]] == ["retry", "retry", "done"]
    assert "token endpoint" in job["attempt_log"][0]["message"]


def test_wrong_credentials_are_dead_with_a_clear_message(make_server, zoom):
    from tests.zoom_standin import Reply as R
    zoom.script_token([R(400, {"reason": "Invalid client_id or client_secret", "error": "invalid_client"})])
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env={"WEB_CONCURRENCY": "1"})
    server.post(event(meeting_id="1101", topic="Plain"))
    [job] = server.wait_jobs(1)
    assert job["status"] == "dead" and "check ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID and ZOOM_CLIENT_SECRET" in job["last_message"]
    assert zoom.api_calls() == []


def test_start_is_skipped_when_its_configure_failed(make_server, zoom, db_env):
    zoom.script("/v2/meetings/1200/livestream", [Reply(400, {"code": 300, "message": "Invalid stream URL"})])
    server = make_server(CONFIGURE_AND_START, zoom=zoom, env=db_env)
    server.post(event(meeting_id="1200", topic="Town Hall"))
    configure, start = server.wait_jobs(2)
    assert configure["status"] == "dead" and start["status"] == "skipped"
    assert "an earlier action of this rule for this event failed" in start["last_message"]
    assert [c.path for c in zoom.api_calls()] == ["/v2/meetings/1200/livestream"]
