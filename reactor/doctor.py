"""Edge: `python -m reactor doctor`: is this deployment right, end to end, before the first real meeting?

A checklist, one line per check, `ok` or `FAILED ...; fix: ...`: the settings (the checks start-up
makes), the database and its schema, the rules (valid, examples passing, every ${NAME} set and enc:
value decryptable), the Zoom credentials and the scopes the rules need, and with --url the deployed
reactor (a signed endpoint.url_validation round trip and /readyz). It prints no secret, and the only
thing it sends to Zoom is one token request.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
import uuid
from email.utils import parsedate_to_datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

import requests

from . import outbound
from .accounts import Account, load_accounts, single_account
from .errors import ConfigError, RulesError, SecretError, StoreError, SchemaError, TokenError
from .redact import scrub
from .rules.examples import run_examples
from .rules.load import load_rules
from .rules.model import Secret
from .secrets import check_secret, env_names
from .settings import SETTINGS, Settings
from .signature import sign

CLOCK_SLACK = 60.0  # seconds of clock difference that cannot explain a refused signature
ZOOM_DEADLINE = 3.0  # seconds Zoom waits for an answer, URL validation included
CALL_TIMEOUT = 10.0
_CREDENTIALS_PAGE = "your Server-to-Server OAuth app's App Credentials page"

# What each kind of action calls, and the scopes that allow it: (granular, classic). Server-to-Server apps
# carry account-level (:admin) scopes.
SCOPES = {
    ("meetings", "status"): ("meeting:update:livestream_status:admin", "meeting:write:admin"),
    ("meetings", "configure"): ("meeting:update:livestream:admin", "meeting:write:admin"),
    ("webinars", "status"): ("webinar:update:livestream_status:admin", "webinar:write:admin"),
    ("webinars", "configure"): ("webinar:update:livestream:admin", "webinar:write:admin"),
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None       # None: skipped (not a failure)
    detail: str
    fix: str = ""

    def line(self) -> str:
        if self.ok:
            return f"ok       {self.name}: {self.detail}"
        if self.ok is None:
            return f"skipped  {self.name}: {self.detail}"
        return f"FAILED   {self.name}: {self.detail}; fix: {self.fix}"


def run_doctor(env: Mapping[str, str], url: str | None = None, out=print) -> int:
    """Print the checklist; 0 when nothing failed, else 1."""
    secrets = [env.get(s.name, "") for s in SETTINGS if s.secret]
    failed = 0
    for check in checks(env, url):
        failed += check.ok is False
        out(scrub(check.line(), [s for s in secrets if s]))
    out(f"{'all checks passed' if not failed else f'{failed} check(s) FAILED'}")
    return 1 if failed else 0


def checks(env: Mapping[str, str], url: str | None):
    """Every check, in order; later ones are skipped when what they need failed."""
    settings, results = check_settings(env)
    yield from results
    if settings is None:
        yield Check("database", None, "the settings above must be fixed first")
        return
    yield check_database(settings)
    accounts, results = check_accounts(settings, env)
    yield from results
    rules, results = check_rules(settings, env, accounts)
    yield from results
    if accounts is None:
        yield Check("Zoom token", None, "the accounts file above must be fixed first")
    else:
        for account in accounts.accounts:
            yield from check_zoom(settings, account, rules, several=accounts.path != "")
    if url:
        yield from check_url(url, settings)


# -- settings -----------------------------------------------------------------------------------


def _secrets_text(settings: Settings) -> str:
    """How the Secret Token(s) are set, never their values: several while one is rotated (new first)."""
    if settings.accounts_path:
        return "each account's Secret Token(s) come from the accounts file (checked below)"
    first = len(settings.webhook_secret)
    if len(settings.webhook_secrets) == 1:
        return f"ZOOM_WEBHOOK_SECRET_TOKEN is set ({first} characters)"
    return (f"ZOOM_WEBHOOK_SECRET_TOKEN holds {len(settings.webhook_secrets)} tokens (a rotation: any of them "
            f"verifies; the first, of {first} characters, signs the --url test); drop the old one once Zoom uses "
            f"the new one")


def check_settings(env: Mapping[str, str]) -> tuple[Settings | None, list[Check]]:
    """The start-up checks (Settings.from_env with everything required), one line per problem."""
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        problems = exc.problems
    else:
        mode = "dry run: actions are recorded, not sent" if settings.dry_run else "Zoom calls on"
        database = "SQLite (durable only on a persistent disk)" if settings.database_url.startswith("sqlite") \
            else "PostgreSQL"
        return settings, [Check("settings", True, f"every setting present and well formed ({mode}; {database})"),
                          Check("webhook secret", True, _secrets_text(settings))]
    results = []
    for problem in problems:
        name = "webhook secret" if problem.startswith("ZOOM_WEBHOOK_SECRET_TOKEN") else "settings"
        what, _, fix = problem.partition(": ")
        results.append(Check(name, False, what if fix else problem, fix or "set it where reactor runs"))
    try:  # what the other checks need, if only required values are missing
        return Settings.from_env(env, webhooks=False, zoom=False), results
    except ConfigError:
        return None, results


# -- database -----------------------------------------------------------------------------------


def check_database(settings: Settings) -> Check:
    url = settings.database_url
    if url.startswith("sqlite:///"):
        return _check_sqlite(url[len("sqlite:///"):])
    from .store import open_store

    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)  # its retries would interleave with the checklist
    store = None
    try:
        store = open_store(url)
        store.check_schema()
        return Check("database", True, "PostgreSQL reachable, schema current")
    except SchemaError as exc:
        return Check("database", False, str(exc).split(": run")[0],
                     "run `python -m reactor migrate` (the Procfile's release: step runs it at each deploy)")
    except StoreError as exc:
        return Check("database", False, f"PostgreSQL does not answer: {exc}",
                     "check DATABASE_URL and that the database accepts connections from here")
    except ConfigError as exc:
        return Check("database", False, str(exc), "fix DATABASE_URL")
    finally:
        if store is not None:
            store.close()


def _check_sqlite(path: str) -> Check:
    """Read-only: web processes create and upgrade an SQLite schema themselves at start-up."""
    from .store.schema import SCHEMA_VERSION
    from .store.sqlite import PAGE_SIZE

    if not Path(path).exists():
        return Check("database", True, f"SQLite {path} does not exist yet: web processes create it at start-up "
                                       f"(durable only on a persistent disk)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            page = conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check("database", False, f"SQLite {path} cannot be read: {exc}",
                     "check DATABASE_URL and the file's permissions")
    if version > SCHEMA_VERSION:
        return Check("database", False, f"SQLite {path} has schema version {version}, newer than this reactor "
                                        f"({SCHEMA_VERSION})", "upgrade reactor")
    upgrade = "" if version == SCHEMA_VERSION else ", upgraded at start-up"
    pages = "" if page == PAGE_SIZE else (
        f"; its pages are {page} bytes, where a new file's are {PAGE_SIZE} (fewer bytes written per delivery: "
        f"README, Decisions, says how to convert it while reactor is stopped)")
    return Check("database", True, f"SQLite {path} readable, schema version {version}{upgrade} "
                                   f"(durable only on a persistent disk){pages}")


# -- rules --------------------------------------------------------------------------------------


def check_accounts(settings: Settings, env: Mapping[str, str]):
    """The accounts file (REACTOR_ACCOUNTS), every secret of it resolved here; the implicit account without one."""
    if not settings.accounts_path:
        return single_account(settings.account_id, settings.client_id, settings.client_secret,
                              settings.webhook_secrets, settings.zoom_rate), []
    try:
        accounts = load_accounts(settings.accounts_path, env, settings.secret_key, default_rate=settings.zoom_rate)
    except RulesError as exc:
        return None, [Check("accounts", False, problem, "edit the accounts file (`python -m reactor check` lists "
                                                        "every problem)") for problem in exc.problems]
    names = ", ".join(f"{a.name} ({len(a.secret_tokens)} Secret Token{'s' if len(a.secret_tokens) > 1 else ''}, "
                      f"{a.rate:g} calls/s)" for a in accounts.accounts)
    return accounts, [Check("accounts", True, f"{len(accounts.accounts)} account(s) in {settings.accounts_path}: "
                                              f"{names}")]


def check_rules(settings: Settings, env: Mapping[str, str], accounts=None):
    path = settings.rules_path
    try:
        rules = load_rules(path, env=env, secret_key=settings.secret_key, resolve_secrets=False,
                           accounts=accounts.names if accounts is not None else None)
    except RulesError as exc:
        return None, [Check("rules", False, problem, f"edit the rule file (`python -m reactor check {path}` "
                                                     f"lists every problem)") for problem in exc.problems]
    ran, failures = run_examples(rules)
    results = [Check("rules", True, f"{len(rules.rules)} rule(s) in {len(rules.files)} file(s) under {path}, "
                                    f"version {rules.version}")]
    results += [Check("rule examples", False, failure, "fix the rule or its example") for failure in failures]
    if not failures:
        results.append(Check("rule examples", True, f"{ran} example(s) passing"))
    results += check_secrets(rules, env, settings.secret_key)
    return rules, results


def check_secrets(rules, env: Mapping[str, str], key: str) -> list[Check]:
    """Every ${NAME} set here and every enc: value decryptable with REACTOR_SECRET_KEY (values never shown)."""
    refs = [(rule, ref) for rule in rules.rules for action in rule.actions for _, value in action.args
            if isinstance(value, Secret) for ref in [value.ref]]
    problems = []
    for rule, ref in refs:
        try:
            check_secret(ref, env, key)
        except SecretError as exc:
            names = env_names(ref)
            fix = (f"set {', '.join(names)} where reactor runs (heroku config:set, the Render dashboard, "
                   f"fly secrets set, .env for compose)") if names else \
                "set REACTOR_SECRET_KEY to the key the enc: value was made with, or make it again with " \
                "`python -m reactor encrypt`"
            problems.append(Check("rule secrets", False, f'rule "{rule.name}" ({rule.source}): '
                                                         f'{str(exc).split(": set it")[0]}', fix))
    if problems:
        return problems
    return [Check("rule secrets", True, f"{len(refs)} secret reference(s), each resolves here")]


# -- Zoom ---------------------------------------------------------------------------------------


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL, lower-cased."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


def needed_scopes(rules, account: str | None = None) -> dict[tuple[str, str], list[str]]:
    """What the rules can call: (meetings|webinars, status|configure) -> the rules that do."""
    needs: dict[tuple[str, str], list[str]] = {}
    for rule in rules.rules:
        if account is not None and rule.accounts and account not in rule.accounts:
            continue
        # the target an event names: webinar.* events act on webinars, the others on meetings (events.target)
        kinds = {"webinars" if name.startswith("webinar.") else "meetings" for name in rule.events}
        for action in rule.actions:
            call = "configure" if action.kind == "livestream.configure" else "status"
            for kind in sorted(kinds):
                needs.setdefault((kind, call), [])
                if rule.name not in needs[(kind, call)]:
                    needs[(kind, call)].append(rule.name)
    return needs


def check_zoom(settings: Settings, account: Account, rules, several: bool = False) -> list[Check]:
    """One account's token and its scopes (for the rules that apply to it). `several`: the accounts come from
    the accounts file, and each check names its account."""
    token_check, scopes_check = ("Zoom token", "Zoom scopes") if not several else \
        (f"Zoom token ({account.name})", f"Zoom scopes ({account.name})")
    creds = (account.account_id, account.client_id, account.client_secret)
    where = ("ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID and ZOOM_CLIENT_SECRET" if not several else
             f"account {account.name}'s account_id, client_id and client_secret")
    if not all(creds):
        if settings.dry_run:
            return [Check(token_check, None, "REACTOR_DRY_RUN=1 and no credentials: no call is made")]
        return [Check(token_check, None, "the Zoom credentials above must be set first")]
    from .zoom import ZoomClient

    client = ZoomClient(settings.api_url, settings.oauth_url, *creds)
    try:
        scopes, api_url = client.token_scopes()
    except TokenError as exc:
        detail = str(exc).split(": check ZOOM_ACCOUNT_ID")[0]  # the fix is said below, for this account
        if exc.retryable:
            return [Check(token_check, False, detail, f"check that this machine reaches {settings.oauth_url} "
                                                      f"(ZOOM_OAUTH_URL) and try again")]
        return [Check(token_check, False, f"Zoom refused the credentials: {detail}",
                      f"copy {where} again from {_CREDENTIALS_PAGE}, and check that the app is activated")]
    results = [Check(token_check, True, f"a token was issued with {len(scopes)} scope(s)")]
    if api_url and _origin(api_url) != _origin(settings.api_url):  # another Zoom cloud (zoomgov.com): its tokens
        results.append(Check(f"Zoom API{token_check.removeprefix('Zoom token')}", False,  # fail at api.zoom.us
                             f"Zoom says this account's API is at {_origin(api_url)}, and ZOOM_API_URL is "
                             f"{settings.api_url}", f"set ZOOM_API_URL={_origin(api_url)}/v2"))
    if rules is None:
        return results + [Check(scopes_check, None, "the rules above must be fixed first")]
    needs = needed_scopes(rules, account.name if several else None)
    missing = []
    for (kind, call), names in sorted(needs.items()):
        granular, classic = SCOPES[(kind, call)]
        if granular not in scopes and classic not in scopes:
            what = "live stream start/stop" if call == "status" else "live stream configuration"
            missing.append(Check(scopes_check, False,
                                 f"the token lacks {granular} (or classic {classic}), needed for {what} on {kind} "
                                 f"by rule(s) {', '.join(repr(n) for n in names)}",
                                 f"add {granular} on your Zoom app's Scopes page, then activate the app again"))
    if missing:
        return results + missing
    if not needs:
        return results + [Check(scopes_check, True, "no rule calls Zoom")]
    covered = ", ".join(f"{call} on {kind}" for kind, call in sorted(needs))
    return results + [Check(scopes_check, True, f"the token covers every action the rules can take ({covered})")]


# -- the deployed reactor -----------------------------------------------------------------------


def check_url(url: str, settings: Settings) -> list[Check]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return [Check("endpoint", False, f"{url!r} is not an http(s) URL", "use https://YOUR-APP/webhooks/zoom")]
    results = []
    if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        results.append(Check("endpoint", False, "Zoom delivers only to https:// URLs",
                             "use the https:// address of your app"))
    if not settings.webhook_secret:
        return results + [Check("endpoint", None, "ZOOM_WEBHOOK_SECRET_TOKEN must be set here to sign the test")]
    results.append(_url_validation(url, settings.webhook_secret))
    results.append(_readiness(urlunsplit(parts._replace(path=_prefix(parts.path) + "/readyz", query="",
                                                       fragment=""))))
    return results


def _prefix(path: str) -> str:
    """The app's path prefix: what comes before /webhooks/zoom."""
    path = path.rstrip("/")
    return path[: -len("/webhooks/zoom")] if path.endswith("/webhooks/zoom") else ""


def _url_validation(url: str, secret: str) -> Check:
    """Zoom's own challenge, signed with our secret: reachable, fast enough, and holding the same secret."""
    plain = uuid.uuid4().hex
    raw = json.dumps({"payload": {"plainToken": plain}, "event_ts": int(time.time() * 1000),
                      "event": "endpoint.url_validation"}, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"content-type": "application/json; charset=utf-8", "x-zm-request-timestamp": timestamp,
               "x-zm-signature": sign(secret, timestamp, raw), "user-agent": "reactor-doctor"}
    started = time.monotonic()
    try:
        response = outbound.session().post(url, data=raw, headers=headers, timeout=CALL_TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        return Check("endpoint", False, f"cannot reach {url} ({type(exc).__name__})",
                     "check the URL and that the web process is running")
    if (moved := _redirected("endpoint", url, response)) is not None:
        return moved
    elapsed = time.monotonic() - started
    error = _error_text(response)
    if response.status_code == 401:  # the answer says only "not a signed delivery": the reason is in its log
        skew = _clock_skew(response)
        if skew is not None and abs(skew) > CLOCK_SLACK:
            return Check("endpoint", False, f"the deployed reactor refused our signature and its clock is {skew:+.0f} s "
                                            f"from this machine's", "synchronise the clocks (NTP), then run doctor again")
        return Check("endpoint", False, "the deployed reactor holds a different webhook secret than this one "
                                        "(it rejected our signature)",
                     "set ZOOM_WEBHOOK_SECRET_TOKEN to the Secret Token of your Zoom app's Features page, "
                     "the same value here and on the platform")
    if response.status_code == 404:
        return Check("endpoint", False, f"{url} answered 404", "use the URL ending in /webhooks/zoom")
    if response.status_code != 200:
        return Check("endpoint", False, f"{url} answered {response.status_code}: {error or response.reason}",
                     "read the deployed reactor's logs")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("plainToken") != plain:
        return Check("endpoint", False, f"{url} answered 200 but not Zoom's URL validation",
                     "point --url at reactor's /webhooks/zoom")
    expected = hmac.new(secret.encode(), plain.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(str(answer.get("encryptedToken", "")), expected):
        return Check("endpoint", False, "the deployed reactor holds a different webhook secret than this one "
                                        "(its encryptedToken does not match)",
                     "set the same ZOOM_WEBHOOK_SECRET_TOKEN here and on the platform")
    if elapsed > ZOOM_DEADLINE:
        return Check("endpoint", False, f"URL validation answered in {elapsed:.1f} s, beyond Zoom's "
                                        f"{ZOOM_DEADLINE:.0f} s deadline",
                     "keep an instance always running (no sleeping free plan, no auto-stop)")
    return Check("endpoint", True, f"URL validation answered in {elapsed * 1000:.0f} ms with the same secret")


def _clock_skew(response: requests.Response) -> float | None:
    """The server's clock minus this machine's, from the answer's Date header (None without one)."""
    try:
        return parsedate_to_datetime(response.headers["Date"]).timestamp() - time.time()
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _readiness(url: str) -> Check:
    try:
        response = outbound.session().get(url, timeout=CALL_TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        return Check("readiness", False, f"cannot reach {url} ({type(exc).__name__})",
                     "check the URL and that the web process is running")
    if (moved := _redirected("readiness", url, response)) is not None:
        return moved
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    if response.status_code == 200 and body.get("status") == "ready":
        return Check("readiness", True, f"{url} ready")  # /readyz tells the public its status only
    return Check("readiness", False, f"{url} answered {response.status_code}: {body.get('status') or response.reason}",
                 "check the deployed reactor's database (DATABASE_URL) and its logs (`rejected`, `unavailable`)")


def _redirected(name: str, url: str, response: requests.Response) -> Check | None:
    """A failed check for a redirect (not followed: Zoom needs a 2xx from the URL it was given), else None."""
    if not 300 <= response.status_code < 400:
        return None
    where = outbound.redirect_target(response) or "nowhere (no Location)"
    return Check(name, False, f"{url} answered {response.status_code}, a redirect to {where}; Zoom counts "
                              f"anything but a 2xx as a failed delivery",
                 "give Zoom (and doctor --url) the address it redirects to, often https:// instead of http://")


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
        return str(body.get("error", "")) if isinstance(body, dict) else ""
    except ValueError:
        return ""


def main(url: str | None = None) -> int:
    return run_doctor(os.environ, url)
