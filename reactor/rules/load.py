"""Pure (but for reading files): rule files to a RuleSet, or a RulesError listing every problem.

Every problem reads `file:line: rule "name": what is wrong (did you mean ...?)`.
"""
from __future__ import annotations

import difflib
import gc
import json
import os
import pickle
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from ..errors import RulesError, SecretError
from ..samples import sample, sample_names, set_field
from ..secrets import check_secret
from .model import (DAYS, TRUE, ActionSpec, AllConditions, AllOf, AnyCondition, Compare, During, Equals,
                    Example, Exists, FieldCondition, In, NotCondition, NotMatcher, Pattern, Rule, Secret,
                    Template, number_of)
from .source import LList, LMap, YamlProblem, parse_yaml

RULE_KEYS = ("name", "on", "enabled", "when", "do", "examples", "description")
OPERATORS = ("equals", "in", "glob", "regex", "exists", "gt", "gte", "lt", "lte", "not")
COMBINATORS = ("all", "any", "not", "during")
DURING_KEYS = ("days", "from", "to", "timezone")
EXAMPLE_KEYS = ("event", "with", "expect")
KNOWN_EVENTS = (
    "meeting.started", "meeting.ended", "meeting.participant_joined", "meeting.participant_left",
    "meeting.live_streaming_started", "meeting.live_streaming_stopped", "meeting.created", "meeting.updated",
    "meeting.deleted", "webinar.started", "webinar.ended", "webinar.participant_joined",
    "webinar.participant_left", "webinar.created", "webinar.updated", "webinar.deleted",
    "recording.completed", "meeting.sharing_started", "meeting.sharing_ended",
)
ACTION_ARGS = {
    "livestream.start": {"display_name": str, "active_speaker_name": bool, "layout": str, "close_caption": str},
    "livestream.stop": {},
    "livestream.configure": {"stream_url": str, "stream_key": str, "page_url": str, "resolution": str},
}
REQUIRED_ARGS = {"livestream.configure": ("stream_url", "stream_key", "page_url")}
RESOLUTIONS = ("720p", "1080p")
MAX_PATTERN = 500
COMPACT_ABOVE = 500
_PATH = re.compile(r"^[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*$")
_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def rule_files(path: str | os.PathLike) -> list[Path]:
    """The *.yaml/*.yml files under `path` (or `path` itself), in a stable order."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise RulesError([f"{root}: no such rules file or folder: set REACTOR_RULES or create it"])
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_rules(path, env: Mapping[str, str] | None = None, secret_key: str = "", resolve_secrets: bool = True):
    """Load and validate every rule file under `path`; raise RulesError listing every problem.

    With resolve_secrets (start-up), every ${NAME} must be set and every enc: value must decrypt;
    without (check, explain on a machine without the secrets), only their form is checked."""
    from .match import RuleSet

    env = os.environ if env is None else env
    files = rule_files(path)
    parser = _Parser(env, secret_key, resolve_secrets)
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            parser.problems.append(f"{file}: cannot read: {exc}")
            continue
        parser.parse_file(str(file), text)
    if parser.problems:
        raise RulesError(parser.problems)
    rules = RuleSet(tuple(parser.rules), warnings=tuple(parser.warnings), files=tuple(str(f) for f in files))
    if len(rules.rules) > COMPACT_ABOVE:
        # The rules were allocated between the parser's garbage, which then pins their memory
        # (~50 MB per 10,000 rules); a copy made after the garbage is gone lets it go.
        frozen = pickle.dumps(rules)
        del parser, rules
        gc.collect()
        rules = pickle.loads(frozen)
    return rules


def suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Parser:
    def __init__(self, env: Mapping[str, str], secret_key: str, resolve_secrets: bool = True):
        self.env, self.secret_key, self.resolve_secrets = env, secret_key, resolve_secrets
        self.rules: list[Rule] = []
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.names: dict[str, str] = {}
        self.file, self.rule_name = "", ""

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
        if not isinstance(doc, LMap) or "rules" not in doc:
            self.problem(getattr(doc, "line", 1), "a rules file is a mapping with a 'rules:' list at the top")
            return
        for key in doc:
            if key != "rules":
                self.problem(doc.line_of(key), f"unknown top-level key {key!r}{suggest(key, ['rules'])}")
        rules = doc["rules"]
        if rules is None:
            return
        if not isinstance(rules, LList):
            self.problem(doc.line_of("rules"), "'rules' must be a list of rules (each item starts with '- name:')")
            return
        for index, item in enumerate(rules):
            self.rule_name = ""
            if not isinstance(item, LMap):
                self.problem(rules.line_of(index), "each rule is a mapping with name, on and do")
                continue
            rule = self.parse_rule(item)
            if rule is not None:
                self.rules.append(rule)

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
                    source=here, examples=examples)

    def parse_on(self, item: LMap) -> tuple:
        if "on" not in item:
            self.problem(item.line, "a rule needs 'on:' (an event name such as meeting.started, or a list)")
            return ()
        value, line = item["on"], item.line_of("on")
        names = list(value) if isinstance(value, LList) else [value]
        if not names or not all(isinstance(n, str) and n.strip() for n in names):
            self.problem(line, "'on' must be an event name or a list of event names")
            return ()
        for n in names:
            if n not in KNOWN_EVENTS:
                self.warn(line, f"unknown event {n!r}{suggest(n, KNOWN_EVENTS)}")
        return tuple(dict.fromkeys(names))

    # -- conditions
    def parse_condition(self, node: Any, line: int):
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
                inner = tuple(self.parse_condition(v, value.line_of(i)) for i, v in enumerate(value))
                parts.append(AllConditions(inner, key_line) if key == "all" else AnyCondition(inner, key_line))
            elif key == "not":
                parts.append(NotCondition(self.parse_condition(value, key_line), key_line))
            elif key == "during":
                parts.append(self.parse_during(value, key_line))
            else:
                parts.append(self.parse_field(key, value, node, key_line))
        return parts[0] if len(parts) == 1 else AllConditions(tuple(parts), node.line)

    def parse_field(self, path: str, value: Any, parent: LMap, line: int) -> FieldCondition:
        if not _PATH.match(path):
            self.problem(line, f"{path!r} is not a field path: use dotted names such as topic or participant.email")
        matcher = self.parse_matcher(value, parent.raw.get(path), line, path)
        return FieldCondition(path, matcher, line)

    def parse_matcher(self, value: Any, raw: str | None, line: int, path: str):
        if isinstance(value, LList):
            items = [self.scalar(v, value.line_of(i), path) for i, v in enumerate(value)]
            return In(tuple(_as_written(v, None) for v in items))
        if isinstance(value, LMap):
            if not value:
                self.problem(line, f"{path}: an empty matcher: give a value or operators such as glob")
            return AllOf(tuple(self.parse_operator(op, v, value, path) for op, v in value.items()))
        return Equals(_as_written(self.scalar(value, line, path), raw))

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
            try:
                if op == "glob":
                    import fnmatch
                    compiled = re.compile(fnmatch.translate(text), re.IGNORECASE | re.DOTALL)
                else:
                    compiled = re.compile(text)
            except re.error as exc:
                self.problem(line, f"{path}: invalid regex {text!r}: {exc}")
                return Equals(None)
            return Pattern(op, text, compiled)
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
                key = str(d).lower()[:3] if isinstance(d, str) else None
                if key not in DAYS:
                    self.problem(value.line_of("days"), f"during: {d!r} is not a day{suggest(str(d).lower(), DAYS)}: use mon..sun")
                else:
                    days.add(DAYS.index(key))
        tz = value.get("timezone", "UTC")
        try:
            if not isinstance(tz, str) or not tz:
                raise ValueError
            ZoneInfo(tz)
        except Exception:
            self.problem(value.line_of("timezone"), f"during: unknown timezone {tz!r}: use an IANA name such as Europe/Berlin")
            tz = "UTC"
        return During(frozenset(days), minutes[0], minutes[1], tz, line)

    # -- actions
    def parse_actions(self, item: LMap) -> tuple:
        if "do" not in item:
            self.problem(item.line, "a rule needs 'do:' (a list of actions such as livestream.start)")
            return ()
        steps, line = item["do"], item.line_of("do")
        if isinstance(steps, (str, LMap)):
            steps = LList([steps])
            steps.line, steps.item_lines = line, [line]
        if not isinstance(steps, LList) or not steps:
            self.problem(line, "'do' must list at least one action (livestream.configure, livestream.start, livestream.stop)")
            return ()
        actions = []
        for index, step in enumerate(steps):
            step_line = steps.line_of(index)
            if isinstance(step, str):
                kind, args, args_node = step, None, None
            elif isinstance(step, LMap) and len(step) == 1:
                kind, args = next(iter(step.items()))
                args_node = args
            else:
                self.problem(step_line, "an action is a name (livestream.stop) or a one-key mapping (livestream.start: {...})")
                continue
            if kind not in ACTION_ARGS:
                self.problem(step_line, f"unknown action {kind!r}{suggest(kind, ACTION_ARGS)}")
                continue
            actions.append(self.parse_action_args(kind, args_node, step_line))
        return tuple(actions)

    def parse_action_args(self, kind: str, node: Any, line: int) -> ActionSpec:
        allowed = ACTION_ARGS[kind]
        if node is None:
            node = LMap()
            node.line, node.key_lines, node.raw = line, {}, {}
        if not isinstance(node, LMap):
            self.problem(line, f"{kind}: its settings must be a mapping")
            return ActionSpec(kind, (), line)
        args = []
        for key, value in node.items():
            key_line = node.line_of(key)
            if key not in allowed:
                hint = suggest(key, allowed) or (f" ({kind} takes no settings)" if not allowed else
                                                 f" (it takes {', '.join(allowed)})")
                self.problem(key_line, f"{kind}: unknown setting {key!r}{hint}")
                continue
            if allowed[key] is bool:
                if not isinstance(value, bool):
                    self.problem(key_line, f"{kind}: '{key}' must be true or false")
                    continue
                args.append((key, value))
                continue
            text = value if isinstance(value, str) else node.raw.get(key)
            if not isinstance(text, str) or value is None or isinstance(value, bool):
                self.problem(key_line, f"{kind}: '{key}' must be a string")
                continue
            if key == "resolution" and text not in RESOLUTIONS:
                self.problem(key_line, f"{kind}: resolution must be 720p or 1080p{suggest(text, RESOLUTIONS)}")
                continue
            args.append((key, self.parse_string(text, key_line, f"{kind}: {key}")))
        for key in REQUIRED_ARGS.get(kind, ()):
            if key not in node:
                self.problem(line, f"{kind}: '{key}' is required")
        return ActionSpec(kind, tuple(args), line)

    def parse_string(self, text: str, line: int, where: str):
        """A literal, a Template with {{ field }} parts, or a Secret (${NAME} or enc:)."""
        is_secret = "${" in text or text.startswith("enc:")
        fields = _TEMPLATE.findall(text)
        if is_secret and fields:
            self.problem(line, f"{where}: a value uses ${{NAME}}/enc: or {{{{ field }}}}, not both")
            return text
        if is_secret:
            try:
                check_secret(text, self.env, self.secret_key, resolve=self.resolve_secrets)
            except SecretError as exc:
                self.problem(line, f"{where}: {exc}")
            return Secret(text)
        if not fields:
            if "{{" in text:
                self.problem(line, f"{where}: unclosed or empty '{{{{ }}}}' in {text!r}")
            return text
        parts: list = []
        position = 0
        for match in _TEMPLATE.finditer(text):
            if match.start() > position:
                parts.append(text[position:match.start()])
            path = match.group(1)
            if not _PATH.match(path):
                self.problem(line, f"{where}: {{{{ {path} }}}} is not a field path such as topic")
            parts.append(("field", path))
            position = match.end()
        if position < len(text):
            parts.append(text[position:])
        return Template(tuple(parts))

    # -- examples
    def parse_examples(self, item: LMap) -> tuple:
        node = item.get("examples")
        if node is None:
            return ()
        if not isinstance(node, LList):
            self.problem(item.line_of("examples"), "'examples' is a list of {event: ..., expect: match | no match}")
            return ()
        examples = []
        for index, ex in enumerate(node):
            line = node.line_of(index)
            if not isinstance(ex, LMap):
                self.problem(line, "an example is a mapping {event: ..., expect: match | no match}")
                continue
            for key in ex:
                if key not in EXAMPLE_KEYS:
                    self.problem(ex.line_of(key), f"example: unknown key {key!r}{suggest(key, EXAMPLE_KEYS)}")
            expect = ex.get("expect")
            if expect not in ("match", "no match"):
                self.problem(ex.line_of("expect"), "example: 'expect' must be 'match' or 'no match'")
                continue
            body = self.example_body(ex, line)
            if body is not None:
                examples.append(Example(body, expect == "match", line))
        return tuple(examples)

    def example_body(self, ex: LMap, line: int) -> dict | None:
        source = ex.get("event")
        if isinstance(source, LMap):
            body = _plain(source)
        elif isinstance(source, str) and source.endswith(".json"):
            file = Path(self.file).parent / source
            try:
                body = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                self.problem(ex.line_of("event"), f"example: cannot read {file}: {exc}")
                return None
        elif isinstance(source, str):
            try:
                body = sample(source)
            except KeyError:
                self.problem(ex.line_of("event"), f"example: no built-in sample {source!r}{suggest(source, sample_names())}")
                return None
        else:
            self.problem(line, "example: 'event' is a sample name, a .json file or an event mapping")
            return None
        overrides = ex.get("with") or {}
        if not isinstance(overrides, LMap) and overrides != {}:
            self.problem(ex.line_of("with"), "example: 'with' maps field paths to values")
            return None
        for path, value in overrides.items():
            set_field(body, path, _plain(value))
        return body


def _as_written(value: Any, raw: str | None) -> Any:
    """A matcher value: numbers keep the digits the author wrote (never through float)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and raw is not None:
        return raw
    if isinstance(value, float):
        return repr(value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
