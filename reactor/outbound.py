"""The HTTP session of reactor's outbound calls (Zoom's API and token endpoint, chat webhooks, doctor's
self-test): requests with the environment's proxy and CA settings, but never ~/.netrc.

requests reads ~/.netrc on every call it is given no credentials for, and a `default` entry there
matches every host: it would put that login in place of the Bearer token reactor sets on a Zoom call
(Zoom answers 401, and the file's password has gone to Zoom) and add it to a chat webhook's post.
A session-wide auth that leaves each request as reactor made it stops that. (requests reads the file
again on a redirect: no reactor call follows one, each is an answer.)"""
from __future__ import annotations

import requests


def session() -> requests.Session:
    """A requests session that sends only the credentials reactor gives each call."""
    made = requests.Session()
    made.auth = _as_made  # requests looks in ~/.netrc only when neither the call nor the session has auth
    return made


def _as_made(request):
    """The session's auth: the request's headers stay as reactor set them (a call's own auth, as the token
    request's client id and secret, takes its place)."""
    return request


def redirect_target(response: requests.Response) -> str:
    """Where a 3xx answer points, at most 200 characters ("" for any other answer, or a 3xx without a
    Location, as Zoom's 300 for an invalid meeting id). No reactor call follows a redirect."""
    location = response.headers.get("Location", "") if 300 <= response.status_code < 400 else ""
    return location[:200]
