"""Edge: `python -m reactor COMMAND`. Run `python -m reactor --help` for the list."""
from __future__ import annotations

import argparse
import json
import os
import secrets as pysecrets
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

LOCAL_SECRET_FILE = Path("var/local-webhook-secret")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reactor", description="Zoom webhooks in, live-stream actions out.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("send", help="post a correctly signed sample event to a running reactor")
    p.add_argument("event", help="a built-in sample: meeting.started, meeting.ended, webinar.started, "
                                 "meeting.participant_joined, endpoint.url_validation, ...")
    p.add_argument("--topic")
    p.add_argument("--meeting-id")
    p.add_argument("--host-id")
    p.add_argument("--uuid", help="meeting instance uuid (default: a new one, so each send is a new meeting)")
    p.add_argument("--file", help="send this JSON file instead of a built-in sample")
    p.add_argument("--url", default=None, help="default: http://127.0.0.1:$PORT/webhooks/zoom")

    p = sub.add_parser("check", help="validate rule files and run their examples (exit 1 on any problem)")
    p.add_argument("path", nargs="?", default=None)
    p.add_argument("--secrets", action="store_true",
                   help="also require every ${NAME} to be set and every enc: value to decrypt here")

    p = sub.add_parser("explain", help="show, for every rule, whether it matches an event and why not")
    p.add_argument("event", help="an event JSON file or a built-in sample name")
    p.add_argument("--rules", default=None)

    p = sub.add_parser("history", help="what reactor received and did")
    p.add_argument("--meeting")
    p.add_argument("--since", help="e.g. 30m, 1h, 2d")
    p.add_argument("--status", choices=["pending", "running", "done", "dead", "skipped"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("retry", help="re-queue dead actions")
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--dead", action="store_true", help="every dead action")

    sub.add_parser("keygen", help="print a new REACTOR_SECRET_KEY")
    p = sub.add_parser("encrypt", help="print an enc: value for a rule file (reads the value from stdin)")
    p.add_argument("value", nargs="?")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    sub.add_parser("worker", help="run a dedicated dispatcher (no web server)")
    sub.add_parser("dev", help="what `make run` runs: a local reactor on 127.0.0.1:$PORT")

    args = parser.parse_args(argv)
    return COMMANDS[args.command](args)


# -- send ---------------------------------------------------------------------------------------


def cmd_send(args) -> int:
    from .samples import sample, set_field
    from .signature import sign

    if args.file:
        body = json.loads(Path(args.file).read_text(encoding="utf-8"))
    else:
        try:
            body = sample(args.event)
        except KeyError as exc:
            print(exc.args[0], file=sys.stderr)
            return 2
        body["event_ts"] = int(time.time() * 1000)
        if args.event != "endpoint.url_validation":
            set_field(body, "uuid", args.uuid or (uuid.uuid4().hex[:22] + "=="))
    for path, value in (("topic", args.topic), ("id", args.meeting_id), ("host_id", args.host_id)):
        if value is not None:
            set_field(body, path, value)
    secret = os.environ.get("ZOOM_WEBHOOK_SECRET_TOKEN") or _local_secret(create=False)
    if not secret:
        print("ZOOM_WEBHOOK_SECRET_TOKEN is not set (and no local reactor wrote one): set it to your app's "
              "Secret Token", file=sys.stderr)
        return 2
    raw = json.dumps(body).encode("utf-8")
    timestamp = str(int(time.time()))
    url = args.url or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/webhooks/zoom"
    request = urllib.request.Request(url, data=raw, method="POST", headers={
        "content-type": "application/json; charset=utf-8", "x-zm-request-timestamp": timestamp,
        "x-zm-signature": sign(secret, timestamp, raw), "user-agent": "reactor-send"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach {url}: {getattr(exc, 'reason', exc)} (is reactor running? `make run`)", file=sys.stderr)
        return 1
    print(f"{status} {text.strip()}")
    return 0 if 200 <= status < 300 else 1


def _local_secret(create: bool) -> str:
    """The webhook secret `make run` uses when none is configured, kept in var/ for `send`."""
    if LOCAL_SECRET_FILE.exists():
        return LOCAL_SECRET_FILE.read_text().strip()
    if not create:
        return ""
    LOCAL_SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
    value = pysecrets.token_urlsafe(24)
    LOCAL_SECRET_FILE.write_text(value + "\n")
    LOCAL_SECRET_FILE.chmod(0o600)
    return value


# -- rules tooling -----------------------------------------------------------------------------


def _rules_path(given: str | None) -> str:
    return given or os.environ.get("REACTOR_RULES") or "rules"


def cmd_check(args) -> int:
    from .errors import RulesError
    from .events import event_from_body
    from .rules.load import load_rules

    path = _rules_path(args.path)
    try:
        rules = load_rules(path, secret_key=os.environ.get("REACTOR_SECRET_KEY", ""), resolve_secrets=args.secrets)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) in {path}")
        return 1
    for warning in rules.warnings:
        print(f"warning: {warning}")
    failures = 0
    examples = 0
    for rule in rules.rules:
        for example in rule.examples:
            examples += 1
            event = event_from_body(example.event, json.dumps(example.event).encode())
            failure = rule.failure(event)
            if (failure is None) != example.expect:
                failures += 1
                file, _ = rule.source.rsplit(":", 1)
                why = f": {failure}" if failure else ""
                print(f"{file}:{example.line}: rule \"{rule.name}\": example expected "
                      f"{'match' if example.expect else 'no match'}, got {'match' if failure is None else 'no match'}{why}")
    status = "ok" if not failures else "FAILED"
    print(f"{status}: {len(rules.rules)} rule(s) in {len(rules.files)} file(s), {examples} example(s), "
          f"{failures} failing; version {rules.version}")
    return 1 if failures else 0


def cmd_explain(args) -> int:
    from .errors import PayloadError, RulesError
    from .events import event_from_body, parse_body
    from .plan import masked, plan
    from .rules.load import load_rules
    from .samples import sample

    try:
        raw = Path(args.event).read_bytes() if Path(args.event).is_file() else json.dumps(sample(args.event)).encode()
        body = parse_body(raw)
        event = event_from_body(body, raw)
    except (KeyError, PayloadError) as exc:
        print(f"cannot read the event {args.event}: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    try:
        rules = load_rules(_rules_path(args.rules), secret_key=os.environ.get("REACTOR_SECRET_KEY", ""),
                           resolve_secrets=False)
    except RulesError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    target = event.target
    print(f"event {event.name} on {target.kind[:-1] + ' ' + target.id if target else 'no meeting id'}")
    matched = []
    for verdict in rules.explain(event):
        if verdict.matched:
            matched.append(verdict.rule)
            print(f"  MATCH     {verdict.rule.name}  ({verdict.rule.source})")
        else:
            print(f"  no match  {verdict.rule.name}  ({verdict.rule.source}): {verdict.failure}")
    actions, skipped = plan(event, matched)
    print("calls that would be made:" if actions else "no calls would be made")
    for action in actions:
        print(f"  {action.method} {action.path} {json.dumps(masked(action.body))}   [{action.rule}]")
    for s in skipped:
        print(f"  skipped {s.kind} [{s.rule}]: {s.reason}")
    return 0


def cmd_keygen(args) -> int:
    from .secrets import keygen

    print(keygen())
    return 0


def cmd_encrypt(args) -> int:
    from .errors import SecretError
    from .secrets import encrypt

    key = os.environ.get("REACTOR_SECRET_KEY", "")
    if not key:
        print("REACTOR_SECRET_KEY is not set: make one with `python -m reactor keygen`", file=sys.stderr)
        return 2
    value = args.value if args.value is not None else sys.stdin.read().rstrip("\n")
    try:
        print(encrypt(value, key))
    except SecretError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


# -- store tooling ------------------------------------------------------------------------------


def _store(migrate: bool = False):
    """The store of DATABASE_URL; its schema checked (SQLite migrates itself) or, for `migrate`, upgraded."""
    from .errors import ReactorError
    from .settings import normalise_database_url
    from .store import open_store

    try:
        store = open_store(normalise_database_url(os.environ.get("DATABASE_URL", "")))
        store.migrate() if migrate else store.check_schema()
    except ReactorError as exc:
        raise SystemExit(f"reactor: {exc}") from None
    return store


def _since(text: str | None) -> float | None:
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1] not in units or not text[:-1].isdigit():
        raise SystemExit(f"--since {text!r}: use a number and s, m, h or d, e.g. 1h")
    return time.time() - int(text[:-1]) * units[text[-1]]


def cmd_history(args) -> int:
    from .plan import masked

    rows = _store().history(meeting=args.meeting, since=_since(args.since), status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no deliveries recorded" + (" for that filter" if (args.meeting or args.since or args.status) else ""))
    for d in reversed(rows):
        print(f"#{d['id']} {_when(d['received_at'])} {d['event']} {d['order_key'] or '(no meeting)'}")
        for v in d["verdicts"]:
            print(f"    {'matched ' if v['matched'] else 'no match'} {v['rule']}{': ' + v['why'] if v['why'] else ''}")
        for j in d["jobs"]:
            action = j["action"]
            confirmed = " (confirmed by Zoom)" if j["confirmed_at"] else ""
            print(f"    action {j['id']} {action['kind']} {action['method']} {action['path']}: {j['status']}{confirmed}")
            print(f"        body {json.dumps(masked(action['body']))}")
            for a in j["attempt_log"]:
                status = a["http_status"] if a["http_status"] is not None else "-"
                code = f" code {a['zoom_code']}" if a["zoom_code"] is not None else ""
                after = f", next {_when(a['next_at'])}" if a["next_at"] else ""
                print(f"        {_when(a['at'])} {a['outcome']} HTTP {status}{code}: {a['message']}{after}")
    return 0


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def cmd_retry(args) -> int:
    from .settings import Settings

    if args.id is None and not args.dead:
        print("name an action id (from `history`) or use --dead", file=sys.stderr)
        return 2
    deadline = int(os.environ.get("REACTOR_ACTION_DEADLINE", Settings.action_deadline))
    now = time.time()
    count = _store().retry(None if args.dead else args.id, now, now + deadline)
    print(f"re-queued {count} dead action(s)")
    return 0 if count else 1


def cmd_migrate(args) -> int:
    _store(migrate=True)
    print("schema is up to date")
    return 0


def cmd_worker(args) -> int:
    import signal
    import threading

    from .app import start_housekeeping
    from .dispatch import Dispatcher
    from .errors import ReactorError
    from .logs import configure_logging, log
    from .settings import Settings
    from .store import open_store

    configure_logging()
    try:
        settings = Settings.from_env(webhooks=False)
        store = open_store(settings.database_url)
        store.check_schema()
    except ReactorError as exc:
        print(f"reactor worker cannot start: {exc}", file=sys.stderr)
        return 3
    dispatcher = Dispatcher.from_settings(settings, store)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    dispatcher.start()
    store.listen(dispatcher.wake)
    start_housekeeping(store.maintain)
    log("worker started", pid=os.getpid(), threads=dispatcher.threads)
    stop.wait()
    dispatcher.stop()
    return 0


def cmd_dev(args) -> int:
    """Start gunicorn as the Procfile does, with local defaults for what is not configured."""
    env = dict(os.environ)
    notes = []
    if not env.get("ZOOM_WEBHOOK_SECRET_TOKEN"):
        env["ZOOM_WEBHOOK_SECRET_TOKEN"] = _local_secret(create=True)
        notes.append(f"webhook secret: a local one in {LOCAL_SECRET_FILE} (set ZOOM_WEBHOOK_SECRET_TOKEN for Zoom)")
    if not all(env.get(k) for k in ("ZOOM_ACCOUNT_ID", "ZOOM_CLIENT_ID", "ZOOM_CLIENT_SECRET")):
        env.setdefault("REACTOR_DRY_RUN", "1")
        notes.append("no Zoom credentials: DRY RUN, actions are recorded, not sent")
    env.setdefault("YOUTUBE_STREAM_KEY", "local-demo-stream-key")
    env.setdefault("WEB_CONCURRENCY", "2")
    port = env.setdefault("PORT", "8000")
    print(f"reactor on http://127.0.0.1:{port}  (rules: {env.get('REACTOR_RULES', 'rules')}, "
          f"database: {env.get('DATABASE_URL', 'sqlite:///var/reactor.db')})")
    for note in notes:
        print(f"  - {note}")
    print("try, in another terminal in this folder:")
    print('  python3 -m reactor send meeting.started --topic "Town Hall"')
    print("  .venv/bin/python -m reactor history")
    sys.stdout.flush()
    cmd = [sys.executable, "-m", "gunicorn", "-c", "python:reactor.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
           "reactor:create_app()"]
    os.execve(cmd[0], cmd, env)


COMMANDS = {"send": cmd_send, "check": cmd_check, "explain": cmd_explain, "history": cmd_history,
            "retry": cmd_retry, "keygen": cmd_keygen, "encrypt": cmd_encrypt, "migrate": cmd_migrate,
            "worker": cmd_worker, "dev": cmd_dev}
