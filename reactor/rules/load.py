"""Pure (but for reading files): rule files to a RuleSet, or a RulesError listing every problem.

Every problem reads `file:line: rule "name": what is wrong (did you mean ...?)`.
"""
from __future__ import annotations

import gc
import os
import pickle
import re
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from ..errors import RulesError
from .load_actions import ActionParser
from .load_examples import ExampleParser
from .regex import RegexRefused, compile_regex
from .fields import KNOWN_EVENTS, field_known, field_names
from .model import (DAYS, FIELD_PATH, TRUE, AllConditions, AllOf, AnyCondition, Compare, Contains, During, Equals,
                    Exists, FieldCondition, In, NotCondition, NotMatcher, Pattern, Rule, Unless, forget_values, number_of)
from .source import LList, LMap, YamlProblem, parse_yaml, suggest

RULE_KEYS = ("name", "on", "on_unknown_event", "account", "enabled", "when", "do", "examples", "description")
FILE_KEYS = ("rules", "unless")
OPERATORS = ("equals", "in", "glob", "regex", "contains", "exists", "gt", "gte", "lt", "lte", "not")
COMBINATORS = ("all", "any", "not", "during")
DURING_KEYS = ("days", "from", "to", "timezone")
DAY_NAMES = {**{d: i for i, d in enumerate(DAYS)},
             **{d: i for i, d in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                                            "sunday"))}}
_RANGE_LIKE = re.compile(r"^\s*([a-z]+)\s*(?:\.\.+|-|–|—|to|through|/)\s*([a-z]+)\s*$")
_WORD_CLASS = re.compile(r"\[([^\]!^][^\]]*)\]")
MAX_PATTERN = 500
COMPACT_ABOVE = 500
_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def rule_files(path: str | os.PathLike) -> list[Path]:
    """The *.yaml/*.yml files under `path` (or `path` itself), in a stable order."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise RulesError([f"{root}: no such rules file or folder: set REACTOR_RULES or create it"])
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_rules(path, env: Mapping[str, str] | None = None, secret_key: str = "", resolve_secrets: bool = True,
               strict: bool = False, accounts: Sequence[str] | None = None):
    """Load and validate every rule file under `path`; raise RulesError listing every problem.

    With resolve_secrets (start-up), every ${NAME} must be set and every enc: value must decrypt;
    without (check, explain on a machine without the secrets), only their form is checked.
    With strict (`check --strict`), every warning is a problem too. `accounts`: the account names a
    rule's `account:` may use (None: not checked)."""
    from .match import RuleSet

    env = os.environ if env is None else env
    files = rule_files(path)
    parser = _Parser(env, secret_key, resolve_secrets, accounts)
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            parser.problems.append(f"{file}: cannot read: {exc}")
            continue
        parser.parse_file(str(file), text)
    if strict:
        parser.problems.extend(f"{w} (a warning; --strict makes it an error)" for w in parser.warnings)
    if parser.problems:
        raise RulesError(parser.problems)
    rules = RuleSet(tuple(parser.rules), warnings=tuple(parser.warnings), files=tuple(str(f) for f in files))
    if len(rules.rules) > COMPACT_ABOVE:
        # The rules were allocated between the parser's garbage, which then pins their memory
        # (~50 MB per 10,000 rules); a copy made after the garbage is gone lets it go.
        frozen = pickle.dumps(rules)
        del parser, rules
        forget_values()
        gc.collect()
        rules = pickle.loads(frozen)
    return rules


class _Parser(ActionParser, ExampleParser):
    def __init__(self, env: Mapping[str, str], secret_key: str, resolve_secrets: bool = True,
                 accounts: Sequence[str] | None = None):
        self.env, self.secret_key, self.resolve_secrets = env, secret_key, resolve_secrets
        self.accounts = accounts
        self.rules: list[Rule] = []
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.names: dict[str, str] = {}
        self.matchers: dict[tuple, Any] = {}
        self.file, self.rule_name = "", ""
        self.rule_events: tuple = ()

    # -- reporting
    def problem(self, line: int, message: str) -> None:
        who = f' rule "{self.rule_name}":' if self.rule_name else ""
        self.problems.append(f"{self.file}:{line}:{who} {message}")

    def warn(self, line: int, message: str) -> None:
        who = f' rule "{self.rule_name}":' if self.rule_name else ""
        self.warnings.append(f"{self.file}:{line}:{who} {message}")

    # -- files and rules
    def parse_file(self, file: str, text: str) -> None:
        self.file, self.rule_name = file, ""
        try:
            doc = parse_yaml(text)
        except YamlProblem as exc:
            self.problem(exc.line, exc.message)
            return
        if doc is None:
            return  # an empty file holds no rules
        if isinstance(doc, LMap) and "accounts" in doc and "rules" not in doc:
            self.problem(doc.line_of("accounts"), "this is an accounts file, not a rules file: keep it beside the "
                                                  "rules folder, not in it, and point REACTOR_ACCOUNTS at it")
            return
        if not isinstance(doc, LMap) or "rules" not in doc:
            self.problem(getattr(doc, "line", 1), "a rules file is a mapping with a 'rules:' list at the top")
            return
        for key in doc:
            if key not in FILE_KEYS:
                self.problem(doc.line_of(key), f"unknown top-level key {key!r}{suggest(key, FILE_KEYS)}")
        rules = doc["rules"]
        first = len(self.rules)
        if rules is not None and not isinstance(rules, LList):
            self.problem(doc.line_of("rules"), "'rules' must be a list of rules (each item starts with '- name:')")
            rules = None
        for index, item in enumerate(rules or ()):
            self.rule_name = ""
            if not isinstance(item, LMap):
                self.problem(rules.line_of(index), "each rule is a mapping with name, on and do")
                continue
            rule = self.parse_rule(item)
            if rule is not None:
                self.rules.append(rule)
        if "unless" in doc:
            self.parse_unless(doc, first)

    def parse_unless(self, doc: LMap, first: int) -> None:
        """A top-level `unless:` condition: every rule of this file fails while it holds."""
        self.rule_name = ""
        line = doc.line_of("unless")
        mine = self.rules[first:]
        self.rule_events = tuple(dict.fromkeys(e for r in mine for e in r.events)) or KNOWN_EVENTS
        before = len(self.problems)
        condition = self.parse_condition(doc["unless"], line, "unless: ")
        if len(self.problems) > before:
            return
        exclusion = Unless(condition, f"{self.file}:{line}")
        for offset, rule in enumerate(mine):
            parts = rule.condition.conditions if isinstance(rule.condition, AllConditions) else (rule.condition,)
            parts = tuple(p for p in parts if p is not TRUE)
            self.rules[first + offset] = replace(rule, condition=AllConditions((exclusion, *parts), rule.condition.line))

    def parse_rule(self, item: LMap) -> Rule | None:
        before = len(self.problems)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            name = item.raw.get("name") if isinstance(name, (int, float)) else None
        if not name:
            self.problem(item.line, "a rule needs a 'name:' (a unique, non-empty string)")
            name = f"<unnamed rule at line {item.line}>"
        self.rule_name = name
        here = f"{self.file}:{item.line_of('name')}"
        if name in self.names:
            self.problem(item.line_of("name"), f"duplicate rule name; the first is at {self.names[name]}")
        else:
            self.names[name] = here
        for key in item:
            if key not in RULE_KEYS:
                self.problem(item.line_of(key), f"unknown key {key!r}{suggest(key, RULE_KEYS)}")
        events = self.parse_on(item)
        self.rule_events = events
        accounts = self.parse_account(item)
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            self.problem(item.line_of("enabled"), "'enabled' must be true or false")
            enabled = True
        condition = TRUE if item.get("when") is None else self.parse_condition(item["when"], item.line_of("when"))
        actions = self.parse_actions(item)
        examples = self.parse_examples(item)
        if len(self.problems) > before:
            return None
        return Rule(name=name, events=events, condition=condition, actions=actions, enabled=enabled,
                    source=here, examples=examples, accounts=accounts)

    def parse_account(self, item: LMap) -> tuple:
        """`account:` the names of the accounts whose events the rule applies to; () (all) when absent."""
        if "account" not in item:
            return ()
        value, line = item["account"], item.line_of("account")
        names = list(value) if isinstance(value, LList) else [value]
        if not names or not all(isinstance(n, str) and n for n in names):
            self.problem(line, "'account' must be an account name or a list of them (the names in the accounts "
                               "file, or default)")
            return ()
        known = self.accounts
        for n in names:
            if known is not None and n not in known:
                listed = ", ".join(known) if known else "none"
                self.problem(line, f"unknown account {n!r}{suggest(n, known)}: the accounts are {listed} "
                                   f"(REACTOR_ACCOUNTS, else the one account 'default')")
        return tuple(dict.fromkeys(names))

    def parse_on(self, item: LMap) -> tuple:
        if "on" not in item:
            self.problem(item.line, "a rule needs 'on:' (an event name such as meeting.started, or a list)")
            return ()
        value, line = item["on"], item.line_of("on")
        names = list(value) if isinstance(value, LList) else [value]
        if not names or not all(isinstance(n, str) and n.strip() for n in names):
            self.problem(line, "'on' must be an event name or a list of event names")
            return ()
        allow = item.get("on_unknown_event")
        if "on_unknown_event" in item and allow != "allow":
            self.problem(item.line_of("on_unknown_event"), "'on_unknown_event' takes only 'allow' "
                                                           "(for an event reactor does not know yet)")
        for n in names:
            if n not in KNOWN_EVENTS and allow != "allow":
                self.problem(line, f"unknown event {n!r}{suggest(n, KNOWN_EVENTS)}: the rule would never fire; "
                                   f"for an event reactor does not know yet, add 'on_unknown_event: allow' to the rule")
        return tuple(dict.fromkeys(names))

    def check_field(self, path: str, line: int, where: str) -> None:
        """A field path the rule's events never carry is a problem (a typo renders empty or never matches)."""
        events = self.rule_events
        if not events or any(e not in KNOWN_EVENTS for e in events) or not FIELD_PATH.match(path):
            return  # no events parsed, or an unknown event (opted in): nothing to check against
        if field_known(path, events):
            return
        shown = ", ".join(events) if len(events) <= 3 else f"{', '.join(events[:3])}, … ({len(events)} events)"
        elsewhere = [e for e in KNOWN_EVENTS if field_known(path, (e,))]
        if elsewhere:  # a real field, of other events: always missing here (a warning: the author may know better)
            others = ", ".join(elsewhere[:3]) + (", …" if len(elsewhere) > 3 else "")
            self.warn(line, f"{where}{path!r} is a field of {others}, not of {shown}: on this rule's events it is "
                            f"always missing; add such an event to 'on:', or write payload.object.{path} if you "
                            f"know it is there")
            return
        self.problem(line, f"{where}{path!r} is not a field of {shown}{suggest(path, field_names(events))}; "
                           f"a field reactor does not list is reached by its full path, payload.object.{path}")

    # -- conditions
    def parse_condition(self, node: Any, line: int, where: str = ""):
        """A condition mapping: every entry must hold."""
        if not isinstance(node, LMap) or not node:
            self.problem(getattr(node, "line", line), "a condition is a mapping of field paths (or all/any/not/during)")
            return TRUE
        parts = []
        for key, value in node.items():
            key_line = node.line_of(key)
            if key in ("all", "any"):
                if not isinstance(value, LList) or not value:
                    self.problem(key_line, f"'{key}' takes a non-empty list of conditions")
                    continue
                inner = tuple(self.parse_condition(v, value.line_of(i), where) for i, v in enumerate(value))
                parts.append(AllConditions(inner, key_line) if key == "all" else AnyCondition(inner, key_line))
            elif key == "not":
                parts.append(NotCondition(self.parse_condition(value, key_line, where), key_line))
            elif key == "during":
                parts.append(self.parse_during(value, key_line))
            else:
                parts.append(self.parse_field(key, value, node, key_line, where))
        return parts[0] if len(parts) == 1 else AllConditions(tuple(parts), node.line)

    def parse_field(self, path: str, value: Any, parent: LMap, line: int, where: str = "") -> FieldCondition:
        if not FIELD_PATH.match(path):
            self.problem(line, f"{path!r} is not a field path: use dotted names such as topic or participant.email")
        self.check_field(path, line, where)
        matcher = self.parse_matcher(value, parent.raw.get(path), line, path)
        return FieldCondition(path, matcher, line)

    def intern(self, matcher):
        """One object for every equal matcher: 10,000 rules written from a few templates share a few
        hundred (less memory, and a pattern is compiled once)."""
        return self.matchers.setdefault(_matcher_key(matcher), matcher)

    def parse_matcher(self, value: Any, raw: str | None, line: int, path: str):
        if isinstance(value, LList):
            items = [self.scalar(v, value.line_of(i), path) for i, v in enumerate(value)]
            return self.intern(In(tuple(_as_written(v, None) for v in items)))
        if isinstance(value, LMap):
            if not value:
                self.problem(line, f"{path}: an empty matcher: give a value or operators such as glob")
            return self.intern(AllOf(tuple(self.intern(self.parse_operator(op, v, value, path))
                                           for op, v in value.items())))
        return self.intern(Equals(_as_written(self.scalar(value, line, path), raw)))

    def parse_operator(self, op: str, value: Any, node: LMap, path: str):
        line = node.line_of(op)
        if op == "equals":
            return Equals(_as_written(self.scalar(value, line, path), node.raw.get(op)))
        if op == "in":
            if not isinstance(value, LList):
                self.problem(line, f"{path}: 'in' takes a list")
                return In(())
            return In(tuple(_as_written(self.scalar(v, value.line_of(i), path), None) for i, v in enumerate(value)))
        if op in ("glob", "regex"):
            text = value if isinstance(value, str) else node.raw.get(op)
            if not isinstance(text, str) or isinstance(value, (LMap, LList)):
                self.problem(line, f"{path}: '{op}' takes a string pattern")
                return Equals(None)
            if len(text) > MAX_PATTERN:
                self.problem(line, f"{path}: the {op} pattern is longer than {MAX_PATTERN} characters")
            known = self.matchers.get(_pattern_key(op, text))
            if known is not None:  # compiled for an earlier rule
                if op == "glob":
                    self.check_glob_classes(text, line, path)
                return known
            try:
                if op == "glob":
                    import fnmatch
                    compiled = re.compile(fnmatch.translate(text), re.IGNORECASE | re.DOTALL)
                else:
                    compiled = compile_regex(text)
            except (re.error, RegexRefused) as exc:
                self.problem(line, f"{path}: invalid {op} {text!r}: {exc}")
                return Equals(None)
            if op == "glob":
                self.check_glob_classes(text, line, path)
            return Pattern(op, text, compiled)
        if op == "contains":
            text = value if isinstance(value, str) else node.raw.get(op)
            if not isinstance(text, str) or not text or isinstance(value, (LMap, LList, bool)) or value is None:
                self.problem(line, f"{path}: 'contains' takes a non-empty string")
                return Equals(None)
            return Contains(text)
        if op == "exists":
            if not isinstance(value, bool):
                self.problem(line, f"{path}: 'exists' takes true or false")
                return Exists(True)
            return Exists(value)
        if op in ("gt", "gte", "lt", "lte"):
            number = number_of(node.raw.get(op)) if not isinstance(value, bool) else None
            if number is None:
                self.problem(line, f"{path}: '{op}' takes a number")
                return Compare(op, Decimal(0))
            return Compare(op, number)
        if op == "not":
            return NotMatcher(self.parse_matcher(value, node.raw.get(op), line, path))
        self.problem(line, f"{path}: unknown matcher {op!r}{suggest(op, OPERATORS)}")
        return Equals(None)

    def check_glob_classes(self, text: str, line: int, path: str) -> None:
        """Warn on `[private]` in a glob: a class matching one of its letters, almost never what is meant."""
        for match in _WORD_CLASS.finditer(text):
            word = match.group(1)
            if len(word) >= 3 and word.isalpha():
                letters = ", ".join(dict.fromkeys(word.lower()))
                escaped = text.replace(match.group(0), f"[[]{word}]", 1)
                self.warn(line, f"{path}: in the glob {text!r}, {match.group(0)} matches ONE character out of "
                                f"{letters}, not the text {match.group(0)!r}: to match the text write "
                                f"{{contains: {match.group(0)!r}}}, or escape the bracket: {escaped!r}")

    def scalar(self, value: Any, line: int, path: str):
        if isinstance(value, (LMap, LList)):
            self.problem(line, f"{path}: expected a single value here, not a {'list' if isinstance(value, list) else 'mapping'}")
            return None
        return value

    def parse_during(self, value: Any, line: int):
        if not isinstance(value, LMap):
            self.problem(line, "'during' takes a mapping: {days: [mon], from: \"09:00\", to: \"17:00\", timezone: UTC}")
            return TRUE
        for key in value:
            if key not in DURING_KEYS:
                self.problem(value.line_of(key), f"during: unknown key {key!r}{suggest(key, DURING_KEYS)}")
        minutes = []
        for key in ("from", "to"):
            text = value.raw.get(key) if key in value else None
            match = _TIME.match(text or "") if isinstance(text, str) else None
            if not match:
                self.problem(value.line_of(key), f"during: '{key}' must be a time \"HH:MM\" (24-hour, quoted)")
                minutes.append(0)
            else:
                minutes.append(int(match.group(1)) * 60 + int(match.group(2)))
        days = set(range(7))
        if "days" in value:
            listed = value["days"] if isinstance(value["days"], LList) else [value["days"]]
            days = set()
            for d in listed:
                found = _days(d)
                if found is None:
                    self.problem(value.line_of("days"), f"during: {d!r} is not a day or a range of days{_day_hint(d)}: "
                                                        "write mon, tue, wed, thu, fri, sat, sun (or the full name), "
                                                        "a range as mon-fri (fri-mon wraps over the weekend)")
                else:
                    days.update(found)
        tz = value.get("timezone", "UTC")
        try:
            if not isinstance(tz, str) or not tz:
                raise ValueError
            ZoneInfo(tz)
        except Exception:
            self.problem(value.line_of("timezone"), f"during: unknown timezone {tz!r}: use an IANA name such as Europe/Berlin")
            tz = "UTC"
        return During(frozenset(days), minutes[0], minutes[1], tz, line)

def _days(item: Any) -> list[int] | None:
    """The weekdays a `days:` item names: a day (mon, monday) or a range (mon-fri, fri-mon wraps); None if neither."""
    if not isinstance(item, str):
        return None
    text = item.strip().lower()
    if text in DAY_NAMES:
        return [DAY_NAMES[text]]
    first, dash, last = text.partition("-")
    first, last = first.strip(), last.strip()
    if dash and first in DAY_NAMES and last in DAY_NAMES:
        start, end = DAY_NAMES[first], DAY_NAMES[last]
        return [(start + step) % 7 for step in range((end - start) % 7 + 1)]
    return None


def _day_hint(item: Any) -> str:
    """' (did you mean 'mon-fri'?)' for a range written another way, or the closest day name."""
    text = str(item).strip().lower()
    ranged = _RANGE_LIKE.match(text)
    if ranged and ranged.group(1) in DAY_NAMES and ranged.group(2) in DAY_NAMES:
        return f" (did you mean '{ranged.group(1)}-{ranged.group(2)}'?)"
    return suggest(text, DAY_NAMES)


def _matcher_key(matcher: Any) -> tuple:
    """What makes two matchers one: the type and each field, a value with its type (Equals(1) and
    Equals(True) are equal dataclasses, not equal matchers; a bound keeps the digits it was written
    with, which its reason shows); a nested matcher is already interned, so its identity."""
    if isinstance(matcher, AllOf):
        return AllOf, tuple(map(id, matcher.matchers))
    if isinstance(matcher, NotMatcher):
        return NotMatcher, id(matcher.inner)
    if isinstance(matcher, Pattern):
        return _pattern_key(matcher.op, matcher.source)
    if isinstance(matcher, Compare):
        return Compare, matcher.op, str(matcher.bound)
    if isinstance(matcher, Equals):
        return Equals, type(matcher.value), matcher.value
    if isinstance(matcher, In):
        return In, tuple((type(v), v) for v in matcher.values)
    return type(matcher), repr(matcher)  # Contains, Exists


def _pattern_key(op: str, source: str) -> tuple:
    """A glob's or regex's key among the interned matchers (looked up before compiling it again)."""
    return Pattern, op, source


def _as_written(value: Any, raw: str | None) -> Any:
    """A matcher value: numbers keep the digits the author wrote (never through float)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and raw is not None:
        return raw
    if isinstance(value, float):
        return repr(value)
    return value
