"""`python -m reactor doctor` as a user runs it: a real subprocess, the Zoom stand-in checking the
credentials and issuing scopes, a real PostgreSQL schema, a real gunicorn for --url."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.backends import fresh_postgres_schema, migrate
from tests.conftest import CLIENT_SECRET, ROOT, SECRET, STREAM_KEY

RULES = """
rules:
  - name: Stream town halls
    on: meeting.started
    when:
      topic: {glob: "Town Hall*"}
    do:
      - livestream.configure:
          stream_url: rtmp://a.rtmp.youtube.com/live2
          stream_key: ${YOUTUBE_STREAM_KEY}
          page_url: https://youtube.com/@acme/live
      - livestream.start: {display_name: "Live: {{ topic }}"}
    examples:
      - event: meeting.started
        with: {topic: "Town Hall - November"}
        expect: match
  - name: Stream webinars
    on: webinar.started
    do: [livestream.start]
"""
EVERY_SCOPE = "meeting:write:admin webinar:write:admin"  # classic scopes cover status and configure


def setup(tmp_path, zoom, **env) -> dict:
    """A deployment's environment: rules, SQLite, Zoom pointing at the stand-in (which checks the credentials)."""
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    zoom.credentials = ("test-client-id", CLIENT_SECRET)
    zoom.token_scope = EVERY_SCOPE
    base = {"ZOOM_WEBHOOK_SECRET_TOKEN": SECRET, "ZOOM_ACCOUNT_ID": "test-account", "ZOOM_CLIENT_ID": "test-client-id",
            "ZOOM_CLIENT_SECRET": CLIENT_SECRET, "ZOOM_API_URL": zoom.url + "/v2",
            "ZOOM_OAUTH_URL": zoom.url + "/oauth/token", "REACTOR_RULES": str(tmp_path / "rules"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'reactor.db'}", "YOUTUBE_STREAM_KEY": STREAM_KEY}
    base.update(env)
    return {k: v for k, v in base.items() if v is not None}


def doctor(env: dict, *args) -> tuple[int, str]:
    """`python -m reactor doctor` with exactly this environment (nothing inherited but PATH and HOME)."""
    result = subprocess.run([sys.executable, "-m", "reactor", "doctor", *args], capture_output=True, text=True,
                            cwd=ROOT, timeout=60, env={"PATH": os.environ.get("PATH", ""),
                                                       "HOME": os.environ.get("HOME", "/tmp"), **env})
    out = result.stdout + result.stderr
    for secret in (SECRET, CLIENT_SECRET, STREAM_KEY, "wrong-client-secret-5d1c", "another-webhook-secret-9e2b"):
        assert secret not in out, f"doctor printed a secret:\n{out}"
    return result.returncode, out


def line(out: str, name: str) -> str:
    """The checklist line(s) of one check."""
    found = [text for text in out.splitlines() if text.split(":")[0].split(None, 1)[-1] == name]
    assert found, f"no {name!r} line in:\n{out}"
    return "\n".join(found)


def test_good_credentials_pass_and_only_a_token_is_requested(tmp_path, zoom):
    code, out = doctor(setup(tmp_path, zoom))
    assert code == 0, out
    assert out.rstrip().endswith("all checks passed")
    assert "FAILED" not in out
    assert line(out, "Zoom scopes").startswith("ok       Zoom scopes: the token covers every action the rules can "
                                               "take (configure on meetings, status on meetings, status on webinars)")
    assert line(out, "rule secrets") == "ok       rule secrets: 1 secret reference(s), each resolves here"
    assert line(out, "rule examples") == "ok       rule examples: 1 example(s) passing"
    assert len(zoom.token_calls) == 1 and zoom.calls == []  # nothing sent to Zoom but the token request


def test_wrong_client_secret_is_named_with_its_fix(tmp_path, zoom):
    code, out = doctor(setup(tmp_path, zoom, ZOOM_CLIENT_SECRET="wrong-client-secret-5d1c"))
    assert code == 1
    assert line(out, "Zoom token") == (
        "FAILED   Zoom token: Zoom refused the credentials: the token endpoint answered 401 (Invalid client_id or "
        "client_secret); fix: copy ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID and ZOOM_CLIENT_SECRET again from your "
        "Server-to-Server OAuth app's App Credentials page, and check that the app is activated")
    assert zoom.calls == []


def test_a_token_lacking_a_scope_names_the_scope_and_the_rule(tmp_path, zoom):
    env = setup(tmp_path, zoom)
    zoom.token_scope = "meeting:update:livestream_status:admin meeting:update:livestream:admin"  # granular, no webinar
    code, out = doctor(env)
    assert code == 1
    assert line(out, "Zoom scopes") == (
        "FAILED   Zoom scopes: the token lacks webinar:update:livestream_status:admin (or classic "
        "webinar:write:admin), needed for live stream start/stop on webinars by rule(s) 'Stream webinars'; "
        "fix: add webinar:update:livestream_status:admin on your Zoom app's Scopes page, then activate the app again")
    assert line(out, "Zoom token").startswith("ok")


def test_an_account_zoom_serves_from_another_api_url_is_named_with_the_setting_to_change(tmp_path, zoom):
    """The token's answer says where the account's API is (`api_url`); calls sent elsewhere (an account on
    Zoom for Government, api.zoomgov.com, called at api.zoom.us) would be refused."""
    env = setup(tmp_path, zoom)
    zoom.api_url = "https://api.zoomgov.com"
    code, out = doctor(env)
    assert code == 1
    assert line(out, "Zoom API") == (
        f"FAILED   Zoom API: Zoom says this account's API is at https://api.zoomgov.com, and ZOOM_API_URL is "
        f"{zoom.url}/v2; fix: set ZOOM_API_URL=https://api.zoomgov.com/v2")
    assert line(out, "Zoom token").startswith("ok")
    zoom.api_url = zoom.url + "/"  # the same place, written otherwise
    code, out = doctor(env)
    assert code == 0 and "Zoom API" not in out, out


def test_a_database_without_the_schema_says_run_migrate(tmp_path, zoom):
    url = fresh_postgres_schema()  # PostgreSQL, never migrated
    env = setup(tmp_path, zoom, DATABASE_URL=url)
    code, out = doctor(env)
    assert code == 1
    database = line(out, "database")
    assert database.startswith("FAILED   database: the database has no reactor schema; this reactor needs version")
    assert database.endswith("fix: run `python -m reactor migrate` (the Procfile's release: step runs it at each "
                             "deploy)")
    migrate(url)  # the fix it names works
    code, out = doctor(env)
    assert code == 0, out
    assert line(out, "database") == "ok       database: PostgreSQL reachable, schema current"


def test_a_database_url_libpq_cannot_read_is_named_without_its_password_and_stops_the_worker(tmp_path, zoom):
    """A password with a bare % (not percent-encoded): libpq quotes the token it could not read, which is the
    password. doctor fails the check saying what is wrong and hides the token; the worker stops with exit 3
    and the same words (it used to start and answer 'unavailable' for ever)."""
    env = setup(tmp_path, zoom, DATABASE_URL="postgresql://reactor:pa%zzword-7c1e@127.0.0.1:5432/test")
    code, out = doctor(env)
    assert code == 1 and "pa%zzword-7c1e" not in out, out
    assert line(out, "database") == (
        'FAILED   database: DATABASE_URL is not a PostgreSQL URL libpq can read: invalid percent-encoded token: '
        '"<hidden>" (postgresql://user:password@host:port/database?parameter=value; percent-encode special '
        'characters); fix: fix DATABASE_URL')
    worker = subprocess.run([sys.executable, "-m", "reactor", "worker"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60, env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                                             **env})
    assert worker.returncode == 3 and "pa%zzword-7c1e" not in worker.stderr + worker.stdout, worker.stderr
    assert "reactor worker cannot start: DATABASE_URL is not a PostgreSQL URL libpq can read" in worker.stderr


def test_an_sqlite_file_with_large_pages_is_fine_and_the_line_says_how_new_files_differ(tmp_path, zoom):
    import sqlite3

    env = setup(tmp_path, zoom)
    code, out = doctor(env)
    assert code == 0 and "pages" not in line(out, "database"), out  # not created yet
    old = sqlite3.connect(tmp_path / "reactor.db")  # as reactor before 1 KiB pages made it
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x)")
    old.close()
    code, out = doctor(env)
    assert code == 0, out
    assert "its pages are 4096 bytes, where a new file's are 1024" in line(out, "database")
    (tmp_path / "reactor.db").unlink()
    subprocess.run([sys.executable, "-m", "reactor", "migrate"], cwd=ROOT, check=True, capture_output=True,
                   env={"PATH": os.environ.get("PATH", ""), **env})
    code, out = doctor(env)
    assert code == 0 and "readable, schema version" in line(out, "database") and "pages" not in line(out, "database"), out


def test_an_unset_secret_reference_names_the_variable(tmp_path, zoom):
    code, out = doctor(setup(tmp_path, zoom, YOUTUBE_STREAM_KEY=None))
    assert code == 1
    assert line(out, "rule secrets") == (
        f'FAILED   rule secrets: rule "Stream town halls" ({tmp_path / "rules" / "rules.yaml"}:3): environment '
        f"variable YOUTUBE_STREAM_KEY is not set; fix: set YOUTUBE_STREAM_KEY where reactor runs (heroku "
        f"config:set, the Render dashboard, fly secrets set, .env for compose)")


def test_url_round_trip_with_the_same_and_with_a_different_secret(tmp_path, zoom, make_server):
    server = make_server(RULES, zoom=zoom, sub="deployed")
    env = setup(tmp_path, zoom)
    url = server.url + "/webhooks/zoom"

    code, out = doctor(env, "--url", url)
    assert code == 0, out
    assert line(out, "endpoint").startswith("ok       endpoint: URL validation answered in ")
    assert line(out, "endpoint").endswith(" ms with the same secret")
    assert line(out, "readiness") == f"ok       readiness: {server.url}/readyz ready"

    code, out = doctor({**env, "ZOOM_WEBHOOK_SECRET_TOKEN": "another-webhook-secret-9e2b"}, "--url", url)
    assert code == 1
    endpoint = line(out, "endpoint")
    assert endpoint == ("FAILED   endpoint: the deployed reactor holds a different webhook secret than this one (it "
                        "rejected our signature); fix: set ZOOM_WEBHOOK_SECRET_TOKEN to the Secret Token of your Zoom "
                        "app's Features page, the same value here and on the platform")
    assert "401" not in endpoint
    assert line(out, "readiness").startswith("ok")
    assert server.history() == []  # a URL validation is answered, never stored


def test_url_that_nothing_answers_is_reported_unreachable(tmp_path, zoom):
    from tests.conftest import free_port

    code, out = doctor(setup(tmp_path, zoom), "--url", f"http://127.0.0.1:{free_port()}/webhooks/zoom")
    assert code == 1
    assert line(out, "endpoint").startswith("FAILED   endpoint: cannot reach http://127.0.0.1:")
    assert "fix: check the URL and that the web process is running" in line(out, "endpoint")


def test_a_url_that_redirects_is_a_failure_naming_where_and_no_netrc_login_is_sent(tmp_path, zoom):
    """Zoom needs a 2xx from the URL it was given; doctor used to follow a redirect (a POST turned into a GET)
    and, with a `default` entry in ~/.netrc, sent that login with each request."""
    from tests.zoom_standin import Reply, ZoomStandIn

    site = ZoomStandIn()  # plays the deployment's address, which redirects to https
    site.script("/webhooks/zoom", [Reply(301, headers={"Location": "https://reactor.example.com/webhooks/zoom"})])
    site.script("/readyz", [Reply(301, headers={"Location": "https://reactor.example.com/readyz"})])
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("default login someone password netrc-password-7f3a\n")
    (home / ".netrc").chmod(0o600)
    try:
        code, out = doctor({**setup(tmp_path, zoom), "HOME": str(home)}, "--url", site.url + "/webhooks/zoom")
        assert code == 1
        assert line(out, "endpoint") == (
            f"FAILED   endpoint: {site.url}/webhooks/zoom answered 301, a redirect to "
            f"https://reactor.example.com/webhooks/zoom; Zoom counts anything but a 2xx as a failed delivery; fix: "
            f"give Zoom (and doctor --url) the address it redirects to, often https:// instead of http://")
        assert line(out, "readiness").startswith(f"FAILED   readiness: {site.url}/readyz answered 301, a redirect to "
                                                 f"https://reactor.example.com/readyz;")
        calls = site.api_calls("/")
        assert [(c.method, c.path) for c in calls] == [("POST", "/webhooks/zoom"), ("GET", "/readyz")]
        assert all("authorization" not in c.headers for c in calls), [c.headers for c in calls]
        assert all("authorization" not in c.headers for c in zoom.api_calls("/")) and \
            "netrc-password" not in str([c.headers for c in zoom.token_calls])
    finally:
        site.close()
