"""`send`: post a correctly signed event to a running reactor, and say what became of it."""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

from ..errors import ReactorError
from ..samples import set_field
from ..settings import Settings
from ..signature import sign
from ..store import open_store
from .local import DEFAULT_PORT, DEV_PORT_FILE, local_secret
from .events import EVENT_ARGUMENTS, event_body
from .registry import arg, command



@command("send", "post a correctly signed event (a built-in sample or a file) to a running reactor",
         *EVENT_ARGUMENTS,
         arg("--keep-ts", action="store_true",
             help="keep the event_ts of the file (or sample) as written (default: now, so its actions are not late)"),
         arg("--uuid", help="meeting instance uuid (default for samples: a new one, so each send is a new meeting; "
                            "a file keeps its own)"),
         arg("--url", default=None, help="where reactor listens (default: http://127.0.0.1:PORT/webhooks/zoom, "
                                         "PORT from $PORT, else var/dev.port written by `make run`, else 8000)"),
         arg("--account", help="sign as this account of REACTOR_ACCOUNTS (its newest Secret Token) and name its "
                               "Zoom account_id in the event"))
def cmd_send(args, settings: Settings) -> int:
    body, from_file = event_body(args)
    if args.at is None and not args.keep_ts:
        body["event_ts"] = int(time.time() * 1000)
    if args.uuid or (not from_file and body.get("event") != "endpoint.url_validation"):
        set_field(body, "uuid", args.uuid or (uuid.uuid4().hex[:22] + "=="))
    if args.account:
        from ..live_rules import accounts_of

        account = accounts_of(settings).by_name.get(args.account)
        if account is None:
            print(f"no account named {args.account!r} in {settings.accounts_path or 'REACTOR_ACCOUNTS (unset)'}",
                  file=sys.stderr)
            return 2
        secret = account.secret_tokens[0]
        if account.account_id and isinstance(body.get("payload"), dict):
            body["payload"]["account_id"] = account.account_id
    else:
        secret = settings.webhook_secret or local_secret(create=False)
    if not secret:
        print("ZOOM_WEBHOOK_SECRET_TOKEN is not set (and no local reactor wrote one): set it to your app's "
              "Secret Token", file=sys.stderr)
        return 2
    raw = json.dumps(body).encode("utf-8")
    timestamp = str(int(time.time()))
    url = args.url or f"http://127.0.0.1:{_send_port()}/webhooks/zoom"
    request = urllib.request.Request(url, data=raw, method="POST", headers={
        "content-type": "application/json; charset=utf-8", "x-zm-request-timestamp": timestamp,
        "x-zm-signature": sign(secret, timestamp, raw), "user-agent": "reactor-send"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach {url}: {getattr(exc, 'reason', exc)} (is reactor running? `make run`, or give --url)",
              file=sys.stderr)
        return 1
    print(f"{status} {text.strip()}")
    if status == 200:
        _print_outcome(settings, text)
    return 0 if 200 <= status < 300 else 1


def _print_outcome(settings: Settings, answer: str, wait: float = 5.0) -> None:
    """What became of the delivery a 200 numbered (matched, planned, or a duplicate), read from this
    machine's DATABASE_URL once reactor has ingested it; nothing when that is not where reactor stores."""
    try:
        seq = json.loads(answer)["delivery"]
        store = open_store(settings.database_url)
    except (ValueError, KeyError, TypeError, ReactorError):
        return
    try:
        deadline = time.time() + wait
        found = store.delivery(seq)
        while (found is None or found.get("inbox")) and time.time() < deadline:
            time.sleep(0.05)
            found = store.delivery(seq)
    except ReactorError:
        return
    finally:
        store.close()
    if found is None or found.get("inbox"):
        return
    if "duplicate" in found:
        print(f"delivery {seq}: a duplicate of delivery {found['id']}: nothing new planned")
        return
    matched = [v["rule"] for v in found["verdicts"] if v["matched"]]
    print(f"delivery {seq}: matched {', '.join(matched) or 'no rule'}; {len(found['jobs'])} action(s) planned "
          f"(`python -m reactor history` shows them)")


def _send_port() -> str:
    """Where `send` posts: $PORT, else the port `dev` wrote to var/dev.port, else 8000."""
    if os.environ.get("PORT"):
        return os.environ["PORT"]
    try:
        written = DEV_PORT_FILE.read_text().strip()
    except OSError:
        return str(DEFAULT_PORT)
    return written if written.isdigit() else str(DEFAULT_PORT)


