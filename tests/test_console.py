"""The operator console (reactor/console) through a real gunicorn: who gets in, what a POST needs, what
read-only refuses, retries recorded in the history, and hostile input that never turns into a 500, a
reflected script or a secret on a page."""
from __future__ import annotations

import calendar
import json
import re
import time

import requests

from tests.conftest import CLIENT_SECRET, SECRET, STREAM_KEY, TOWN_HALL_RULES, event
from tests.zoom_standin import Reply

PASSWORD = "console-test-password-4b1f"
CONSOLE = {"REACTOR_CONSOLE_PASSWORD": PASSWORD}
SCRIPT = "<script>alert(1)</script>"
HOSTILE_RULES = TOWN_HALL_RULES + f"""
  - name: "{SCRIPT} board"
    on: meeting.started
    when:
      topic: {{contains: "{SCRIPT}"}}
    do:
      - livestream.configure:
          stream_url: rtmp://a.rtmp.youtube.com/live2
          stream_key: ${{YOUTUBE_STREAM_KEY}}
          page_url: https://youtube.com/live
"""


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(server, password: str = PASSWORD, session: requests.Session | None = None) -> requests.Session:
    session = session or requests.Session()
    token = csrf_of(session.get(server.url + "/console/login", timeout=10).text)
    answer = session.post(server.url + "/console/login", data={"csrf": token, "password": password}, timeout=10)
    assert answer.status_code == 200 and answer.url.endswith("/console"), answer.text
    return session


def message(html: str) -> str:
    found = re.search(r'class="error" id="[a-z-]+">([^<]*)<', html)
    return found.group(1) if found else ""


def dead_start(server, zoom, meeting="85746065432") -> tuple[int, int]:
    """A town hall whose start Zoom refuses: (delivery id, the dead job's id)."""
    zoom.script(f"/v2/meetings/{meeting}/livestream/status",
                [Reply(400, {"code": 3000, "message": "Cannot start the live stream: the stream URL is not set"})])
    delivery = server.post(event(meeting_id=meeting, topic="Town Hall - dead")).json()["delivery"]
    deadline = time.time() + 20
    while time.time() < deadline:  # this meeting's job: another's, dead before, must not answer for it
        dead = [j for j in server.jobs() if j["order_key"] == f"meetings/{meeting}" and j["status"] == "dead"]
        if dead:
            return delivery, dead[0]["id"]
        time.sleep(0.05)
    raise AssertionError(f"meeting {meeting}'s start did not die: {server.jobs()}")


def test_without_a_password_the_console_is_a_404_that_says_how_to_turn_it_on(make_server):
    server = make_server()
    for path in ("/console", "/console/login", "/console/deliveries/1"):
        answer = requests.get(server.url + path, timeout=10)
        assert answer.status_code == 404 and "REACTOR_CONSOLE_PASSWORD" in answer.text, path
    assert requests.post(server.url + "/console/login", data={"password": "x"}, timeout=10).status_code == 404


def test_login_sets_a_strict_cookie_logout_ends_it_and_an_old_session_expires(make_server):
    server = make_server(env=CONSOLE)
    anonymous = requests.get(server.url + "/console/deliveries?q=1", timeout=10, allow_redirects=False)
    assert anonymous.status_code == 302 and "/console/login?next=" in anonymous.headers["location"]
    session = requests.Session()
    token = csrf_of(session.get(server.url + "/console/login", timeout=10).text)
    answer = session.post(server.url + "/console/login", data={"csrf": token, "password": PASSWORD}, timeout=10,
                          allow_redirects=False)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie and "Secure" not in cookie
    assert session.get(server.url + "/console", timeout=10).status_code == 200
    behind_https = requests.Session()
    token = csrf_of(behind_https.get(server.url + "/console/login", headers={"X-Forwarded-Proto": "https"}).text)
    answer = behind_https.post(server.url + "/console/login", data={"csrf": token, "password": PASSWORD}, timeout=10,
                               headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
    assert "Secure" in answer.headers["set-cookie"], "a PaaS router terminating TLS: the cookie is Secure"

    # a cookie from a login 13 hours ago, signed with the console's own key, is refused
    from flask import Flask

    from reactor.console.auth import configure_sessions

    app = Flask("forge")
    configure_sessions(app, PASSWORD)
    old = app.session_interface.get_signing_serializer(app).dumps({"at": time.time() - 13 * 3600, "csrf": "x"})
    stale = requests.get(server.url + "/console", cookies={"reactor_console": old}, timeout=10, allow_redirects=False)
    assert stale.status_code == 302 and "/console/login" in stale.headers["location"]
    fresh = app.session_interface.get_signing_serializer(app).dumps({"at": time.time() - 60, "csrf": "x"})
    assert requests.get(server.url + "/console", cookies={"reactor_console": fresh}, timeout=10).status_code == 200

    token = csrf_of(session.get(server.url + "/console", timeout=10).text)
    session.post(server.url + "/console/logout", data={"csrf": token}, timeout=10)
    after = session.get(server.url + "/console", timeout=10, allow_redirects=False)
    assert after.status_code == 302 and "/console/login" in after.headers["location"]


def test_wrong_passwords_are_slowed_and_then_refused_for_a_while(make_server):
    server = make_server(env={**CONSOLE, "WEB_CONCURRENCY": "1"})  # the count is per process
    session = requests.Session()
    token = csrf_of(session.get(server.url + "/console/login", timeout=10).text)
    started = time.time()
    for n in range(5):
        answer = session.post(server.url + "/console/login", data={"csrf": token, "password": f"guess-{n}"}, timeout=10)
        assert answer.status_code == 401 and message(answer.text) == "wrong password"
    assert time.time() - started >= 4.5, "each wrong password is answered a second later"
    refused = session.post(server.url + "/console/login", data={"csrf": token, "password": PASSWORD}, timeout=10)
    assert refused.status_code == 429 and "too many wrong passwords" in message(refused.text)
    assert "Log out" not in refused.text and session.get(server.url + "/console", allow_redirects=False).status_code == 302


def test_a_console_retry_needs_csrf_runs_against_zoom_and_is_in_the_history(make_server, zoom):
    server = make_server(env=CONSOLE, zoom=zoom)
    delivery, job = dead_start(server, zoom)
    session = login(server)
    page = session.get(f"{server.url}/console/deliveries/{delivery}", timeout=10).text
    assert "Cannot start the live stream: the stream URL is not set" in page and f'id="retry-{job}"' in page
    url = f"{server.url}/console/jobs/{job}/retry"
    no_token = session.post(url, data={"delivery": delivery}, timeout=10)
    wrong = session.post(url, data={"delivery": delivery, "csrf": "forged"}, timeout=10)
    logged_out = requests.post(url, data={"delivery": delivery, "csrf": csrf_of(page)}, timeout=10)
    for answer in (no_token, wrong, logged_out):
        assert answer.status_code == 403 and "nothing was changed" in message(answer.text)
    time.sleep(0.5)
    assert [j["status"] for j in server.jobs()] == ["dead"] and len(zoom.api_calls()) == 1
    done = session.post(url, data={"delivery": delivery, "csrf": csrf_of(page)}, timeout=10)
    assert done.status_code == 200 and f"action {job} re-queued" in done.text
    [row] = server.wait_jobs(1, statuses=("done",))
    assert len(zoom.succeeded()) == 1, "Zoom received the retried start"
    requeued = [a for a in row["attempt_log"] if a["outcome"] == "requeued"]
    assert len(requeued) == 1 and "retried from the console at " in requeued[0]["message"]
    assert requeued[0]["message"].endswith("from 127.0.0.1")
    again = session.post(url, data={"delivery": delivery, "csrf": csrf_of(page)}, timeout=10)
    assert "only a dead action can be retried" in again.text


def test_read_only_shows_everything_and_changes_nothing(make_server, zoom):
    server = make_server(env={**CONSOLE, "REACTOR_CONSOLE_READONLY": "1"}, zoom=zoom)
    delivery, job = dead_start(server, zoom)
    session = login(server)
    page = session.get(f"{server.url}/console/deliveries/{delivery}", timeout=10).text
    assert "read-only" in page and "Cannot start the live stream" in page and "retry-" not in page
    for url, data in ((f"/console/jobs/{job}/retry", {"delivery": delivery}), ("/console/retry-dead", {"confirm": "yes"})):
        answer = session.post(server.url + url, data={**data, "csrf": csrf_of(page)}, timeout=10)
        assert answer.status_code == 403 and "read-only" in message(answer.text)
    assert "confirm-retry" not in session.get(server.url + "/console/retry-dead", timeout=10).text
    time.sleep(0.5)
    assert [j["status"] for j in server.jobs()] == ["dead"] and len(zoom.api_calls()) == 1


def test_bulk_retry_of_a_filter_asks_first_then_retries_only_that_filter(make_server, zoom):
    server = make_server(env=CONSOLE, zoom=zoom)
    dead_start(server, zoom, meeting="111")
    dead_start(server, zoom, meeting="222")
    session = login(server)
    ask = session.get(server.url + "/console/retry-dead?q=111", timeout=10)
    assert "1 dead action(s)" in ask.text and len(zoom.api_calls()) == 2, "asking changes nothing"
    session.post(server.url + "/console/retry-dead", data={"q": "111", "csrf": csrf_of(ask.text)}, timeout=10)
    time.sleep(0.5)
    assert len(zoom.api_calls()) == 2, "without confirm=yes it only asks again"
    session.post(server.url + "/console/retry-dead", data={"q": "111", "confirm": "yes", "csrf": csrf_of(ask.text)},
                 timeout=10)
    zoom.wait_for(3)
    time.sleep(0.5)
    assert {j["order_key"]: j["status"] for j in server.jobs()} == {"meetings/111": "done", "meetings/222": "dead"}


def test_script_posted_everywhere_is_never_reflected_unescaped(make_server):
    server = make_server(HOSTILE_RULES, env=CONSOLE)
    delivery = server.post(event(topic=f"Town Hall {SCRIPT}", meeting_id="333")).json()["delivery"]
    session = login(server)
    pasted = json.dumps(event(topic=SCRIPT))
    token = csrf_of(session.get(server.url + "/console/rules", timeout=10).text)
    pages = [session.get(server.url + path, timeout=10) for path in (
        "/console", "/console/deliveries", f"/console/deliveries/{delivery}", "/console/meetings/333", "/console/rules",
        f"/console/deliveries?q={SCRIPT}", f"/console/deliveries?q=Town+Hall+{SCRIPT}", f"/console/deliveries?event={SCRIPT}",
        f"/console/deliveries?since={SCRIPT}", f"/console/{SCRIPT}", f"/console/retry-dead?q={SCRIPT}",
        f"/console/login?next={SCRIPT}")]
    pages += [session.post(server.url + "/console/rules", data={"csrf": token, "event": body}, timeout=10)
              for body in (pasted, SCRIPT, '{"event": "' + SCRIPT + '"}')]
    for answer in pages:
        assert answer.status_code < 500 and "<script" not in answer.text.lower(), answer.url
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert escaped in pages[2].text and escaped in pages[4].text, "the topic and the rule name are shown, escaped"
    assert escaped in pages[-3].text and "MATCH" in pages[-3].text, "the pasted event matched the hostile rule"
    assert pages[6].status_code == 200 and f"/console/deliveries/{delivery}" in pages[6].text, "found by topic"


HOSTILE = ["/console/deliveries/0", "/console/deliveries/99999999999999999999999999",
           "/console/deliveries?before=-1", "/console/deliveries?before=1e9", "/console/deliveries?before=" + "9" * 40,
           "/console/deliveries?q=" + "x" * 3000, "/console/deliveries?q=%00", "/console/deliveries?q=a%0Ab",
           "/console/deliveries?q=%ff%fe", "/console/deliveries?since=yesterday", "/console/deliveries?since=99999999d",
           "/console/deliveries?since=1h&until=2h", "/console/deliveries?event=MEETING", "/console/deliveries?q=1&q=2",
           "/console/meetings/abc", "/console/meetings/" + "1" * 30, "/console/meetings/%00", "/console/%2e%2e/%2e%2e/etc/passwd",
           "/console/jobs/1/retry", "/console/logout", "/console/deliveries?since=2026-13-45T99:00"]


def test_hostile_query_strings_and_paths_get_a_message_never_a_500(make_server):
    server = make_server(env=CONSOLE)
    server.post(event())
    session = login(server)
    for path in HOSTILE:
        answer = session.get(server.url + path, timeout=10)
        assert answer.status_code < 500, (path, answer.status_code)
        if answer.status_code >= 400:
            assert message(answer.text), (path, answer.text[:300])
    token = csrf_of(session.get(server.url + "/console/rules", timeout=10).text)
    for body, status in (("{not json", 400), ("[1, 2]", 400), ("[" * 5000 + "]" * 5000, 400),
                         (json.dumps({"event": "meeting.started", "payload": {"object": "x" * 300_000}}), 400),
                         ("x" * 600_000, 400)):
        answer = session.post(server.url + "/console/rules", data={"csrf": token, "event": body}, timeout=30)
        assert answer.status_code == status and message(answer.text), (body[:40], answer.status_code)
    try:  # over 1 MiB: refused before it is read (413), or the connection closed while the client still sends
        huge = session.post(server.url + "/console/rules", data={"csrf": token, "event": "x" * (2 * 1024 * 1024)},
                            timeout=30)
        assert huge.status_code == 413 and "1 MiB" in message(huge.text)
    except requests.ConnectionError:
        pass
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200, "the server still answers"


def test_no_page_shows_a_secret_and_every_page_has_a_strict_csp(make_server, zoom):
    server = make_server(HOSTILE_RULES, env=CONSOLE, zoom=zoom)
    zoom.script("/v2/meetings/444/livestream", [Reply(400, {"code": 300, "message": f"bad key {STREAM_KEY}"})])
    delivery = server.post(event(meeting_id="444", topic=f"{SCRIPT} stream_key", stream_key=STREAM_KEY,
                                 password="meeting-passcode-9")).json()["delivery"]
    server.wait_jobs(1)
    session = login(server)
    token = csrf_of(session.get(server.url + "/console/rules", timeout=10).text)
    pages = [session.get(server.url + path, timeout=10) for path in (
        "/console", "/console/deliveries", f"/console/deliveries/{delivery}", "/console/meetings/444",
        "/console/rules", "/console/retry-dead", "/console/static/console.css")]
    pages.append(session.post(server.url + "/console/rules", data={"csrf": token, "sample": "meeting.started",
                                                                   "event": json.dumps(event(topic=SCRIPT))}))
    assert "${YOUTUBE_STREAM_KEY}" in pages[2].text or "YOUTUBE_STREAM_KEY" in pages[2].text
    for answer in pages:
        assert answer.status_code == 200, answer.url
        for secret in (STREAM_KEY, CLIENT_SECRET, SECRET, PASSWORD, "meeting-passcode-9"):
            assert secret not in answer.text, (answer.url, secret)
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert answer.headers["X-Frame-Options"] == "DENY"


def test_the_overviews_figures_are_counted_at_most_every_2_seconds_per_process_and_say_as_of_when():
    from reactor.console.reading import Shared

    figures, computed = Shared(2.0), []
    for now in (100.0, 101.9, 102.0, 99.0):  # a clock stepped back is not trusted either
        figures.get(now, lambda at: computed.append(at) or len(computed))
    assert computed == [100.0, 102.0, 99.0]
    assert figures.get(100.5, lambda at: 0) == (3, 99.0), "the value and when it was counted"


def test_the_overview_shows_a_new_delivery_within_2_seconds_and_when_its_figures_were_counted(make_server):
    server = make_server(env=CONSOLE)
    session = login(server)

    def overview() -> tuple[float, str]:
        asked = time.time()
        html = session.get(server.url + "/console", timeout=10).text
        at = re.search(r'id="figures-at">figures as of ([0-9: -]+)Z', html).group(1)
        counted = calendar.timegm(time.strptime(at, "%Y-%m-%d %H:%M:%S"))
        hour = re.search(r"<h2>Last hour</h2>(.*?)</div>", html, re.S).group(1)
        return asked - counted, hour

    stale, hour = overview()
    assert -1 < stale < 3 and "none" in hour
    server.post(event(topic="Town Hall - figures"))
    deadline = time.time() + 10
    while "meeting.started" not in hour:
        assert time.time() < deadline, "the overview never showed the new delivery"
        stale, hour = overview()
        assert -1 < stale < 3, "figures at most 2 s old (plus the second the timestamp drops)"
    assert re.search(r"meeting\.started</a></td><td class=\"n\">1<", hour)
