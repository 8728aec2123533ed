"""A real local HTTP server playing Zoom: the OAuth token endpoint and the live stream API.

Script answers per path prefix with `standin.script(path_prefix, [Reply(...), ...])`; unscripted
calls get 204. Every call is recorded with its arrival time, headers and JSON body.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 204
    body: object = None             # dict -> JSON; str/bytes -> raw
    headers: dict = field(default_factory=dict)
    delay: float = 0.0              # seconds before answering
    reset: bool = False             # close the connection without an answer


@dataclass
class Call:
    at: float
    method: str
    path: str
    headers: dict
    body: object
    status: int = 0   # what the stand-in answered


class ZoomStandIn:
    def __init__(self):
        self.calls: list[Call] = []
        self.token_calls: list[Call] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._token_script: list[Reply] = []
        self._issued = 0
        self.token_lifetime = 3600
        self.chaos = None  # a function(call) -> Reply | None, consulted for unscripted API calls
        self.token_scope = "meeting:write:admin"  # the `scope` each issued token carries (space-separated)
        self.credentials = None  # (client_id, client_secret): when set, a token request with others gets Zoom's 401
        # Several accounts: {account_id: (client_id, client_secret)}. A token request gets a token only with
        # its account_id's credentials, and the token acts for that account only: a call on a meeting of
        # `owners` ({meeting id: account_id}) with another account's token gets Zoom's 401 (code 124).
        self.accounts: dict | None = None
        self.owners: dict = {}
        self.token_account: dict = {}  # token -> the account_id it was issued for
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                call = Call(time.time(), self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                reply = standin._next(call)
                call.status = reply.status
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.reset:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                payload = reply.body
                if isinstance(payload, (dict, list)):
                    data, ctype = json.dumps(payload).encode(), "application/json"
                elif payload is None:
                    data, ctype = b"", "application/json"
                else:
                    data, ctype = payload.encode() if isinstance(payload, str) else payload, "application/json"
                self.send_response(reply.status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a caller hanging up mid-answer (a killed reactor, a timeout) is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = self.url  # the `api_url` each token answer gives, as Zoom's gives https://api.zoom.us
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # -- scripting
    def script(self, prefix: str, replies: list[Reply]) -> None:
        with self._lock:
            self._scripts.setdefault(prefix, []).extend(replies)

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def script_token(self, replies: list[Reply]) -> None:
        with self._lock:
            self._token_script.extend(replies)

    def _next(self, call: Call) -> Reply:
        with self._lock:
            if call.path.startswith("/oauth/token"):
                self.token_calls.append(call)
                if self._token_script:
                    return self._token_script.pop(0)
                account = parse_qs(urlsplit(call.path).query).get("account_id", [""])[0]
                expected = self.credentials if self.accounts is None else self.accounts.get(account, ("?", "?"))
                if expected and call.headers.get("authorization") != _basic(*expected):
                    return Reply(401, {"reason": "Invalid client_id or client_secret", "error": "invalid_client"})
                self._issued += 1
                self.token_account[f"standin-token-{self._issued}"] = account
                return Reply(200, {"access_token": f"standin-token-{self._issued}", "token_type": "bearer",
                                   "expires_in": self.token_lifetime, "scope": self.token_scope,
                                   "api_url": self.api_url})
            self.calls.append(call)
            owner = self.owners.get(call.path.split("/")[3] if call.path.count("/") >= 3 else "")
            token = call.headers.get("authorization", "").removeprefix("Bearer ")
            if owner is not None and self.token_account.get(token) != owner:
                return Reply(401, {"code": 124, "message": "Invalid access token."})
            for prefix, replies in self._scripts.items():
                if call.path.startswith(prefix) and replies:
                    return replies.pop(0)
            return (self.chaos and self.chaos(call)) or Reply(204)

    # -- reading
    def issued_tokens(self) -> list[str]:
        return [f"standin-token-{n}" for n in range(1, self._issued + 1)]

    def api_calls(self, path_prefix: str = "/v2/") -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path.startswith(path_prefix)]

    def succeeded(self, path_prefix: str = "/v2/") -> list[Call]:
        """Calls answered 2xx."""
        return [c for c in self.api_calls(path_prefix) if 200 <= c.status < 300]

    def wait_for(self, count: int, path_prefix: str = "/v2/", timeout: float = 20.0) -> list[Call]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            calls = self.api_calls(path_prefix)
            if len(calls) >= count:
                return calls
            time.sleep(0.02)
        raise AssertionError(f"expected {count} calls to {path_prefix}, got {len(self.api_calls(path_prefix))}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _basic(client_id: str, client_secret: str) -> str:
    """The Authorization header of a token request with these credentials (HTTP Basic)."""
    import base64

    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
