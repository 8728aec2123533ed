"""Zoom as it really behaves, continued (issue 12, items 10, 11, 13 and 14): secrets kept out of the
history and the database, odd event clocks, events from another Zoom account, and a rotated Secret Token.
Each scenario through a real gunicorn (and the local Zoom stand-in where calls matter), on SQLite."""
import hashlib
import hmac
import json
import sqlite3
import time
import uuid

import requests

from tests.conftest import CLIENT_SECRET, SECRET, event, run_cli, signed_headers
from tests.zoom_standin import Reply


def history_text(server) -> str:
    shown = run_cli("history", env={"DATABASE_URL": f"sqlite:///{server.db}"})
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


# -- 10. nothing secret or personal is stored by accident

LITERAL_KEY = "sk-literal-5e4d3c2b1a"
LITERAL_RULES = f"""
rules:
  - name: Stream to YouTube
    on: meeting.started
    do:
      - livestream.configure:
          stream_url: rtmp://a.rtmp.youtube.com/live2
          stream_key: {LITERAL_KEY}
          page_url: https://youtube.com/live
      - livestream.start
"""
PASSCODES = {"join_url passcode": "Pa55c0deXyZ", "h323_password": "h323-991122", "pstn_password": "pstn-554433",
             "encrypted_password": "encPw-aa77bb", "start_url token": "eyJzakTokenValue123",
             "download_token": "dlTok-667788"}


def test_a_literal_stream_key_in_a_rule_file_is_a_check_warning_with_its_line(tmp_path):
    (tmp_path / "yt.yaml").write_text(LITERAL_RULES)
    checked = run_cli("check", str(tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "yt.yaml:8:" in checked.stdout and "stream_key is written in the rule file" in checked.stdout
    assert "${NAME}" in checked.stdout and "reactor encrypt" in checked.stdout, "the warning names both fixes"
    assert LITERAL_KEY not in checked.stdout + checked.stderr
    strict = run_cli("check", "--strict", str(tmp_path))
    assert strict.returncode == 1 and "stream_key is written in the rule file" in strict.stdout + strict.stderr
    explained = run_cli("explain", "meeting.started", "--rules", str(tmp_path))
    assert explained.returncode == 0 and '"stream_key": "<redacted>"' in explained.stdout, explained.stdout
    assert LITERAL_KEY not in explained.stdout + explained.stderr


def test_a_literal_stream_key_and_passcodes_reach_neither_the_history_nor_the_stored_delivery(make_server, zoom):
    server = make_server(LITERAL_RULES, zoom=zoom)
    body = event(meeting_id="9910", uuid_="u-9910", password=PASSCODES["join_url passcode"],
                 join_url=f"https://us06web.zoom.us/j/9910?pwd={PASSCODES['join_url passcode']}&from=addon",
                 start_url=f"https://us06web.zoom.us/s/9910?zak={PASSCODES['start_url token']}",
                 h323_password=PASSCODES["h323_password"], pstn_password=PASSCODES["pstn_password"],
                 encrypted_password=PASSCODES["encrypted_password"])
    body["download_token"] = PASSCODES["download_token"]
    assert server.outcome(server.post(body))["actions"] == 2
    jobs = server.wait_jobs(2)
    assert [j["status"] for j in jobs] == ["done", "done"]
    configure = zoom.api_calls()[0]
    assert configure.body["stream_key"] == LITERAL_KEY, "the outbox carries the value: Zoom got the key"

    [delivery] = server.history()
    shown = history_text(server)
    assert '"stream_key": "<redacted>"' in shown
    stored_body = json.dumps(delivery["body"])
    assert "https://us06web.zoom.us/j/9910?pwd=<redacted>&from=addon" in stored_body, "the URL itself is kept"
    sent = json.dumps([a["sent"] for j in delivery["jobs"] for a in j["attempt_log"]])
    assert '"stream_key": "<redacted>"' in sent
    for name, value in {**PASSCODES, "stream key": LITERAL_KEY}.items():
        for where, text in (("history", shown), ("stored body", stored_body), ("attempts' sent", sent),
                            ("verdicts", json.dumps(delivery["verdicts"])), ("log", server.logs())):
            assert value not in text, f"the {name} is in the {where}"

    server.stop()
    stored = b"".join(p.read_bytes() for p in server.db.parent.glob(server.db.name + "*"))
    for name, value in PASSCODES.items():
        assert value.encode() not in stored, f"the {name} is in the database file"
    with sqlite3.connect(server.db) as conn:  # the key is in the outbox row only, which a worker sends from
        rows = {table: " ".join(map(str, conn.execute(f"SELECT * FROM {table}").fetchall()))
                for table in ("deliveries", "attempts", "jobs")}
    assert LITERAL_KEY not in rows["deliveries"] and LITERAL_KEY not in rows["attempts"]
    assert LITERAL_KEY in rows["jobs"]


# -- 11. an event_ts that is not milliseconds is not used


def test_an_event_ts_in_seconds_starts_the_stream_and_the_history_says_why(make_server, zoom):
    server = make_server(zoom=zoom)
    seconds = int(time.time())
    assert server.outcome(server.post(event(meeting_id="9920", uuid_="u-9920", ts_ms=seconds)))["actions"] == 1
    [job] = server.wait_jobs(1)
    assert job["status"] == "done", job["last_message"]
    assert [c.path for c in zoom.api_calls()] == ["/v2/meetings/9920/livestream/status"]
    [delivery] = server.history()
    assert delivery["body"]["event_ts"] == seconds, "the body keeps what Zoom sent"
    assert abs(delivery["event_ts"] - time.time() * 1000) < 60_000, "the receipt time is the event's time"
    note = f"event_ts {seconds} is not milliseconds since 1970 (it looks like seconds); used the receipt time"
    assert {"rule": "(reactor)", "matched": False, "why": note} in delivery["verdicts"]
    assert note in history_text(server)
    assert note in server.logs()


# -- 13. events from another Zoom account cause no call, and say why


def test_an_event_from_another_zoom_account_is_recorded_and_makes_no_call(make_server, zoom):
    server = make_server(zoom=zoom)
    foreign = event(meeting_id="9930", uuid_="u-9930")
    foreign["payload"]["account_id"] = "OtherAcct9z8y7x"
    answer = server.outcome(server.post(foreign))
    assert answer["status"] == "accepted" and answer["actions"] == 0
    assert server.outcome(server.post(event(meeting_id="9931", uuid_="u-9931")))["actions"] == 1  # ours: called
    zoom.wait_for(1)
    time.sleep(1.5)
    assert [c.path for c in zoom.api_calls()] == ["/v2/meetings/9931/livestream/status"]
    foreign_delivery = next(d for d in server.history() if d["order_key"] == "meetings/9930")
    assert foreign_delivery["jobs"] == []
    why = ("from Zoom account OtherAcct9z8y7x, not ZOOM_ACCOUNT_ID's: no call made; it would fail with this "
           "app's credentials")
    assert {"rule": "Stream town halls", "matched": True, "why": why} in foreign_delivery["verdicts"]
    shown = history_text(server)
    assert f"matched  Stream town halls: {why}" in shown
    assert CLIENT_SECRET not in shown and CLIENT_SECRET not in server.logs()


# -- 14. a rotated Secret Token: the new and the old one both verify during the switch


def url_validation(server, secret):
    plain = uuid.uuid4().hex
    raw = json.dumps({"payload": {"plainToken": plain}, "event_ts": int(time.time() * 1000),
                      "event": "endpoint.url_validation"}).encode()
    response = requests.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw, secret), timeout=10)
    return plain, response


def test_during_a_secret_rotation_the_new_and_the_old_token_verify_and_a_third_does_not(make_server):
    new, old = "rotated-new-secret-4c1d", SECRET
    server = make_server(env={"ZOOM_WEBHOOK_SECRET_TOKEN": f"{new},{old}"})
    assert server.outcome(server.post(event(uuid_="u-new"), secret=new))["status"] == "accepted"
    assert server.outcome(server.post(event(uuid_="u-old"), secret=old))["status"] == "accepted"
    third = server.post(event(uuid_="u-third"), secret="a-third-secret-0000")
    assert third.status_code == 401
    assert sorted(d["body"]["payload"]["object"]["uuid"] for d in server.history()) == ["u-new", "u-old"]
    for secret in (old, new):  # URL validation is answered with the token that signed it
        plain, answer = url_validation(server, secret)
        expected = hmac.new(secret.encode(), plain.encode(), hashlib.sha256).hexdigest()
        assert answer.status_code == 200 and answer.json() == {"plainToken": plain, "encryptedToken": expected}
    assert url_validation(server, "a-third-secret-0000")[1].status_code == 401
    assert new not in server.logs() and old not in server.logs()


def test_a_secret_list_with_an_empty_token_stops_start_up(make_server):
    server = make_server(env={"ZOOM_WEBHOOK_SECRET_TOKEN": "rotated-new-secret-4c1d,,"}, start=False)
    server.start(wait=False)
    assert server.proc.wait(20) != 0
    assert "ZOOM_WEBHOOK_SECRET_TOKEN has an empty token between its commas" in server.logs()
    assert "rotated-new-secret-4c1d" not in server.logs()


def test_doctor_signs_its_url_check_with_the_first_token_of_a_rotation(tmp_path, zoom, make_server):
    from tests.test_doctor import doctor, line, setup

    new, old = "rotated-new-secret-4c1d", SECRET
    server = make_server(zoom=zoom, sub="deployed", env={"ZOOM_WEBHOOK_SECRET_TOKEN": f"{new},{old}"})
    url = server.url + "/webhooks/zoom"
    code, out = doctor(setup(tmp_path, zoom, ZOOM_WEBHOOK_SECRET_TOKEN=f"{new},{old}"), "--url", url)
    assert line(out, "webhook secret").startswith("ok       webhook secret: ZOOM_WEBHOOK_SECRET_TOKEN holds 2 tokens")
    assert code == 0 and line(out, "endpoint").endswith(" ms with the same secret"), out
    assert new not in out
    code, out = doctor(setup(tmp_path, zoom, ZOOM_WEBHOOK_SECRET_TOKEN=f"{old},{new}"), "--url", url)
    assert code == 0 and line(out, "endpoint").endswith(" ms with the same secret"), "the old token still verifies"
    code, out = doctor(setup(tmp_path, zoom, ZOOM_WEBHOOK_SECRET_TOKEN=f"another-webhook-secret-9e2b,{new}"),
                       "--url", url)
    assert code == 1 and line(out, "endpoint").startswith("FAILED   endpoint: "), "a first token it does not hold"


def test_a_literal_stream_key_is_masked_in_history_json_and_scrubbed_from_zoom_echoes(make_server, zoom):
    from tests.conftest import run_cli

    literal = "live-literal-key-5c1e77"
    zoom.script("/v2/meetings/9950/livestream", [Reply(400, {"code": 300, "message": f"Invalid stream key {literal}"})])
    server = make_server("""
rules:
  - name: Literal
    on: meeting.started
    do:
      - livestream.configure:
          stream_url: rtmp://live.example.com/app
          stream_key: live-literal-key-5c1e77
          page_url: https://example.com/live
""", zoom=zoom)
    server.post(event(meeting_id="9950"))
    [job] = server.wait_jobs(1)
    assert job["status"] == "dead" and literal not in job["last_message"] and "<redacted>" in job["last_message"]
    shown = run_cli("history", "--json", env={"DATABASE_URL": f"sqlite:///{server.db}"})
    assert shown.returncode == 0 and literal not in shown.stdout and '"stream_key": "<redacted>"' in shown.stdout


# -- redirects are answers, not followed


def test_a_redirect_from_zoom_is_not_followed_and_the_history_says_where_it_pointed(make_server, zoom):
    """requests followed redirects: a 302 turned the PATCH into a GET without its body, and whatever the GET
    got was recorded as the call's outcome (a stream 'started' that was never asked for)."""
    server = make_server(zoom=zoom)
    zoom.script("/v2/meetings/9930/", [Reply(302, headers={"Location": zoom.url + "/v2/elsewhere"})])
    assert server.outcome(server.post(event(meeting_id="9930", uuid_="u-9930")))["actions"] == 1
    [job] = server.wait_jobs(1)
    assert job["status"] == "dead"
    assert job["last_message"] == (f"Zoom answered 302: a redirect to {zoom.url}/v2/elsewhere, not followed: "
                                   f"check ZOOM_API_URL")
    time.sleep(0.5)
    assert [(c.method, c.path) for c in zoom.api_calls("/")] == [("PATCH", "/v2/meetings/9930/livestream/status")]
