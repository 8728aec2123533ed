"""Who may use the console: the login form, the session cookie, CSRF tokens, and the wrong-password throttle.

The session is Flask's signed cookie, keyed by a key derived from REACTOR_CONSOLE_PASSWORD (so every
worker and process accepts it, and changing the password logs everyone out). It holds when the login
happened (the console refuses it SESSION_SECONDS later) and the CSRF token every form posts back.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import timedelta

from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface

SESSION_SECONDS = 12 * 3600
WRONG_LIMIT = 5            # wrong passwords from one address within WRONG_WINDOW ...
WRONG_WINDOW = 15 * 60     # ... refuse that address until the oldest of them is this old
WRONG_DELAY = 1.0          # every wrong password is answered this much later


class _Sessions(SecureCookieSessionInterface):
    """Secure cookies when the browser reached reactor over HTTPS, directly or through a PaaS router."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return is_https()


def is_https() -> bool:
    return request.is_secure or request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() == "https"


def configure_sessions(app: Flask, password: str) -> None:
    app.secret_key = hmac.new(password.encode(), b"reactor console session", hashlib.sha256).hexdigest()
    app.session_interface = _Sessions()
    app.config.update(SESSION_COOKIE_NAME="reactor_console", SESSION_COOKIE_PATH="/console",
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      PERMANENT_SESSION_LIFETIME=timedelta(seconds=SESSION_SECONDS))


def client_address() -> str:
    """The browser's address: the last X-Forwarded-For entry (the one the platform's router added) when
    present, else the peer. Used for the throttle and recorded with each retry."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    last = forwarded.split(",")[-1].strip()[:64]
    return last or request.remote_addr or "unknown"


def csrf_token() -> str:
    """This session's CSRF token (made on first use, also before login)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def csrf_ok() -> bool:
    sent = request.form.get("csrf", "")
    return bool(sent) and "csrf" in session and hmac.compare_digest(sent.encode(), session["csrf"].encode())


def logged_in(now: float) -> bool:
    at = session.get("at")
    return isinstance(at, (int, float)) and 0 <= now - at < SESSION_SECONDS


def log_in(now: float) -> None:
    session.clear()  # a new session: nothing from before the login carries over
    session.permanent = True
    session["at"] = now
    session["csrf"] = secrets.token_urlsafe(24)


def log_out() -> None:
    session.clear()


class Throttle:
    """Wrong passwords per client address, in this process (each web process counts its own)."""

    def __init__(self):
        self._wrong: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def refused_for(self, address: str, now: float) -> float:
        """Seconds this address must still wait before trying again (0: it may try)."""
        with self._lock:
            recent = [t for t in self._wrong.get(address, []) if now - t < WRONG_WINDOW]
            self._wrong[address] = recent
            if len(recent) < WRONG_LIMIT:
                return 0.0
            return WRONG_WINDOW - (now - recent[-WRONG_LIMIT])

    def wrong(self, address: str, now: float) -> None:
        with self._lock:
            if len(self._wrong) > 10_000:  # bounded memory whatever the addresses
                self._wrong.clear()
            self._wrong.setdefault(address, []).append(now)
        time.sleep(WRONG_DELAY)

    def right(self, address: str) -> None:
        with self._lock:
            self._wrong.pop(address, None)


def password_ok(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))
