"""Alerts to a chat webhook (REACTOR_ALERT_URL) through the real gunicorn, with a second local stand-in
server playing the chat (Slack-style incoming webhook): it records every POST and answers as scripted."""
from __future__ import annotations

import time

import pytest

from tests.backends import BACKENDS
from tests.conftest import event
from tests.test_metrics import scrape, value
from tests.zoom_standin import Reply, ZoomStandIn

HOOK = "/hooks/T0001/B0002/hook-secret-9d1f7e"  # the URL's last part is the secret, as Slack's is
SWEEP = 5.0  # reactor.notify.ALERT_SWEEP_EVERY


@pytest.fixture
def chat():
    standin = ZoomStandIn()
    yield standin
    standin.close()


def confirmation(meeting_id, uuid_):
    body = event("meeting.live_streaming_started", meeting_id=int(meeting_id), uuid_=uuid_)
    body["payload"]["object"]["live_streaming"] = {"service": "Custom_Live_Streaming_Service",
                                                   "date_time": "2026-11-26T17:00:10Z"}
    return body


def alert_env(chat, **more) -> dict:
    return {"REACTOR_ALERT_URL": chat.url + HOOK, **more}


def test_a_dead_start_raises_exactly_one_alert_even_when_the_chat_fails_first(make_server, zoom, chat):
    zoom.script("/v2/meetings/85746065432/livestream/status",
                [Reply(404, {"code": 3001, "message": "Meeting does not exist: 85746065432."})])
    chat.script(HOOK, [Reply(500, "oops"), Reply(500, "oops")])  # then the default: 204
    server = make_server(zoom=zoom, env=alert_env(chat))
    assert server.post(event(topic="Town Hall - November")).status_code == 200

    posts = chat.wait_for(3, HOOK, timeout=40)
    time.sleep(2 * SWEEP + 2)  # later sweeps find the cause again: it must not be sent again
    posts = chat.api_calls(HOOK)
    assert [p.status for p in posts] == [500, 500, 204]
    assert len({p.body["text"] for p in posts}) == 1  # the same message, retried
    text = posts[-1].body["text"]
    for part in ("85746065432", "Town Hall - November", "Stream town halls", "livestream.start", "404", "3001",
                 "Meeting does not exist", "python -m reactor retry"):
        assert part in text, (part, text)

    [alert] = [j for j in server.jobs() if j["action"]["kind"] == "alert"]
    assert alert["status"] == "done"
    assert [a["outcome"] for a in alert["attempt_log"]] == ["retry", "retry", "done"]
    assert alert["action"]["path"] == "REACTOR_ALERT_URL"  # the setting's name, never the URL
    assert "hook-secret-9d1f7e" not in str(server.history(limit=1000)) + server.logs()
    samples = scrape(server)
    assert value(samples, "reactor_alerts_total", kind="alert", outcome="retry") == 2
    assert value(samples, "reactor_alerts_total", kind="alert", outcome="done") == 1
    assert value(samples, "reactor_zoom_requests_total", endpoint="/meetings/{id}/livestream/status", status="404") == 1
    assert value(samples, "reactor_actions_total", action="livestream.start", outcome="dead") == 1


def test_a_start_not_confirmed_in_time_raises_one_alert_and_a_confirmed_one_none(make_server, zoom, chat):
    server = make_server(zoom=zoom, env=alert_env(chat, REACTOR_CONFIRM_TIMEOUT="4"))
    late, on_time = "85746065432", "85746065999"
    on_time_uuid = "on-time-instance-uuid"
    assert server.post(event(meeting_id=late)).status_code == 200
    assert server.post(event(meeting_id=on_time, uuid_=on_time_uuid)).status_code == 200
    zoom.wait_for(2)
    assert server.post(confirmation(on_time, on_time_uuid)).status_code == 200  # well within 4 s

    [post] = chat.wait_for(1, HOOK, timeout=30)
    assert late in post.body["text"] and "meeting.live_streaming_started" in post.body["text"]
    time.sleep(2 * SWEEP + 2)
    assert len(chat.api_calls(HOOK)) == 1, [c.body for c in chat.api_calls(HOOK)]
    assert on_time not in chat.api_calls(HOOK)[0].body["text"]


def test_no_unconfirmed_alert_with_the_timeout_off(make_server, zoom, chat):
    server = make_server(zoom=zoom, env=alert_env(chat, REACTOR_CONFIRM_TIMEOUT="0"))
    assert server.post(event()).status_code == 200
    zoom.wait_for(1)
    time.sleep(2 * SWEEP + 2)
    assert chat.api_calls(HOOK) == []


def test_discord_format_posts_content(make_server, zoom, chat):
    zoom.script("/v2/meetings/85746065432/livestream/status", [Reply(400, {"code": 1010, "message": "nope"})])
    server = make_server(zoom=zoom, env=alert_env(chat, REACTOR_ALERT_FORMAT="content"))
    assert server.post(event()).status_code == 200
    [post] = chat.wait_for(1, HOOK, timeout=30)
    assert set(post.body) == {"content"} and "1010" in post.body["content"]


NOTIFY_RULES = """
rules:
  - name: Stream town halls
    on: meeting.started
    when:
      topic: {glob: "Town Hall*"}
    do:
      - livestream.start
      - notify:
          url: ${CHAT_HOOK_URL}
          text: "Streaming {{ topic }} ({{ id }}) now"
"""


def test_a_rules_notify_arrives_rendered_without_its_url_in_the_history(make_server, zoom, chat):
    server = make_server(NOTIFY_RULES, zoom=zoom, env={"CHAT_HOOK_URL": chat.url + HOOK})
    assert server.post(event(topic="Town Hall - November")).status_code == 200
    [post] = chat.wait_for(1, HOOK)
    assert post.body == {"text": "Streaming Town Hall - November (85746065432) now"}
    zoom.wait_for(1)
    jobs = {j["action"]["kind"]: j for j in server.wait_jobs(2)}
    assert jobs["notify"]["status"] == "done" and jobs["livestream.start"]["status"] == "done"
    assert jobs["notify"]["action"]["path"] == "${CHAT_HOOK_URL}"
    assert "hook-secret-9d1f7e" not in str(server.history(limit=1000)) + server.logs()


def test_check_refuses_a_notify_url_written_in_clear(tmp_path):
    from tests.conftest import run_cli

    rules = tmp_path / "rules.yaml"
    rules.write_text(NOTIFY_RULES.replace("${CHAT_HOOK_URL}", "https://hooks.example.com/services/T/B/x"))
    result = run_cli("check", str(rules), env={"CHAT_HOOK_URL": "x"})
    assert result.returncode == 1
    assert "rules.yaml:10" in result.stdout + result.stderr and "secret reference" in result.stdout + result.stderr
    rules.write_text(NOTIFY_RULES)
    assert run_cli("check", str(rules), env={"CHAT_HOOK_URL": "https://hooks.example.com/x"}).returncode == 0


def test_a_rejected_reload_raises_one_alert_with_the_errors(make_server, zoom, chat):
    server = make_server(zoom=zoom, env=alert_env(chat))  # two workers: each rejects the files, one alert is sent
    (server.rules_dir / "rules.yaml").write_text("rules:\n  - name: Broken\n    on: meeting.started\n    do: [livestream.strat]\n")
    [post] = chat.wait_for(1, HOOK, timeout=30)
    assert "rejected" in post.body["text"] and "livestream.strat" in post.body["text"]
    time.sleep(2 * SWEEP)
    assert len(chat.api_calls(HOOK)) == 1
    assert value(scrape(server), "reactor_rules_reload_failures_total") == 2  # each worker rejected the files


START_ONLY = """
rules:
  - name: Stream town halls
    on: meeting.started
    when:
      topic: {glob: "Town Hall*"}
    do: [livestream.start]
"""


def test_a_stream_stopped_while_the_meeting_runs_raises_one_alert_and_a_meeting_end_none(make_server, zoom, chat):
    # no stop rule: only the meeting.ended tells the ended meeting's stop from an unexpected one
    server = make_server(START_ONLY, zoom=zoom, env=alert_env(chat, REACTOR_CONFIRM_TIMEOUT="0"))
    dropped, ended = "85746065432", "85746065777"
    for meeting, instance in ((dropped, "dropped-uuid"), (ended, "ended-uuid")):
        assert server.post(event(meeting_id=meeting, uuid_=instance)).status_code == 200
    zoom.wait_for(2)
    server.wait_jobs(2)
    stopped = confirmation(dropped, "dropped-uuid")
    stopped["event"] = "meeting.live_streaming_stopped"
    assert server.post(stopped).status_code == 200
    stopped = confirmation(ended, "ended-uuid")
    stopped["event"] = "meeting.live_streaming_stopped"
    assert server.post(stopped).status_code == 200
    assert server.post(event("meeting.ended", meeting_id=ended, uuid_="ended-uuid")).status_code == 200

    [post] = chat.wait_for(1, HOOK, timeout=60)  # after the 20 s grace for a meeting.ended
    assert dropped in post.body["text"] and "stopped" in post.body["text"]
    time.sleep(2 * SWEEP)
    assert len(chat.api_calls(HOOK)) == 1


def test_database_refusals_raise_one_alert_once_the_database_is_back(make_server, zoom, chat):
    from tests.backends import migrated_postgres_schema
    from tests.backends import Proxy

    url = migrated_postgres_schema()
    proxy = Proxy()
    server = make_server(zoom=zoom, env=alert_env(chat, DATABASE_URL=proxy.url(url), WEB_CONCURRENCY="1"))
    proxy.cut()
    try:
        statuses = [server.post(event(meeting_id=str(500 + n))).status_code for n in range(3)]
        assert statuses == [503, 503, 503]
        time.sleep(SWEEP)
        assert chat.api_calls(HOOK) == []  # nothing can be queued while the database is away
    finally:
        proxy.restore()
    [post] = chat.wait_for(1, HOOK, timeout=40)
    time.sleep(SWEEP)
    assert len(chat.api_calls(HOOK)) == 1
    assert "refused 3" in post.body["text"] and "503" in post.body["text"]


def test_a_burst_of_bad_signatures_raises_one_alert(make_server, zoom, chat):
    server = make_server(zoom=zoom, env=alert_env(chat, WEB_CONCURRENCY="1"))
    for _ in range(25):
        assert server.post(event(), secret="rotated-secret").status_code == 401
    [post] = chat.wait_for(1, HOOK, timeout=30)
    assert "ZOOM_WEBHOOK_SECRET_TOKEN" in post.body["text"]
    time.sleep(SWEEP)
    assert len(chat.api_calls(HOOK)) == 1


def test_kill_9_while_an_alert_is_in_flight_loses_none_and_repeats_it_once(make_server, zoom, chat):
    """At least once: the chat took the message but reactor died before recording it, so it is sent again."""
    zoom.script("/v2/meetings/85746065432/livestream/status", [Reply(404, {"code": 3001, "message": "gone"})])
    chat.script(HOOK, [Reply(204, delay=3.0)])  # the first message is received, its answer is slow
    server = make_server(zoom=zoom, env=alert_env(chat))
    assert server.post(event()).status_code == 200
    chat.wait_for(1, HOOK, timeout=40)
    server.kill9()  # before the chat's answer: the alert job stays "running" under a dead owner
    server.start()  # its lease is released once the dead owner's heartbeat is silent (10 s)
    posts = chat.wait_for(2, HOOK, timeout=60)
    time.sleep(2 * SWEEP + 2)
    posts = chat.api_calls(HOOK)
    assert len(posts) == 2 and posts[0].body == posts[1].body, [p.body for p in posts]
    [alert] = [j for j in server.jobs() if j["action"]["kind"] == "alert"]
    assert alert["status"] == "done"


@pytest.mark.parametrize("make_store", BACKENDS)
def test_the_store_lists_each_cause_until_its_alert_is_queued(make_store, tmp_path):
    from reactor.delivery import NewDelivery
    from reactor.notify import raise_alerts
    from reactor.plan import PlannedAction
    from reactor.settings import Settings
    from reactor.store.contract import Attempt

    store = make_store(tmp_path)
    store.migrate()
    now = time.time()
    start = PlannedAction("r", "livestream.start", "PATCH", "/meetings/1/livestream/status", {}, "meetings/1", "a")
    body = {"payload": {"object": {"id": 1, "topic": "Town Hall"}}}
    store.accept(NewDelivery("k1", "meeting.started", int(now * 1000), now, body, "[]", "meetings/1", "", "i1"),
                 [start], now + 600)
    store.accept(NewDelivery("k2", "meeting.started", int(now * 1000), now, body, "[]", "meetings/2", "", "i2"),
                 [start.__class__(**{**start.to_dict(), "order_key": "meetings/2"})], now + 600)
    dead = store.claim("o", now, 60)
    store.finish(dead, "o", Attempt(now, "dead", 404, 3001, "Zoom answered 404 code 3001: gone", sent={}), "dead")
    started = store.claim("o", now, 60)
    store.finish(started, "o", Attempt(now, "done", 204, None, "ok", duration_ms=5, sent={}), "done")

    [cause] = store.alert_causes(now + 10, 120, now - 60)  # the start is not yet 120 s unconfirmed
    assert (cause["cause"], cause["id"], cause["body"]) == ("dead", dead.id, body)
    later = now + 200
    assert {(c["cause"], c["id"]) for c in store.alert_causes(later, 120, now - 60)} == {
        ("dead", dead.id), ("unconfirmed", started.id)}
    settings = Settings.from_env({"ZOOM_WEBHOOK_SECRET_TOKEN": "x", "REACTOR_DRY_RUN": "1"})
    assert raise_alerts(store, settings, later) == 2
    assert store.alert_causes(later, 120, now - 60) == []  # queued once: never again
    assert raise_alerts(store, settings, later) == 0
    assert store.outbox(later)["jobs"]["pending"] == 2  # the two alert jobs
    store.close()
