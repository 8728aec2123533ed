"""Store tooling: history, retry, migrate, worker, doctor."""
from __future__ import annotations

import json
import os
import sys
import time

from ..errors import ReactorError
from ..accounts import DEFAULT
from ..redact import masked
from ..retry_policy import operator_retry_refusal
from ..settings import Settings
from ..store import STATUSES, open_store
from .registry import arg, command



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
    from ..worker import run_worker  # the dispatcher and the Zoom client: loaded only by this command

    return run_worker()


@command("doctor", "check a deployment end to end: settings, database, rules, Zoom scopes (exit 1 on any failure)",
         arg("--url", help="also check the deployed reactor: https://YOUR-APP/webhooks/zoom"))
def cmd_doctor(args, settings: Settings) -> int:
    from ..doctor import run_doctor  # the Zoom client and requests: loaded only by this command

    return run_doctor(os.environ, args.url)


