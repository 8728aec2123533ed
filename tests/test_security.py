"""What anyone on the internet can see or stall (issue 21): one test per finding, through the real
gunicorn where the finding is about HTTP. SECURITY.md names the test that proves each bound."""
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import pytest
import requests

from reactor.redact import REDACTED, scrub
from reactor.store import open_store
from tests.conftest import ROOT, SECRET, STREAM_KEY, ReactorServer, event, log_lines, run_cli, signed_headers, wait_until
from tests.zoom_standin import Reply, ZoomStandIn


def stored_text(server) -> str:
    """Every delivery row as the database holds it (body and verdicts as stored JSON text)."""
    with sqlite3.connect(server.db) as conn:
        return "\n".join(" ".join(map(str, row)) for row in conn.execute("SELECT * FROM deliveries"))


# -- 1. /readyz answers the status only, from a check cached per process ----------------------------

SECRET_RULE = """
rules:
  - name: Stream the all-hands to YouTube
    on: meeting.started
    when: {topic: {regex: "(?i)all.hands"}}
    do:
      - livestream.configure:
          stream_url: rtmp://a.rtmp.youtube.com/live2
          stream_key: ${YOUTUBE_STREAM_KEY}
          page_url: https://youtube.com/@acme/live
"""


def test_readyz_after_a_rejected_reload_shows_no_path_rule_or_variable(make_server, zoom):
    server = make_server(SECRET_RULE, zoom=zoom)  # not a dry run: an unset ${NAME} rejects the reload
    (server.rules_dir / "rules.yaml").write_text(SECRET_RULE.replace("YOUTUBE_STREAM_KEY", "CONFIDENTIAL_VAR_NAME")
                                                 .replace("all.hands", "literal-value-42"))
    wait_until(lambda: len(log_lines(server, "rules reload rejected; the previous rules stay active")) == 2)
    answers = [requests.get(server.url + "/readyz", timeout=5) for _ in range(6)]  # either worker may answer
    for answer in answers:
        assert answer.status_code == 200
        assert answer.json() == {"status": "ready"}
        for private in (str(server.tmp), "rules.yaml", "Stream the all-hands", "CONFIDENTIAL_VAR_NAME",
                        "literal-value-42", "sqlite", "version", "loaded_at"):
            assert private not in answer.text
    # the details are where the operator looks: the log
    assert "CONFIDENTIAL_VAR_NAME" in server.logs()


def test_readyz_flood_answers_from_one_check_per_process(make_server):
    server = make_server(env={"WEB_CONCURRENCY": "1"})
    blocker = sqlite3.connect(server.db, isolation_level=None)
    time.sleep(1.6)  # the start-up check has expired
    blocker.execute("BEGIN EXCLUSIVE")  # the database cannot take writes: a check waits ~2 s, then fails
    try:
        first = requests.get(server.url + "/readyz", timeout=10)
        assert first.status_code == 503 and first.json() == {"status": "unavailable"}
        answered_at = time.monotonic()
        times = []
        while time.monotonic() - answered_at < 1.0:  # inside the 1.5 s the answer is reused
            started = time.monotonic()
            answer = requests.get(server.url + "/readyz", timeout=10)
            times.append(time.monotonic() - started)
            assert answer.status_code == 503
        assert len(times) >= 5 and max(times) < 0.5, f"each check waited for the database: {times}"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_until(lambda: requests.get(server.url + "/readyz", timeout=10).status_code == 200, timeout=6)


# -- 2. a rule's regex cannot be made to backtrack by event text ------------------------------------

BACKTRACKING = """
rules:
  - name: Topic ends in a's
    on: meeting.started
    when: {topic: {regex: "(a+)+$"}}
    do: [livestream.stop]
"""


def test_backtracking_regex_against_40_as_and_a_bang_answers_within_a_second(make_server):
    server = make_server(BACKTRACKING, env={"WEB_CONCURRENCY": "1"})
    started = time.monotonic()
    response = server.post(event(topic="a" * 40 + "!"))  # Python's re: 2**40 steps
    took = time.monotonic() - started
    assert response.status_code == 200 and took < 1.0, f"answered {response.status_code} in {took:.2f} s"
    assert server.outcome(server.post(event(topic="aaaa")))["actions"] == 1  # the rule still works
    [matched] = [d for d in server.history() if d["body"]["payload"]["object"]["topic"] == "aaaa"]
    assert matched["verdicts"][0]["matched"] is True


def test_patterns_see_the_first_1000_characters_and_are_at_most_500(tmp_path):
    from reactor.errors import RulesError
    from reactor.events import event_from_body
    from reactor.rules.load import load_rules

    (tmp_path / "r.yaml").write_text('rules:\n  - name: r\n    on: meeting.started\n'
                                     '    when: {topic: {regex: "b"}}\n    do: [livestream.stop]\n')
    rules = load_rules(tmp_path, resolve_secrets=False)

    def matches(topic: str) -> bool:
        body = event(topic=topic)
        return rules.evaluate(event_from_body(body, json.dumps(body).encode()))[0].matched

    assert matches("a" * 999 + "b") and not matches("a" * 1000 + "b")
    (tmp_path / "r.yaml").write_text('rules:\n  - name: r\n    on: meeting.started\n'
                                     f'    when: {{topic: {{regex: "{"a" * 501}"}}}}\n    do: [livestream.stop]\n')
    with pytest.raises(RulesError, match="longer than 500 characters"):
        load_rules(tmp_path, resolve_secrets=False)


@pytest.mark.parametrize("pattern, where, fix", [
    (r"(\\w)\\1", "backreferences", "match the repeated text explicitly"),
    (r"foo(?=bar)", "lookahead or lookbehind", "second condition"),
    (r"end\\Z", "invalid escape sequence", "write \\z for the end of the text"),
])
def test_check_refuses_a_regex_re2_cannot_run_with_file_line_and_fix(tmp_path, pattern, where, fix):
    (tmp_path / "r.yaml").write_text(f'rules:\n  - name: r\n    on: meeting.started\n    when:\n'
                                     f'      topic: {{regex: "{pattern}"}}\n    do: [livestream.stop]\n')
    result = run_cli("check", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'r.yaml'}:5: rule \"r\": topic: invalid regex" in result.stdout
    assert where in result.stdout and fix in result.stdout


def test_regex_semantics_kept_case_flag_search_and_a_cut_emoji(make_server):
    """(?i) and search-anywhere still work on RE2 (the shipped rules use `(?i)rehearsal|test`), and a topic cut
    mid-emoji (a lone surrogate, which RE2's UTF-8 cannot take) is matched, not a 500."""
    rules = """
rules:
  - name: Not rehearsals
    on: meeting.started
    when: {topic: {regex: "(?i)rehearsal|test"}}
    do: [livestream.stop]
"""
    server = make_server(rules, env={"WEB_CONCURRENCY": "1"})
    assert server.outcome(server.post(event(topic="Town Hall REHEARSAL")))["actions"] == 1
    assert server.outcome(server.post(event(topic="Town Hall")))["actions"] == 0
    raw = json.dumps(event(topic="Test \ud83d")).encode()  # json.dumps writes the half emoji as \\ud83d
    response = server.post(None, raw=raw)
    assert server.outcome(response)["actions"] == 1


# -- 3. one odd delivery fails alone ----------------------------------------------------------------

def post_at_once(server, raws: list[bytes]) -> list[requests.Response]:
    barrier = threading.Barrier(len(raws))
    answers: list = [None] * len(raws)

    def send(i):
        barrier.wait()
        answers[i] = requests.post(server.url + "/webhooks/zoom", data=raws[i], headers=signed_headers(raws[i]),
                                   timeout=10)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(raws))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


@pytest.mark.parametrize("field", ["uuid", "event"])
def test_a_lone_surrogate_gets_a_4xx_while_ten_valid_deliveries_sent_at_once_are_accepted(make_server, field):
    server = make_server(env={"WEB_CONCURRENCY": "1"})  # one process: the eleven share group commits
    for round_ in range(3):
        bad = event(topic="Town Hall")
        if field == "uuid":
            bad["payload"]["object"]["uuid"] = "Xa3kQ\ud83d"
        else:
            bad["event"] = "meeting.started\ud83d"
        good = [event(topic="Town Hall") for _ in range(10)]
        answers = post_at_once(server, [json.dumps(bad).encode()] + [json.dumps(b).encode() for b in good])
        assert 400 <= answers[0].status_code < 500, answers[0].text
        assert "lone surrogate" in answers[0].json()["error"]
        assert [a.status_code for a in answers[1:]] == [200] * 10, [a.text for a in answers[1:]]
        assert {a.json()["status"] for a in answers[1:]} == {"accepted"}
    assert len(server.history(limit=100)) == 30


def test_a_url_validation_whose_plain_token_holds_a_lone_surrogate_gets_a_400_not_a_500(make_server):
    server = make_server(env={"WEB_CONCURRENCY": "1"})
    validation = {"event": "endpoint.url_validation", "event_ts": int(time.time() * 1000),
                  "payload": {"plainToken": "qgg8vlvZRS6U\ud83d"}}
    answer = server.post(validation)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == ("payload.plainToken holds a lone surrogate (\\ud83d, half of a character), "
                                      "which cannot be stored: send it as valid UTF-8")
    long = server.post({**validation, "payload": {"plainToken": "x" * 513}})
    assert long.status_code == 400 and "at most 512" in long.json()["error"], long.text


@pytest.mark.parametrize("body, says", [
    ({"event": "meeting.started", "payload": {"object": {"id": 10**25, "uuid": "u1"}}}, "digits"),
    ({"event": "meeting.started", "payload": {"object": {"id": 1, "uuid": "u" * 201}}}, "at most 200"),
    ({"event": "m" * 101}, "at most 100"),
    ({"event": "meeting.started", "payload": {"account_id": "acc\u0000", "object": {"id": 1}}}, "control character"),
    ({"event": "meeting.started", "payload": {"object": {"id": 1, "uuid": "u", "duration": 1e400}}}, "float"),
])
def test_identifying_fields_are_checked_at_parse_time(make_server, body, says):
    server = make_server(env={"WEB_CONCURRENCY": "1"})
    raw = json.dumps(body).encode().replace(b"Infinity", b"1e400")  # json.dumps writes 1e400 as Infinity
    response = server.post(None, raw=raw)
    assert response.status_code == 400 and says in response.json()["error"], response.text
    assert server.history() == []


def test_a_group_commit_the_database_refuses_is_retried_one_delivery_at_a_time(tmp_path):
    """The store alone (no parse-time check in front): an append whose key SQLite cannot bind fails,
    the ten committed in the same group are stored."""
    store = open_store(f"sqlite:///{tmp_path / 'reactor.db'}")
    store.migrate()
    blocker = sqlite3.connect(tmp_path / "reactor.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # hold the file so all eleven queue for one group commit
    outcomes: dict = {}

    def accept(key):
        try:
            outcomes[key] = store.append("{}", key, "default", time.time())
        except Exception as exc:
            outcomes[key] = exc

    keys = ["bad-\ud83d"] + [f"good-{n}" for n in range(10)]
    threads = [threading.Thread(target=accept, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    time.sleep(0.3)
    blocker.execute("ROLLBACK")
    for t in threads:
        t.join()
    blocker.close()
    assert type(outcomes["bad-\ud83d"]).__name__ == "StoreError"
    assert all(not isinstance(outcomes[k], Exception) for k in keys[1:]), outcomes
    with sqlite3.connect(tmp_path / "reactor.db") as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 10


# -- 4. secrets never reach the verdicts ---------------------------------------------------------------

def test_verdicts_show_a_stream_key_redacted_as_the_body_does(make_server):
    rules = """
rules:
  - name: Key check
    on: meeting.live_streaming_started
    when: {live_streaming.custom_live_streaming_settings.stream_key: {regex: "^never"}}
    do: [livestream.stop]
  - name: Settings check
    on: meeting.live_streaming_started
    when: {live_streaming.custom_live_streaming_settings: {equals: "x"}}
    do: [livestream.stop]
"""
    server = make_server(rules, env={"WEB_CONCURRENCY": "1"})
    body = event("meeting.live_streaming_started", live_streaming={
        "service": "Custom_Live_Streaming_Service", "custom_live_streaming_settings": {"stream_key": "sk-9f8e7d6c"}})
    assert server.post(body).status_code == 200
    [delivery] = server.history()
    assert {v["rule"]: v["matched"] for v in delivery["verdicts"]} == {"Key check": False, "Settings check": False}
    assert "sk-9f8e7d6c" not in stored_text(server)
    assert "sk-9f8e" not in json.dumps(delivery)
    assert REDACTED in delivery["verdicts"][0]["why"]


# -- 5. a rule cannot send reactor's own settings to Zoom ----------------------------------------------

@pytest.mark.parametrize("name", ["ZOOM_CLIENT_SECRET", "DATABASE_URL", "REACTOR_SECRET_KEY",
                                  "ZOOM_WEBHOOK_SECRET_TOKEN"])
def test_own_setting_in_a_rule_fails_check_with_file_line(tmp_path, name):
    (tmp_path / "r.yaml").write_text("rules:\n  - name: Leak\n    on: meeting.started\n    do:\n"
                                     "      - livestream.configure:\n"
                                     "          stream_url: rtmp://a.rtmp.youtube.com/live2\n"
                                     f"          stream_key: ${{{name}}}\n"
                                     "          page_url: https://youtube.com/@acme/live\n")
    value = "postgresql://u:the-value-of-the-setting@h/db" if name == "DATABASE_URL" else "the-value-of-the-setting"
    result = run_cli("check", str(tmp_path), env={name: value})
    assert result.returncode == 1
    assert f"{tmp_path / 'r.yaml'}:7: rule \"Leak\": livestream.configure: stream_key: ${{{name}}} is one of " \
           f"reactor's own settings" in result.stdout, result.stdout
    assert "the-value-of-the-setting" not in result.stdout + result.stderr


# -- 6. error answers and the log ------------------------------------------------------------------------

def test_error_answers_name_no_path_setting_tolerance_or_skew(make_server):
    server = make_server(env={"WEB_CONCURRENCY": "1"})
    raw = json.dumps(event()).encode()
    answers = {
        404: requests.get(server.url + "/", timeout=5),
        405: requests.get(server.url + "/webhooks/zoom", timeout=5),
        401: requests.post(server.url + "/webhooks/zoom", data=raw, timeout=5,
                           headers=signed_headers(raw, timestamp=int(time.time()) - 9321)),
    }
    wrong = requests.post(server.url + "/webhooks/zoom", data=raw, headers=signed_headers(raw, secret="nope"), timeout=5)
    for status, answer in [*answers.items(), (401, wrong)]:
        assert answer.status_code == status
        text = answer.text
        for private in ("webhooks", "ZOOM_WEBHOOK_SECRET_TOKEN", "REACTOR_SIGNATURE_TOLERANCE", "932", "7200 s"):
            assert private not in text, f"{status} answer reveals {private!r}: {text}"


def test_rejected_requests_are_logged_with_reason_and_skew_rate_limited(make_server):
    server = make_server(env={"WEB_CONCURRENCY": "1"})
    raw = json.dumps(event()).encode()
    skewed = signed_headers(raw, timestamp=int(time.time()) - 9321)
    requests.post(server.url + "/webhooks/zoom", data=raw, headers=skewed, timeout=5)
    forged = signed_headers(raw, secret="not-the-secret")
    requests.post(server.url + "/webhooks/zoom", data=raw, headers=forged, timeout=5)
    requests.get(server.url + "/wp-admin", timeout=5)
    wait_until(lambda: len(log_lines(server, "rejected request")) == 3)
    clock, signature, probe = log_lines(server, "rejected request")
    assert clock["status"] == 401 and 9300 <= clock["skew_s"] <= 9400 and "clock" in clock["reason"]
    assert signature["status"] == 401 and "does not match" in signature["reason"] and abs(signature["skew_s"]) < 60
    assert probe["status"] == 404 and probe["path"] == "/wp-admin"
    for secret in (SECRET, skewed["x-zm-signature"], forged["x-zm-signature"], "not-the-secret"):
        assert secret not in server.logs()
    with requests.Session() as session:  # a flood of forged deliveries
        for _ in range(300):
            session.post(server.url + "/webhooks/zoom", data=raw, headers=forged, timeout=5)
    time.sleep(0.3)
    assert len(log_lines(server, "rejected request")) == 20, "at most 20 rejections a minute are logged per process"


# -- 7. local files are private from the start --------------------------------------------------------

def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_var_the_database_its_wal_and_the_local_secret_are_created_private(tmp_path, monkeypatch):
    old_umask = os.umask(0o022)  # the usual umask: files 0644, folders 0755 unless reactor says otherwise
    try:
        db = tmp_path / "var" / "reactor.db"
        server = ReactorServer(tmp_path, None, {"DATABASE_URL": f"sqlite:///{db}", "WEB_CONCURRENCY": "1"})
        (server.rules_dir / "rules.yaml").write_text("rules: []\n")
        server.start()
        try:
            assert server.post(event()).status_code == 200
            assert mode(tmp_path / "var") == 0o700
            for path in (db, f"{db}-wal", f"{db}-shm"):
                assert mode(path) == 0o600, f"{path} is {oct(mode(path))}"
        finally:
            server.stop()

        from reactor.cli import local

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        value = local.local_secret(create=True)
        assert mode("var") == 0o700 and mode("var/local-webhook-secret") == 0o600
        assert local.local_secret(create=False) == value
    finally:
        os.umask(old_umask)


# -- 8. the CLI keeps secrets out of argv ----------------------------------------------------------------

def test_encrypt_reads_the_value_from_stdin_only():
    from reactor.secrets import keygen

    key = keygen()
    refused = run_cli("encrypt", "argv-secret-value-77", env={"REACTOR_SECRET_KEY": key})
    assert refused.returncode == 2
    assert "stdin only" in refused.stderr and "enc:" not in refused.stdout
    assert "argv-secret-value-77" not in refused.stdout + refused.stderr
    piped = subprocess.run([sys.executable, "-m", "reactor", "encrypt"], input="piped-value\n", capture_output=True,
                           text=True, cwd=ROOT, env={**os.environ, "REACTOR_SECRET_KEY": key}, timeout=60)
    assert piped.returncode == 0 and piped.stdout.startswith("enc:")


# -- 9. small ones --------------------------------------------------------------------------------------

def test_scrub_removes_a_secret_cut_at_the_edge_and_access_tokens():
    key = "live-key-0123456789abcdef"
    cut = ("x" * 290 + " " + key)[:300]  # Zoom's message as stored: cut to 300 characters, mid-key
    assert key[:5] in cut and key not in cut
    assert scrub(cut, [key]).endswith(REDACTED) and key[:5] not in scrub(cut, [key])
    assert scrub(key[-9:] + " was refused", [key]) == REDACTED + " was refused"
    token = "eyJzdiI6IjAwMDAwMSIsImFsZyI6IkhTNTEyIn0.eyJhdWQiOiJodHRwczovL29hdXRoLnpvb20udXMifQ.c2ln"
    assert token[:12] not in scrub(f"invalid access token {token}", [])
    assert scrub(f"header was Bearer {token[:30]}", []) == f"header was {REDACTED}"
    assert scrub("meeting 85746065432 not found", [key]) == "meeting 85746065432 not found"


def test_a_stream_key_cut_by_zoom_message_limit_is_not_in_the_history(make_server, zoom):
    rules = """
rules:
  - name: Configure
    on: meeting.started
    do:
      - livestream.configure:
          stream_url: rtmp://a.rtmp.youtube.com/live2
          stream_key: ${YOUTUBE_STREAM_KEY}
          page_url: https://youtube.com/@acme/live
"""
    message = "x" * (300 - 8) + " " + STREAM_KEY  # reactor keeps 300 characters: the key is cut after 7
    zoom.script("/v2/meetings/", [Reply(400, {"code": 300, "message": message})])
    server = make_server(rules, zoom=zoom, env={"WEB_CONCURRENCY": "1"})
    assert server.post(event(meeting_id="802")).status_code == 200
    [job] = server.wait_jobs(1)
    text = json.dumps(job)
    assert STREAM_KEY[:7] not in text and REDACTED in job["attempt_log"][0]["message"]


def test_a_netrc_default_entry_never_replaces_the_bearer_token_nor_reaches_zoom_or_the_chat(make_server, zoom, tmp_path):
    """requests reads ~/.netrc for every call it is given no credentials for, and a `default` entry matches
    every host: the Zoom call's Bearer token became that login (Zoom answers 401) and a chat post carried it."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("default login someone password netrc-password-7f3a\n")
    (home / ".netrc").chmod(0o600)
    chat = ZoomStandIn()
    try:
        server = make_server(zoom=zoom, env={"HOME": str(home), "WEB_CONCURRENCY": "1",
                                             "REACTOR_ALERT_URL": chat.url + "/hooks/T0001/B0002/hook-secret"})
        assert server.post(event(topic="Town Hall")).status_code == 200
        [call] = zoom.wait_for(1)
        assert call.headers.get("authorization") == f"Bearer {zoom.issued_tokens()[0]}"
        assert call.status == 204
        for _ in range(25):  # a burst of bad signatures: one alert to the chat
            assert server.post(event(), secret="rotated-secret").status_code == 401
        [post] = chat.wait_for(1, "/hooks/", timeout=30)
        assert "authorization" not in post.headers
        sent = json.dumps([c.headers for c in zoom.token_calls + zoom.api_calls("/") + chat.api_calls("/")])
        assert "netrc-password" not in sent and "c29tZW9uZTpuZXRyYy1wYXNzd29yZC03ZjNh" not in sent  # nor base64'd
    finally:
        chat.close()
