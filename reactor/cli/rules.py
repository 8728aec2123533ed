"""Rules tooling: check, explain, keygen, encrypt."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from ..errors import PayloadError, RulesError, SecretError
from ..accounts import DEFAULT
from ..events import event_from_body, parse_body
from ..plan import plan
from ..redact import masked
from ..rules.examples import run_examples
from ..rules.load import load_rules
from ..secrets import encrypt, keygen
from ..settings import Settings
from .events import EVENT_ARGUMENTS, _utc, event_body
from .registry import arg, command


RULES_ARGUMENT = arg("--rules", metavar="PATH", help="a rules folder or file (default: $REACTOR_RULES, else ./rules)")
ACCOUNTS_ARGUMENT = arg("--accounts", metavar="PATH",
                        help="the accounts file (default: $REACTOR_ACCOUNTS, else the one account 'default')")


def _account_names(args, settings: Settings, resolve: bool = False) -> tuple[str, ...]:
    """The account names rules may use, from --accounts or REACTOR_ACCOUNTS (raises RulesError)."""
    from ..live_rules import accounts_of

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


