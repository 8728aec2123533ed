"""Edge: the Zoom REST client, the only room that knows HTTP. Server-to-Server OAuth, one client and
so one shared token per Zoom account per process, JSON calls. Every failure leaves it as a ZoomError that says whether it is
worth retrying; every answer as an Answer (reactor.retry_policy judges it)."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable

import requests

from . import outbound
from .errors import NotSent, TokenError, ZoomError, ZoomUnreachable
from .retry_policy import Answer

TIMEOUT = (5, 20)          # connect, read seconds
REFRESH_AHEAD = 60         # refresh a token this many seconds before it expires
TOKEN_WAIT = sum(TIMEOUT) + 1  # the longest a thread waits for another thread's token fetch


class _Fetch:
    """One token fetch in flight, shared by every thread that needs a token meanwhile (single flight)."""

    def __init__(self):
        self.done = threading.Event()
        self.token: str | None = None
        self.error: TokenError | None = None


class ZoomClient:
    def __init__(self, api_url: str, oauth_url: str, account_id: str, client_id: str, client_secret: str,
                 session: requests.Session | None = None, clock=time.time, credentials_hint: str | None = None):
        """One Zoom account's client: its credentials, its token cache. `credentials_hint`: where to fix
        them, said when the token endpoint refuses them (default: the ZOOM_* settings)."""
        self.api_url, self.oauth_url, self.account_id = api_url.rstrip("/"), oauth_url, account_id
        self.credentials_hint = credentials_hint or "check ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID and ZOOM_CLIENT_SECRET"
        self._auth = (client_id, client_secret)
        self._session = session or outbound.session()
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self._fetch: _Fetch | None = None

    def token(self) -> str:
        """A valid access token, refreshed ahead of expiry. One fetch at a time: threads that need a
        token meanwhile wait for that fetch (at most TOKEN_WAIT seconds) and share its outcome,
        instead of each fetching in turn behind a lock."""
        with self._lock:
            if self._token and self._clock() < self._expires - REFRESH_AHEAD:
                return self._token
            fetch, leader = (self._fetch, False) if self._fetch is not None else (_Fetch(), True)
            self._fetch = fetch
        if leader:
            try:
                token, lifetime, _, _ = self._fetch_token()
                with self._lock:
                    self._token, self._expires = token, self._clock() + lifetime
                fetch.token = token
            except TokenError as exc:
                fetch.error = exc
            finally:
                with self._lock:
                    self._fetch = None
                fetch.done.set()
        elif not fetch.done.wait(TOKEN_WAIT):
            raise TokenError(f"the token endpoint has not answered another thread within {TOKEN_WAIT} s", True)
        if fetch.error is not None:
            raise fetch.error
        return fetch.token

    def token_scopes(self) -> tuple[frozenset[str], str | None]:
        """The scopes of a freshly issued token and the API URL Zoom gave with it (what `doctor` checks):
        one token request, nothing else sent."""
        _, _, scopes, api_url = self._fetch_token()
        return scopes, api_url

    def _fetch_token(self) -> tuple[str, float, frozenset[str], str | None]:
        """One token request: the token, its lifetime, the scopes Zoom granted (space-separated `scope`) and
        the account's API URL (`api_url`, e.g. https://api.zoom.us; None when the answer has none)."""
        try:
            response = self._session.post(
                self.oauth_url, params={"grant_type": "account_credentials", "account_id": self.account_id},
                auth=self._auth, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise TokenError(f"the token endpoint is unreachable ({type(exc).__name__})", True) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TokenError(f"the token endpoint answered {response.status_code}", True)
        if moved := outbound.redirect_target(response):
            raise TokenError(f"the token endpoint answered {response.status_code}, a redirect to {moved}, not "
                             f"followed: check ZOOM_OAUTH_URL", False)
        if response.status_code != 200:
            raise TokenError(f"the token endpoint answered {response.status_code} "
                             f"({_describe(response)[1]}): {self.credentials_hint}", False)
        try:
            data = response.json()
            token, lifetime = data["access_token"], float(data.get("expires_in", 3600))
            if not isinstance(token, str) or not token:
                raise ValueError
            scope = data.get("scope") or ""
            scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
            api_url = data.get("api_url") if isinstance(data.get("api_url"), str) else None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TokenError("the token endpoint answered without an access_token", True) from None
        return token, lifetime, scopes, api_url

    def drop_token(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token, self._expires = None, 0.0

    def call(self, method: str, path: str, body: dict, before_send: Callable[[], bool] = lambda: True) -> Answer:
        """One call; on 401 a fresh token and one retry. `before_send()` is asked right before each
        request goes out (after any wait for a token): when it answers False nothing is sent and
        NotSent is raised. Raises ZoomError (TokenError, ZoomUnreachable)."""
        answer = None
        for _ in range(2):
            token = self.token()
            if not before_send():
                raise NotSent("not sent: the job is no longer this dispatcher's")
            try:
                response = self._session.request(method, self.api_url + path, json=body, timeout=TIMEOUT,
                                                 headers={"Authorization": f"Bearer {token}"}, allow_redirects=False)
            except requests.RequestException as exc:
                raise _failure(exc) from None
            answer = self._answer(response)
            if answer.status != 401:
                return answer
            self.drop_token(token)
        return answer

    def _answer(self, response: requests.Response) -> Answer:
        """A redirect is an answer, not followed: requests would turn a PATCH into a GET without its body on
        a 302 and record whatever that got as the call's outcome."""
        code, message = _describe(response)
        if moved := outbound.redirect_target(response):
            message = f"a redirect to {moved}, not followed: check ZOOM_API_URL"
        retry = parse_retry_after(response.headers.get("Retry-After"), self._clock())
        return Answer(response.status_code, code, message, retry, response.headers.get("x-zm-trackingid", "")[:200])


def _failure(exc: requests.RequestException) -> ZoomError:
    if isinstance(exc, requests.Timeout):
        return ZoomUnreachable(f"no answer from Zoom within the timeout ({type(exc).__name__})")
    if isinstance(exc, requests.ConnectionError):
        return ZoomUnreachable(f"cannot reach Zoom ({type(exc).__name__})")
    return ZoomError(f"the call to Zoom failed ({type(exc).__name__})")


def _describe(response: requests.Response) -> tuple[int | None, str]:
    """Zoom's error code and message, or a short form of whatever came back."""
    if 200 <= response.status_code < 300:
        return None, ""
    try:
        data = response.json()
        code = data.get("code") if isinstance(data, dict) else None
        message = (data.get("message") or data.get("reason")) if isinstance(data, dict) else None  # OAuth: reason
        return (code if isinstance(code, int) else None), (str(message)[:300] if message else response.reason or "")
    except ValueError:
        text = response.text.strip().replace("\n", " ")[:200]
        return None, f"{response.reason or ''} (not JSON: {text!r})" if text else (response.reason or "")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds, an HTTP date, or an ISO timestamp."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() alone takes '²', which float() refuses
        return float(value)
    when = None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)
