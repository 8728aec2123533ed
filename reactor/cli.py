"""Edge: the `reactor` command (also `python -m reactor`). Run `reactor --help` for the list.

Each command is registered once, with its arguments, by @command; settings come through Settings,
each command asking only for the part it needs. One convention for all: the rules are `--rules PATH`
(`check PATH` stays as a shorthand), an event is a built-in sample name or a JSON file, changed by
`--topic`, `--meeting-id`, `--host-id` and `--at`; a wrong argument prints the command's own usage.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets as pysecrets
import shlex
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from typing import Callable

from .errors import PayloadError, ReactorError, RulesError, SecretError
from .accounts import DEFAULT
from .events import event_from_body, parse_body
from .plan import plan
from .redact import masked
from .retry_policy import operator_retry_refusal
from .rules.examples import run_examples
from .rules.load import load_rules
from .samples import sample, sample_names, set_field
from .secrets import encrypt, keygen
from .settings import Settings
from .signature import sign
from .store import STATUSES, open_store

LOCAL_SECRET_FILE = Path("var/local-webhook-secret")
DEV_PORT_FILE = Path("var/dev.port")  # written by `dev` (`make run`): where `send` finds the running reactor
DEFAULT_PORT = 8000
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


def main(argv: list[str] | None = None, prog: str = "reactor") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Zoom webhooks in, live-stream actions out.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name, (help_text, arguments, _) in COMMANDS.items():
        p = parsers[name] = sub.add_parser(name, help=help_text, description=help_text)
        for flags, options in arguments:
            p.add_argument(*flags, **options)
        p.set_defaults(usage_error=p.error)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would blame the top level; the command's own usage is what helps
        parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        settings = Settings.from_env(webhooks=False, zoom=False)  # what a tool may need; each reads its part
    except ReactorError as exc:
        print(f"reactor: {exc}", file=sys.stderr)
        return 2
    return COMMANDS[args.command][2](args, settings)


def run(prog: str = "reactor") -> None:
    """The `reactor` console script (and `python -m reactor`)."""
    try:
        sys.exit(main(prog=prog))
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


# -- events from the command line (send, explain) -----------------------------------------------


def event_time(text: str) -> int:
    """--at: an ISO 8601 time with its UTC offset, or epoch milliseconds; as Zoom's event_ts (ms)."""
    if text.isdigit():
        if int(text) < 10**11:
            raise argparse.ArgumentTypeError(f"{text} looks like seconds: event_ts is in milliseconds "
                                             f"({int(text) * 1000})")
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: use ISO 8601 with an offset, e.g. "
                                         "2026-11-30T10:30:00+01:00 or 2026-11-30T09:30:00Z, or epoch ms") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset: add one, e.g. {text}Z or {text}+01:00")
    return int(when.timestamp() * 1000)


EVENT_ARGUMENTS = (
    arg("event", nargs="?", metavar="EVENT",
        help="a built-in sample (" + ", ".join(sample_names()) + ") or an event JSON file"),
    arg("--file", metavar="PATH", help="an event JSON file (the same as giving it as EVENT)"),
    arg("--topic", help="set payload.object.topic"),
    arg("--meeting-id", metavar="ID", help="set payload.object.id"),
    arg("--host-id", metavar="ID", help="set payload.object.host_id"),
    arg("--at", type=event_time, metavar="TIME",
        help="the event's time (event_ts): ISO 8601 with offset, e.g. 2026-11-30T10:30:00+01:00, or epoch ms"),
)


def event_body(args) -> tuple[dict, bool]:
    """The event a command's EVENT/--file and --topic/--meeting-id/--host-id/--at describe, and whether
    it came from a file. A wrong argument ends the command with its usage."""
    if args.event and args.file:
        args.usage_error("give the event once: a sample name or a file as EVENT, or --file PATH")
    name = args.file or args.event
    if not name:
        args.usage_error("name the event: a built-in sample (e.g. meeting.started) or --file PATH")
    from_file = bool(args.file) or name.endswith(".json") or Path(name).is_file()
    if from_file:
        try:
            body = json.loads(Path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            args.usage_error(f"cannot read the event file {name}: {exc}")
        if not isinstance(body, dict):
            args.usage_error(f"{name} holds no event: a Zoom event is a JSON object with an \"event\" name")
    else:
        try:
            body = sample(name)
        except KeyError as exc:
            args.usage_error(exc.args[0] + " (or give an event JSON file)")
    for path, value in (("topic", args.topic), ("id", args.meeting_id), ("host_id", args.host_id)):
        if value is not None:
            set_field(body, path, value)
    if args.at is not None:
        body["event_ts"] = args.at
    return body, from_file


def _utc(ts_ms) -> str:
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool):
        return "no event_ts"
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%a %Y-%m-%d %H:%M:%SZ")


# -- send ---------------------------------------------------------------------------------------


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
        from .live_rules import accounts_of

        account = accounts_of(settings).by_name.get(args.account)
        if account is None:
            print(f"no account named {args.account!r} in {settings.accounts_path or 'REACTOR_ACCOUNTS (unset)'}",
                  file=sys.stderr)
            return 2
        secret = account.secret_tokens[0]
        if account.account_id and isinstance(body.get("payload"), dict):
            body["payload"]["account_id"] = account.account_id
    else:
        secret = settings.webhook_secret or _local_secret(create=False)
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


def _without_password(url: str) -> str:
    """A DATABASE_URL fit to print: its password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _private_file(path: Path, text: str) -> None:
    """Write `text` to `path` (creating var/ 0700), readable by this user only from its first byte."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def _local_secret(create: bool) -> str:
    """The webhook secret `make run` uses when none is configured, kept in var/ for `send`."""
    if LOCAL_SECRET_FILE.exists():
        return LOCAL_SECRET_FILE.read_text().strip()
    if not create:
        return ""
    value = pysecrets.token_urlsafe(24)
    _private_file(LOCAL_SECRET_FILE, value + "\n")
    return value


# -- rules tooling -----------------------------------------------------------------------------

RULES_ARGUMENT = arg("--rules", metavar="PATH", help="a rules folder or file (default: $REACTOR_RULES, else ./rules)")
ACCOUNTS_ARGUMENT = arg("--accounts", metavar="PATH",
                        help="the accounts file (default: $REACTOR_ACCOUNTS, else the one account 'default')")


def _account_names(args, settings: Settings, resolve: bool = False) -> tuple[str, ...]:
    """The account names rules may use, from --accounts or REACTOR_ACCOUNTS (raises RulesError)."""
    from .live_rules import accounts_of

    path = getattr(args, "accounts", None) or settings.accounts_path
    if not path:
        return (DEFAULT,)
    return accounts_of(replace(settings, accounts_path=path), resolve=resolve).names


@command("check", "validate rule files and run their examples (exit 1 on any problem)",
         RULES_ARGUMENT, ACCOUNTS_ARGUMENT,
         arg("path", nargs="?", default=None, metavar="PATH", help="the same as --rules PATH (a shorthand)"),
         arg("--secrets", action="store_true",
             help="also require every ${NAME} to be set and every enc: value to decrypt here"),
         arg("--strict", action="store_true", help="warnings are problems too (exit 1)"))
def cmd_check(args, settings: Settings) -> int:
    if args.path and args.rules and args.path != args.rules:
        args.usage_error(f"two rules paths ({args.path} and --rules {args.rules}): give one")
    path = args.rules or args.path or settings.rules_path
    problems, names = [], None
    try:
        names = _account_names(args, settings, resolve=args.secrets)
    except RulesError as exc:
        problems = exc.problems
    try:
        rules = load_rules(path, secret_key=settings.secret_key, resolve_secrets=args.secrets, strict=args.strict,
                           accounts=names)
    except RulesError as exc:
        problems = problems + exc.problems
    if problems:
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problem(s) in {path}" + (f" and {args.accounts or settings.accounts_path}"
                                                         if args.accounts or settings.accounts_path else ""))
        return 1
    for warning in rules.warnings:
        print(f"warning: {warning}")
    examples, failures = run_examples(rules)
    for failure in failures:
        print(failure)
    status = "ok" if not failures else "FAILED"
    print(f"{status}: {len(rules.rules)} rule(s) in {len(rules.files)} file(s), {examples} example(s), "
          f"{len(failures)} failing; version {rules.version}; account(s): {', '.join(names)}")
    return 1 if failures else 0


@command("explain", "show, for every rule, whether it matches an event and why not, and the calls it would make",
         *EVENT_ARGUMENTS, RULES_ARGUMENT,
         arg("--account", metavar="NAME", help="the account the event comes through (default: the rules' "
                                               "account: filters are not applied)"))
def cmd_explain(args, settings: Settings) -> int:
    body, _ = event_body(args)
    raw = json.dumps(body).encode("utf-8")
    try:
        event = event_from_body(parse_body(raw), raw)
    except PayloadError as exc:
        print(f"cannot read the event {args.file or args.event}: {exc}", file=sys.stderr)
        return 2
    try:
        rules = load_rules(args.rules or settings.rules_path, secret_key=settings.secret_key, resolve_secrets=False)
    except RulesError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    target = event.target
    print(f"event {event.name} on {target.kind[:-1] + ' ' + target.id if target else 'no meeting id'} "
          f"at {_utc(body.get('event_ts'))}")
    matched = []
    for verdict in rules.explain(event, args.account):
        if verdict.matched:
            matched.append(verdict.rule)
            print(f"  MATCH     {verdict.rule.name}  ({verdict.rule.source})")
        else:
            print(f"  no match  {verdict.rule.name}  ({verdict.rule.source}): {verdict.failure}")
    actions, skipped = plan(event, matched, args.account or DEFAULT)
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


@command("encrypt", "print an enc: value for a rule file; reads the value from stdin only (pipe it in, "
                    "never put it on the command line)",
         arg("value", nargs="?", help=argparse.SUPPRESS))  # accepted only to refuse it without echoing it
def cmd_encrypt(args, settings: Settings) -> int:
    if args.value is not None:
        print("encrypt reads the value from stdin only: a value on the command line stays in shell history and "
              "is visible to every user in the process list. Run: printf %s \"$KEY\" | python -m reactor encrypt "
              "(or type it and press Ctrl-D)", file=sys.stderr)
        return 2
    if not settings.secret_key:
        print("REACTOR_SECRET_KEY is not set: make one with `reactor keygen`", file=sys.stderr)
        return 2
    value = sys.stdin.read().rstrip("\n")
    if not value:
        print("encrypt read nothing from stdin: pipe the value in, e.g. printf %s \"$KEY\" | python -m reactor "
              "encrypt", file=sys.stderr)
        return 2
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


@command("history", "what reactor received (#N: a delivery) and did (action N: an action, for `retry`)",
         arg("--meeting"), arg("--since", help="e.g. 30m, 1h, 2d"), arg("--status", choices=STATUSES),
         arg("--account", metavar="NAME", help="only what came through this account (a name of the accounts file)"),
         arg("--limit", type=int, default=50), arg("--json", action="store_true"))
def cmd_history(args, settings: Settings) -> int:
    rows = _store(settings).history(meeting=args.meeting, since=_since(args.since), status=args.status,
                                    limit=args.limit, account=args.account)
    if args.json:
        for d in rows:  # the stored call may carry a literal stream key (see `check`'s warning): never shown
            for j in d["jobs"]:
                j["action"] = {**j["action"], "body": masked(j["action"]["body"])}
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no deliveries recorded" + (" for that filter" if (args.meeting or args.since or args.status
                                                                  or args.account) else ""))
    for d in reversed(rows):
        account = f" [{d['account']}]" if d["account"] not in ("", DEFAULT) else ""  # one account: as before
        print(f"#{d['id']} {_when(d['received_at'])}{account} {d['event']} {d['order_key'] or '(no meeting)'}"
              f"{_who(d['body'])}")
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
                tracking = f" [Zoom tracking id {a['tracking_id']}]" if a.get("tracking_id") else ""
                print(f"        {_when(a['at'])} {a['outcome']} HTTP {status}{code}: {a['message']}{after}{tracking}")
    return 0


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _who(body) -> str:
    """ ' "Town Hall" host x1yC…' for a history line: the topic (quoted, cut to 60) and the host, when known."""
    obj = body.get("payload", {}).get("object") if isinstance(body, dict) and isinstance(body.get("payload"), dict) else None
    if not isinstance(obj, dict):
        return ""
    out = ""
    topic = obj.get("topic")
    if isinstance(topic, str):
        out += " " + json.dumps(topic if len(topic) <= 60 else topic[:59] + "…", ensure_ascii=False)
    host = obj.get("host_id") or obj.get("host_email")
    if isinstance(host, (str, int)) and not isinstance(host, bool):
        out += f" host {host}"
    return out


@command("retry", "re-queue a dead action (with the same rule's later actions it stopped) or every dead one; "
                  "what would be sent is shown first",
         arg("id", nargs="?", type=int, metavar="ACTION",
             help="an action id: the N of `action N` in `history` (not a delivery's #N)"),
         arg("--dead", action="store_true", help="every dead action (shows them; add --yes to re-queue)"),
         arg("--yes", action="store_true", help="with --dead: re-queue what is shown"),
         arg("--account", metavar="NAME", help="with --dead: only the actions of this account"),
         arg("--force", action="store_true",
             help="also actions whose meeting instance has ended or whose deadline has passed"))
def cmd_retry(args, settings: Settings) -> int:
    if (args.id is None) == (not args.dead):
        args.usage_error("name one action id (the N of `action N` in `history`) or use --dead")
    now = time.time()
    store = _store(settings)
    jobs = store.dead_jobs(None if args.dead else args.id)
    if args.account:
        if not args.dead:
            args.usage_error("--account goes with --dead (one action is named by its id)")
        jobs = [job for job in jobs if job["action"]["account"] == args.account]
    if not args.dead and not jobs:
        print(f"no such action {args.id} (`history` shows actions as `action N`; #N is a delivery)", file=sys.stderr)
        return 1
    if not args.dead and jobs[0]["status"] != "dead":
        print(f"action {args.id} is {jobs[0]['status']}, not dead: nothing re-queued", file=sys.stderr)
        return 1
    allowed = []
    for job in jobs:
        action = job["action"]
        refusal = operator_retry_refusal(job["instance_ended"], job["deadline"], now)
        account = f" [{action['account']}]" if action["account"] != DEFAULT else ""
        print(f"action {job['id']} {action['kind']}{account}: {action['method']} {action['path']} "
              f"{json.dumps(masked(action['body']))}")
        if refusal and not args.force:
            print(f"    refused: {refusal}; --force sends it anyway")
        else:
            allowed.append(job["id"])
    if not args.dead:
        if not allowed:
            return 1
        status, requeued = store.retry_chain(args.id, now, now + settings.action_deadline)
        if not requeued:
            print(f"action {args.id} is {status}, not dead: nothing re-queued", file=sys.stderr)
            return 1
        later = requeued[1:]
        also = f", with the same rule's later action{'s' if len(later) > 1 else ''} {', '.join(map(str, later))}" if later else ""
        print(f"re-queued {len(requeued)} action{'s' if len(requeued) > 1 else ''}: action {requeued[0]}{also}")
        return 0
    if not args.yes:
        print(f"{len(allowed)} of {len(jobs)} dead action(s) would be re-queued: run again with --yes to re-queue them")
        return 0 if allowed else 1
    count = store.retry(allowed, now, now + settings.action_deadline)
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
        notes.append("no Zoom credentials: DRY RUN, actions are recorded, not sent (an unset ${NAME} in the "
                     "rules is shown as unset)")
    if not settings.console_password:
        env["REACTOR_CONSOLE_PASSWORD"] = _local_console_password()
    notes.append(f"console: http://127.0.0.1:{settings.port}/console (password: "
                 f"{'REACTOR_CONSOLE_PASSWORD' if settings.console_password else LOCAL_CONSOLE_FILE})")
    env.setdefault("WEB_CONCURRENCY", "2")
    env["PORT"] = str(settings.port)
    _private_file(DEV_PORT_FILE, f"{settings.port}\n")
    print(f"reactor on http://127.0.0.1:{settings.port}  (rules: {settings.rules_path}, "
          f"database: {_without_password(settings.database_url)})")
    for note in notes:
        print(f"  - {note}")
    tool = _this_tool()
    print(f"try, in another terminal in this folder (`send` finds port {settings.port} in {DEV_PORT_FILE}):")
    print(f'  {tool} send meeting.started --topic "Town Hall"')
    print(f"  {tool} history")
    sys.stdout.flush()
    cmd = [sys.executable, "-m", "gunicorn", "-c", "python:reactor.gunicorn_conf", "--bind",
           f"127.0.0.1:{settings.port}", "reactor:create_app()"]
    os.execve(cmd[0], cmd, env)


def _this_tool() -> str:
    """How to call this reactor from another terminal: its `reactor` script if installed, else this
    Python with -m (relative to the current folder when inside it, e.g. .venv/bin/python)."""
    bin_dir = Path(sys.executable).parent
    script = bin_dir / "reactor"
    target, suffix = (script, "") if script.is_file() else (Path(sys.executable), " -m reactor")
    try:
        shown = str(target.absolute().relative_to(Path.cwd()))
        shown = shown if "/" in shown else "./" + shown
    except ValueError:
        shown = str(target)
    return shlex.quote(shown) + suffix


LOCAL_CONSOLE_FILE = Path("var/console-password")


def _local_console_password() -> str:
    """The console password `make run` uses when none is configured: made once, kept in var/ (0600)."""
    if LOCAL_CONSOLE_FILE.exists():
        return LOCAL_CONSOLE_FILE.read_text().strip()
    value = pysecrets.token_urlsafe(18)
    _private_file(LOCAL_CONSOLE_FILE, value + "\n")
    return value
