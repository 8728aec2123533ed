"""Several Zoom accounts from one reactor: each account's webhooks verify with its own Secret Token(s),
its actions run with its own credentials, tokens and pacing, and its failures stay its own.

A Zoom stand-in serves two accounts, each with its own token endpoint credentials; a token acts for
its own account's meetings only (another account's token gets Zoom's 401), so a call made with the
wrong credentials fails where a user would see it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import requests

from tests.backends import fresh_postgres_schema, migrate, postgres_url
from tests.conftest import STREAM_KEY, TOWN_HALL_RULES, event, run_cli, signed_headers, wait_until
from tests.zoom_standin import Reply

EMEA, APAC = "EmeaAcct111", "ApacAcct222"
TOKENS = {"EMEA_TOKEN_NEW": "emea-secret-token-new-5d1", "EMEA_TOKEN_OLD": "emea-secret-token-old-9c2",
          "APAC_TOKEN": "apac-secret-token-77e"}
CLIENT_SECRETS = {"EMEA_CLIENT_SECRET": "emea-client-secret-0a1", "APAC_CLIENT_SECRET": "apac-client-secret-3b4"}
ACCOUNTS = """\
accounts:
  - name: emea
    account_id: EmeaAcct111
    client_id: emea-client
    client_secret: ${EMEA_CLIENT_SECRET}
    secret_tokens:
      - ${EMEA_TOKEN_NEW}
      - ${EMEA_TOKEN_OLD}
    rate: %(emea_rate)s
  - name: apac
    account_id: ApacAcct222
    client_id: apac-client
    client_secret: ${APAC_CLIENT_SECRET}
    secret_tokens: ${APAC_TOKEN}
"""
SINGLE = {"ZOOM_ACCOUNT_ID": None, "ZOOM_CLIENT_ID": None, "ZOOM_CLIENT_SECRET": None,
          "ZOOM_WEBHOOK_SECRET_TOKEN": None}  # the single-account settings, unset: the accounts file says it all


def two_accounts(zoom) -> None:
    zoom.accounts = {EMEA: ("emea-client", CLIENT_SECRETS["EMEA_CLIENT_SECRET"]),
                     APAC: ("apac-client", CLIENT_SECRETS["APAC_CLIENT_SECRET"])}


def accounts_env(tmp_path, emea_rate: float = 30, **env) -> dict:
    path = tmp_path / "accounts.yaml"
    path.write_text(ACCOUNTS % {"emea_rate": emea_rate})
    return {**SINGLE, **TOKENS, **CLIENT_SECRETS, "REACTOR_ACCOUNTS": str(path), **env}


def account_event(account_id: str, meeting_id: str, zoom=None, **fields) -> dict:
    body = event(meeting_id=meeting_id, uuid_=f"u-{meeting_id}", **fields)
    body["payload"]["account_id"] = account_id
    if zoom is not None:
        zoom.owners[meeting_id] = account_id
    return body


def post(server, body: dict, token: str, name: str | None = None) -> requests.Response:
    raw = json.dumps(body).encode()
    url = server.url + "/webhooks/zoom" + (f"/{name}" if name else "")
    return requests.post(url, data=raw, headers=signed_headers(raw, TOKENS[token]), timeout=10)


def started(zoom, meeting_id: str) -> list:
    return [c for c in zoom.succeeded(f"/v2/meetings/{meeting_id}/livestream/status")]


def test_each_account_verifies_with_its_own_tokens_and_acts_with_its_own_credentials(make_server, zoom, tmp_path):
    two_accounts(zoom)
    server = make_server(zoom=zoom, env=accounts_env(tmp_path))
    # each app posts to the shared URL or its own; emea's old token still verifies during its rotation
    assert post(server, account_event(EMEA, "1001", zoom), "EMEA_TOKEN_NEW").status_code == 200
    assert post(server, account_event(APAC, "2001", zoom), "APAC_TOKEN", "apac").status_code == 200
    assert post(server, account_event(EMEA, "1002", zoom), "EMEA_TOKEN_OLD", "emea").status_code == 200
    wait_until(lambda: all(started(zoom, m) for m in ("1001", "2001", "1002")))
    for meeting, account in (("1001", EMEA), ("2001", APAC), ("1002", EMEA)):
        [call] = started(zoom, meeting)
        assert zoom.token_account[call.headers["authorization"].removeprefix("Bearer ")] == account
    assert not [c for c in zoom.api_calls() if c.status == 401]  # no call ever went with the other's token

    # one app's token never verifies on another account's URL; an unknown account is a clear 404
    refused = post(server, account_event(APAC, "2002"), "APAC_TOKEN", "emea")
    assert refused.status_code == 401
    unknown = post(server, account_event(APAC, "2003"), "APAC_TOKEN", "americas")
    assert unknown.status_code == 404 and "no account named 'americas'" in unknown.json()["error"]

    # URL validation is answered with the token that verified: apac's, on the shared URL
    validation = {"event": "endpoint.url_validation", "payload": {"plainToken": "abc123"}}
    answer = post(server, validation, "APAC_TOKEN").json()
    assert answer["encryptedToken"] == hmac.new(TOKENS["APAC_TOKEN"].encode(), b"abc123", hashlib.sha256).hexdigest()

    # emea's app delivering an event of apac's Zoom account: recorded, no call, 200 (Zoom must not retry)
    mismatch = post(server, account_event(APAC, "2004"), "EMEA_TOKEN_NEW")
    assert server.outcome(mismatch)["actions"] == 0
    [stored] = server.history(meeting="2004")
    assert stored["jobs"] == [] and stored["account"] == "emea"
    why = f"from Zoom account {APAC}, not account emea's ({EMEA}): no call made; it would fail with this app's credentials"
    assert {"rule": "(reactor)", "matched": False, "why": why} in stored["verdicts"]
    assert any(why in line for line in server.logs().splitlines())

    # history shows and filters by account
    shown = run_cli("history", "--account", "apac", env={"DATABASE_URL": server.env["DATABASE_URL"]})
    assert shown.returncode == 0 and "[apac] meeting.started meetings/2001" in shown.stdout
    assert "meetings/1001" not in shown.stdout


def test_one_accounts_429_or_revoked_credentials_leave_the_others_calls_on_time(make_server, zoom, tmp_path):
    two_accounts(zoom)
    server = make_server(zoom=zoom, env=accounts_env(tmp_path, emea_rate=2))
    # emea: paced at 2 calls/s, and its first meeting answers 429 for a minute
    zoom.script("/v2/meetings/1100/", [Reply(429, {"code": 429, "message": "Too many requests"},
                                             {"Retry-After": "60"})])
    for n in range(4):
        assert post(server, account_event(EMEA, str(1100 + n), zoom), "EMEA_TOKEN_NEW").status_code == 200
    at = time.time()
    assert post(server, account_event(APAC, "2100", zoom), "APAC_TOKEN").status_code == 200
    [call] = wait_until(lambda: started(zoom, "2100"))
    assert call.at - at < 0.4  # not behind emea's 429 nor emea's pacing
    wait_until(lambda: len(zoom.api_calls("/v2/meetings/11")) == 4)
    emea = sorted(c.at for c in zoom.api_calls("/v2/meetings/11"))
    assert all(b - a >= 0.45 for a, b in zip(emea, emea[1:]))  # emea's own rate, 2/s

    # apac's credentials are revoked: its token stops working and no new one is issued
    zoom.accounts[APAC] = ("apac-client", "rotated-elsewhere")
    zoom.token_account = {t: a for t, a in zoom.token_account.items() if a != APAC}
    assert post(server, account_event(APAC, "2101", zoom), "APAC_TOKEN").status_code == 200
    at = time.time()
    assert post(server, account_event(EMEA, "1200", zoom), "EMEA_TOKEN_NEW").status_code == 200
    [call] = wait_until(lambda: started(zoom, "1200"))
    assert call.at - at < 0.8  # within emea's own pacing: one slot of 0.5 s at most
    jobs = wait_until(lambda: [j for d in server.history(meeting="2101") for j in d["jobs"] if j["status"] == "dead"])
    assert "account 'apac'" in jobs[0]["last_message"] and "401" in jobs[0]["last_message"]


@pytest.mark.parametrize("accounts, rules, problem", [
    pytest.param(ACCOUNTS.replace("${APAC_CLIENT_SECRET}", "apac-literal-secret") % {"emea_rate": 10}, TOWN_HALL_RULES,
                 "accounts.yaml:13: account \"apac\": 'client_secret' is written out in the file", id="literal-secret"),
    pytest.param(ACCOUNTS.replace("ApacAcct222", "EmeaAcct111") % {"emea_rate": 10}, TOWN_HALL_RULES,
                 "accounts.yaml:11: account \"apac\": duplicate account_id 'EmeaAcct111': the first is at",
                 id="duplicate-account-id"),
    pytest.param(ACCOUNTS % {"emea_rate": 10}, TOWN_HALL_RULES.replace("    on: meeting.ended\n",
                                                                       "    on: meeting.ended\n    account: [emae]\n"),
                 "rules.yaml:13: rule \"Stop town halls\": unknown account 'emae' (did you mean 'emea'?)",
                 id="unknown-account-in-a-rule"),
])
def test_check_fails_with_file_and_line(tmp_path, accounts, rules, problem):
    (tmp_path / "accounts.yaml").write_text(accounts)
    (tmp_path / "rules.yaml").write_text(rules)
    result = run_cli("check", "--rules", str(tmp_path / "rules.yaml"), "--accounts", str(tmp_path / "accounts.yaml"),
                     env={"REACTOR_ACCOUNTS": ""})
    assert result.returncode == 1, result.stdout
    assert problem in result.stdout, result.stdout
    assert "apac-literal-secret" not in result.stdout


def test_a_rule_applies_to_its_accounts_only_and_the_accounts_file_reloads(make_server, zoom, tmp_path):
    two_accounts(zoom)
    rules = TOWN_HALL_RULES.replace("    on: [meeting.started, webinar.started]\n",
                                    "    on: [meeting.started, webinar.started]\n    account: [apac]\n")
    env = accounts_env(tmp_path)
    server = make_server(rules, zoom=zoom, env=env)
    assert server.outcome(post(server, account_event(EMEA, "1300", zoom), "EMEA_TOKEN_NEW"))["actions"] == 0
    assert server.outcome(post(server, account_event(APAC, "2300", zoom), "APAC_TOKEN"))["actions"] == 1
    [stored] = server.history(meeting="1300")
    assert {"rule": "Stream town halls", "matched": False,
            "why": "the event is account emea's, the rule is for apac"} in stored["verdicts"]

    # an invalid accounts file is refused and the accounts in force stay; a valid one is adopted
    path = tmp_path / "accounts.yaml"
    path.write_text(path.read_text().replace("${EMEA_TOKEN_OLD}", "emea-literal"))
    wait_until(lambda: "rules reload rejected" in server.logs(), timeout=10)
    assert post(server, account_event(EMEA, "1301"), "EMEA_TOKEN_OLD").status_code == 200
    path.write_text(ACCOUNTS.replace("      - ${EMEA_TOKEN_OLD}\n", "") % {"emea_rate": 30})
    wait_until(lambda: post(server, account_event(EMEA, "1302"), "EMEA_TOKEN_OLD").status_code == 401, timeout=10)
    assert post(server, account_event(EMEA, "1303"), "EMEA_TOKEN_NEW").status_code == 200


@pytest.mark.skipif(postgres_url() is None, reason="PostgreSQL is not available")
def test_two_instances_on_postgres_keep_accounts_apart(make_server, zoom, tmp_path):
    two_accounts(zoom)
    url = fresh_postgres_schema()
    migrate(url)
    env = accounts_env(tmp_path, emea_rate=2, DATABASE_URL=url)
    a = make_server(zoom=zoom, env=env, sub="a", start=False).start(wait=False)
    b = make_server(zoom=zoom, env=env, sub="b", start=False).start(wait=False)
    a.wait_ready(), b.wait_ready()
    zoom.script("/v2/meetings/1400/", [Reply(429, {"code": 429, "message": "Too many requests"},
                                             {"Retry-After": "60"})])
    for n in range(4):  # emea's events through both instances: its pacing holds across them
        assert post((a, b)[n % 2], account_event(EMEA, str(1400 + n), zoom), "EMEA_TOKEN_NEW", "emea").status_code == 200
    at = time.time()
    assert post(b, account_event(APAC, "2400", zoom), "APAC_TOKEN", "apac").status_code == 200
    [call] = wait_until(lambda: started(zoom, "2400"))
    assert call.at - at < 0.4
    assert zoom.token_account[call.headers["authorization"].removeprefix("Bearer ")] == APAC
    wait_until(lambda: len(zoom.api_calls("/v2/meetings/14")) == 4)
    emea = sorted(c.at for c in zoom.api_calls("/v2/meetings/14"))
    assert all(y - x >= 0.45 for x, y in zip(emea, emea[1:]))
    assert all(zoom.token_account[c.headers["authorization"].removeprefix("Bearer ")] == EMEA
               for c in zoom.api_calls("/v2/meetings/14"))
    assert post(a, account_event(EMEA, "1410"), "APAC_TOKEN", "emea").status_code == 401
    assert {d["account"] for d in a.history(limit=100)} == {"emea", "apac"}


def test_send_account_signs_as_that_account_and_names_its_zoom_account(make_server, zoom, tmp_path):
    two_accounts(zoom)
    env = accounts_env(tmp_path)
    server = make_server(zoom=zoom, env=env)
    cli_env = {k: v for k, v in {**env, "DATABASE_URL": server.env["DATABASE_URL"]}.items() if v is not None}
    url = server.url + "/webhooks/zoom"
    sent = run_cli("send", "meeting.started", "--topic", "Town Hall", "--account", "apac", "--url", url, env=cli_env)
    assert sent.returncode == 0 and '"status":"accepted"' in sent.stdout, sent.stdout + sent.stderr
    [stored] = server.history()
    assert stored["account"] == "apac" and stored["body"]["payload"]["account_id"] == APAC
    unknown = run_cli("send", "meeting.started", "--account", "nowhere", "--url", url, env=cli_env)
    assert unknown.returncode == 2 and "no account named 'nowhere'" in unknown.stderr


def test_credentials_from_variables_that_end_in_a_newline_work_as_the_single_account_settings_do(
        make_server, zoom, tmp_path):
    """A secret mounted from a file (Kubernetes `--from-file`) ends in a newline. The single-account settings
    were stripped, the accounts file's and the rules' were not: every delivery was refused 401 (Zoom does not
    retry a 4xx), the token request carried the newline in the client secret, and the stream key went to
    Zoom with it."""
    two_accounts(zoom)
    padded = {name: value + "\n" for name, value in {**TOKENS, **CLIENT_SECRETS, "YOUTUBE_STREAM_KEY": STREAM_KEY}.items()}
    rules = """
rules:
  - name: Stream town halls
    on: meeting.started
    do:
      - livestream.configure:
          stream_url: rtmp://a.rtmp.youtube.com/live2
          stream_key: ${YOUTUBE_STREAM_KEY}
          page_url: https://youtube.com/@acme/live
      - livestream.start
"""
    server = make_server(rules, zoom=zoom, env={**accounts_env(tmp_path), **padded})
    assert post(server, account_event(EMEA, "1101", zoom), "EMEA_TOKEN_NEW").status_code == 200
    assert post(server, account_event(APAC, "2101", zoom), "APAC_TOKEN").status_code == 200
    wait_until(lambda: started(zoom, "1101") and started(zoom, "2101"))
    assert {c.body["stream_key"] for c in zoom.api_calls() if c.path.endswith("/livestream")} == {STREAM_KEY}
