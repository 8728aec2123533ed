"""Pure: a loaded set of rules, indexed so an event meets only the rules that could match it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..events import MISSING, Event
from .model import AllConditions, AllOf, Equals, Failure, FieldCondition, In, Pattern, Rule, eq_key, pattern_text

# Fields an equality condition on which puts a rule in the index, most selective first.
INDEXED_FIELDS = ("id", "uuid", "host_id", "host_email", "payload.account_id", "participant.email",
                  "participant.user_id", "topic")


class Verdict(NamedTuple):  # a named tuple: one per candidate rule of every delivery (see Failure)
    rule: Rule
    failure: Failure | None  # None: the rule matched

    @property
    def matched(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class RuleSet:
    rules: tuple
    warnings: tuple = ()
    files: tuple = ()
    version: str = field(init=False)
    _by_event: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        digest = hashlib.sha256(repr([(r.name, r.source, r.events, r.condition, r.actions, r.enabled, r.accounts)
                                      for r in self.rules]).encode()).hexdigest()[:12]
        object.__setattr__(self, "version", digest)
        object.__setattr__(self, "_by_event", _build_index(self.rules))

    def candidates(self, event: Event) -> list[tuple[int, Rule, Any]]:
        """Rules on this event that could match it: the unindexed ones and the index hits, in file order,
        each as (position, rule, the part of its condition left to test: see _build_index)."""
        entry = self._by_event.get(event.name)
        if entry is None:
            return []
        scan, index, globs = entry
        found = list(scan)
        for path, buckets in index.items():
            value = event.field(path)
            if value is MISSING or isinstance(value, (dict, list)):
                continue
            found.extend(buckets.get(eq_key(value), ()))
        for path, (by_prefix, lengths, members) in globs.items():
            text = pattern_text(event.field(path))
            if text is None:
                continue
            if not text.isascii():  # case folding beyond ASCII: test every glob on this field
                found.extend(members)
                continue
            folded = text.lower()
            for length in lengths:  # only globs whose literal prefix the value starts with
                if length > len(folded):
                    break
                found.extend(by_prefix.get(folded[:length], ()))
        found.sort(key=lambda pair: pair[0])
        return found

    def evaluate(self, event: Event, account: str | None = None) -> list[Verdict]:
        """A verdict for every enabled candidate rule of this event, which came from `account` (a rule
        with `account:` applies to the events of those accounts only; None: every rule applies)."""
        return [Verdict(rule, rule.account_failure(account) or condition.failure(event))
                for _, rule, condition in self.candidates(event)]

    def matching(self, event: Event, account: str | None = None) -> list[Rule]:
        return [v.rule for v in self.evaluate(event, account) if v.matched]

    def explain(self, event: Event, account: str | None = None) -> list[Verdict]:
        """A verdict for every rule, indexed or not, with the first failing check of each miss."""
        return [Verdict(rule, rule.failure(event, account)) for rule in self.rules]


def _build_index(rules: tuple) -> dict:
    """event name -> (rules to scan, {path: {equality key: rules}}, {path: (rules by glob prefix, prefix
    lengths, all those rules)}), each rule as (position, rule, condition to test). A rule found in an
    equality bucket is tested without that field's check when the bucket says all of it (a plain value
    or `in`): it holds, so the first failing check, and so the verdict, is the same."""
    by_event: dict[str, tuple[list, dict, dict]] = {}
    for position, rule in enumerate(rules):
        if not rule.enabled:
            continue
        key = _index_key(rule.condition)
        glob = None if key else _glob_key(rule.condition)
        for name in rule.events:
            scan, index, globs = by_event.setdefault(name, ([], {}, {}))
            if key is not None:
                path, keys, rest = key
                buckets = index.setdefault(path, {})
                for k in keys:
                    buckets.setdefault(k, []).append((position, rule, rest))
            elif glob is not None:
                globs.setdefault(glob[0], []).append((position, rule, glob[1]))
            else:
                scan.append((position, rule, rule.condition))
    for scan, index, globs in by_event.values():
        for path, members in list(globs.items()):
            by_prefix: dict[str, list] = {}
            for position, rule, pattern in members:
                by_prefix.setdefault(_literal_prefix(pattern.source), []).append((position, rule, rule.condition))
            globs[path] = (by_prefix, sorted({len(p) for p in by_prefix}),
                           [(pos, rule, rule.condition) for pos, rule, _ in members])
    return by_event


def _literal_prefix(glob: str) -> str:
    """The case-folded ASCII text every value matching `glob` starts with ('Town Hall*' -> 'town hall')."""
    prefix = []
    for char in glob:
        if char in "*?[" or not char.isascii():
            break
        prefix.append(char.lower())
    return "".join(prefix)


def _glob_key(condition: Any) -> tuple[str, Pattern] | None:
    """(path, glob) when the condition requires that field to match a glob."""
    parts = condition.conditions if isinstance(condition, AllConditions) else (condition,)
    for part in parts:
        if isinstance(part, FieldCondition):
            matchers = part.matcher.matchers if isinstance(part.matcher, AllOf) else (part.matcher,)
            for matcher in matchers:
                if isinstance(matcher, Pattern) and matcher.op == "glob":
                    return part.path, matcher
    return None


def _index_key(condition: Any) -> tuple[str, frozenset, Any] | None:
    """(path, equality keys, the condition left to test on a bucket hit) when the condition requires that
    field to equal one of a few values."""
    parts = condition.conditions if isinstance(condition, AllConditions) else (condition,)
    best = None
    for part in parts:
        if not isinstance(part, FieldCondition) or part.path not in INDEXED_FIELDS:
            continue
        keys = _equality_keys(part.matcher)
        if keys is not None and (best is None or INDEXED_FIELDS.index(part.path) < INDEXED_FIELDS.index(best[0].path)):
            best = (part, keys)
    if best is None:
        return None
    part, keys = best
    if not isinstance(part.matcher, (Equals, In)):  # the bucket says only part of the check: test all of it
        return part.path, keys, condition
    rest = tuple(p for p in parts if p is not part)
    return part.path, keys, rest[0] if len(rest) == 1 else AllConditions(rest, condition.line)


def _equality_keys(matcher: Any) -> frozenset | None:
    if isinstance(matcher, Equals):
        return frozenset([matcher.key])
    if isinstance(matcher, In):
        return matcher.keys
    if isinstance(matcher, AllOf):
        for inner in matcher.matchers:
            keys = _equality_keys(inner)
            if keys is not None:
                return keys
    return None
