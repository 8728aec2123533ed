"""The HTTP session of reactor's outbound calls (Zoom's API and token endpoint, chat webhooks, doctor's
self-test): requests with the environment's proxy and CA settings, but never ~/.netrc.

requests reads ~/.netrc on every call it is given no credentials for, and a `default` entry there
matches every host: it would put that login in place of the Bearer token reactor sets on a Zoom call
(Zoom answers 401, and the file's password has gone to Zoom) and add it to a chat webhook's post.
A session-wide auth that leaves each request as reactor made it stops the first; rebuild_auth below
stops the file from being read again on a redirect."""
from __future__ import annotations

import requests


class Session(requests.Session):
    def __init__(self):
        super().__init__()
        self.auth = _as_made  # requests looks in ~/.netrc only when neither the call nor the session has auth

    def rebuild_auth(self, prepared_request, response) -> None:
        """On a redirect: drop the Authorization header when the host changes (as requests does), add none."""
        if "Authorization" in prepared_request.headers and self.should_strip_auth(response.request.url,
                                                                                  prepared_request.url):
            del prepared_request.headers["Authorization"]


def _as_made(request):
    """The session's auth: the request's headers stay as reactor set them (a call's own auth, as the token
    request's client id and secret, takes its place)."""
    return request
