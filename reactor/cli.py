"""Edge: `python -m reactor COMMAND`. Run `python -m reactor --help` for the list.

Each command is registered once, with its arguments, by @command; settings come through Settings,
each command asking only for the part it needs.
"""
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
from urllib.parse import urlsplit, urlunsplit
from typing import Callable

from .errors import PayloadError, ReactorError, RulesError, SecretError
from .events import event_from_body, parse_body
from .plan import plan
from .redact import masked
from .rules.examples import run_examples
from .rules.load import load_rules
from .samples import sample, set_field
from .secrets import encrypt, keygen
from .settings import Settings
from .signature import sign
from .store import STATUSES, open_store

LOCAL_SECRET_FILE = Path("var/local-webhook-secret")
COMMANDS: dict[str, tuple[str, tuple, Callable]] = {}


def arg(*flags: str, **options) -> tuple:
    """One argparse argument of a command: arg("--topic", help=...)."""
    return flags, options


def command(name: str, help: str, *arguments: tuple):
    """Register `fn(args, settings) -> exit code` as the command `name`, with its arguments."""

    def register(fn: Callable) -> Callable:
        COMMANDS[name] = (help, arguments, fn)
        return fn

    return register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reactor", description="Zoom webhooks in, live-stream actions out.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, arguments, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        for flags, options in arguments:
            p.add_argument(*flags, **options)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(webhooks=False, zoom=False)  # what a tool may need; each reads its part
    except ReactorError as exc:
        print(f"reactor: {exc}", file=sys.stderr)
        return 2
    return COMMANDS[args.command][2](args, settings)


# -- send ---------------------------------------------------------------------------------------


@command("send", "post a correctly signed sample event to a running reactor",
         arg("event", help="a built-in sample: meeting.started, meeting.ended, webinar.started, "
                           "meeting.participant_joined, endpoint.url_validation, ..."),
         arg("--topic"), arg("--meeting-id"), arg("--host-id"),
         arg("--uuid", help="meeting instance uuid (default: a new one, so each send is a new meeting)"),
         arg("--file", help="send this JSON file instead of a built-in sample"),
         arg("--url", default=None, help="default: http://127.0.0.1:$PORT/webhooks/zoom"))
def cmd_send(args, settings: Settings) -> int:
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
    secret = settings.webhook_secret or _local_secret(create=False)
    if not secret:
        print("ZOOM_WEBHOOK_SECRET_TOKEN is not set (and no local reactor wrote one): set it to your app's "
              "Secret Token", file=sys.stderr)
        return 2
    raw = json.dumps(body).encode("utf-8")
    timestamp = str(int(time.time()))
    url = args.url or f"http://127.0.0.1:{settings.port}/webhooks/zoom"
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


def _without_password(url: str) -> str:
    """A DATABASE_URL fit to print: its password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


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


@command("check", "validate rule files and run their examples (exit 1 on any problem)",
         arg("path", nargs="?", default=None, help="a rules folder or file (default: $REACTOR_RULES or rules)"),
         arg("--secrets", action="store_true",
             help="also require every ${NAME} to be set and every enc: value to decrypt here"),
         arg("--strict", action="store_true", help="warnings are problems too (exit 1)"))
def cmd_check(args, settings: Settings) -> int:
    path = args.path or settings.rules_path
    try:
        rules = load_rules(path, secret_key=settings.secret_key, resolve_secrets=args.secrets, strict=args.strict)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) in {path}")
        return 1
    for warning in rules.warnings:
        print(f"warning: {warning}")
    examples, failures = run_examples(rules)
    for failure in failures:
        print(failure)
    status = "ok" if not failures else "FAILED"
    print(f"{status}: {len(rules.rules)} rule(s) in {len(rules.files)} file(s), {examples} example(s), "
          f"{len(failures)} failing; version {rules.version}")
    return 1 if failures else 0


@command("explain", "show, for every rule, whether it matches an event and why not",
         arg("event", help="an event JSON file or a built-in sample name"),
         arg("--rules", default=None, help="a rules folder or file (default: $REACTOR_RULES or rules)"))
def cmd_explain(args, settings: Settings) -> int:
    try:
        raw = Path(args.event).read_bytes() if Path(args.event).is_file() else json.dumps(sample(args.event)).encode()
        body = parse_body(raw)
        event = event_from_body(body, raw)
    except (KeyError, PayloadError) as exc:
        print(f"cannot read the event {args.event}: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    try:
        rules = load_rules(args.rules or settings.rules_path, secret_key=settings.secret_key, resolve_secrets=False)
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


@command("keygen", "print a new REACTOR_SECRET_KEY")
def cmd_keygen(args, settings: Settings) -> int:
    print(keygen())
    return 0


@command("encrypt", "print an enc: value for a rule file (reads the value from stdin)", arg("value", nargs="?"))
def cmd_encrypt(args, settings: Settings) -> int:
    if not settings.secret_key:
        print("REACTOR_SECRET_KEY is not set: make one with `python -m reactor keygen`", file=sys.stderr)
        return 2
    value = args.value if args.value is not None else sys.stdin.read().rstrip("\n")
    try:
        print(encrypt(value, settings.secret_key))
    except SecretError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


# -- store tooling ------------------------------------------------------------------------------


def _store(settings: Settings, migrate: bool = False):
    """The store of DATABASE_URL; its schema checked (SQLite migrates itself) or, for `migrate`, upgraded."""
    try:
        store = open_store(settings.database_url)
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


@command("history", "what reactor received and did",
         arg("--meeting"), arg("--since", help="e.g. 30m, 1h, 2d"), arg("--status", choices=STATUSES),
         arg("--limit", type=int, default=50), arg("--json", action="store_true"))
def cmd_history(args, settings: Settings) -> int:
    rows = _store(settings).history(meeting=args.meeting, since=_since(args.since), status=args.status,
                                    limit=args.limit)
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


@command("retry", "re-queue dead actions", arg("id", nargs="?", type=int),
         arg("--dead", action="store_true", help="every dead action"))
def cmd_retry(args, settings: Settings) -> int:
    if args.id is None and not args.dead:
        print("name an action id (from `history`) or use --dead", file=sys.stderr)
        return 2
    now = time.time()
    count = _store(settings).retry(None if args.dead else args.id, now, now + settings.action_deadline)
    print(f"re-queued {count} dead action(s)")
    return 0 if count else 1


@command("migrate", "create or upgrade the database schema")
def cmd_migrate(args, settings: Settings) -> int:
    _store(settings, migrate=True)
    print("schema is up to date")
    return 0


@command("worker", "run a dedicated dispatcher (no web server)")
def cmd_worker(args, settings: Settings) -> int:
    from .worker import run_worker  # the dispatcher and the Zoom client: loaded only by this command

    return run_worker()


@command("doctor", "check a deployment end to end: settings, database, rules, Zoom scopes (exit 1 on any failure)",
         arg("--url", help="also check the deployed reactor: https://YOUR-APP/webhooks/zoom"))
def cmd_doctor(args, settings: Settings) -> int:
    from .doctor import run_doctor  # the Zoom client and requests: loaded only by this command

    return run_doctor(os.environ, args.url)


@command("dev", "what `make run` runs: a local reactor on 127.0.0.1:$PORT")
def cmd_dev(args, settings: Settings) -> int:
    """Start gunicorn as the Procfile does, with local defaults for what is not configured."""
    env = dict(os.environ)
    notes = []
    if not settings.webhook_secret:
        env["ZOOM_WEBHOOK_SECRET_TOKEN"] = _local_secret(create=True)
        notes.append(f"webhook secret: a local one in {LOCAL_SECRET_FILE} (set ZOOM_WEBHOOK_SECRET_TOKEN for Zoom)")
    if not all((settings.account_id, settings.client_id, settings.client_secret)):
        env.setdefault("REACTOR_DRY_RUN", "1")
        notes.append("no Zoom credentials: DRY RUN, actions are recorded, not sent")
    if not settings.console_password:
        env["REACTOR_CONSOLE_PASSWORD"] = _local_console_password()
    notes.append(f"console: http://127.0.0.1:{settings.port}/console (password: "
                 f"{'REACTOR_CONSOLE_PASSWORD' if settings.console_password else LOCAL_CONSOLE_FILE})")
    env.setdefault("YOUTUBE_STREAM_KEY", "local-demo-stream-key")
    env.setdefault("WEB_CONCURRENCY", "2")
    env["PORT"] = str(settings.port)
    print(f"reactor on http://127.0.0.1:{settings.port}  (rules: {settings.rules_path}, "
          f"database: {_without_password(settings.database_url)})")
    for note in notes:
        print(f"  - {note}")
    print("try, in another terminal in this folder:")
    print('  python3 -m reactor send meeting.started --topic "Town Hall"')
    print("  .venv/bin/python -m reactor history")
    sys.stdout.flush()
    cmd = [sys.executable, "-m", "gunicorn", "-c", "python:reactor.gunicorn_conf", "--bind",
           f"127.0.0.1:{settings.port}", "reactor:create_app()"]
    os.execve(cmd[0], cmd, env)


LOCAL_CONSOLE_FILE = Path("var/console-password")


def _local_console_password() -> str:
    """The console password `make run` uses when none is configured: made once, kept in var/ (0600)."""
    if LOCAL_CONSOLE_FILE.exists():
        return LOCAL_CONSOLE_FILE.read_text().strip()
    LOCAL_CONSOLE_FILE.parent.mkdir(parents=True, exist_ok=True)
    value = pysecrets.token_urlsafe(18)
    LOCAL_CONSOLE_FILE.touch(mode=0o600)
    LOCAL_CONSOLE_FILE.chmod(0o600)
    LOCAL_CONSOLE_FILE.write_text(value + "\n")
    return value
