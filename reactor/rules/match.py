"""Pure: a loaded set of rules, indexed so an event meets only the rules that could match it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..events import MISSING, Event
from .model import AllConditions, AllOf, Equals, Failure, FieldCondition, In, Rule, eq_key

# Fields an equality condition on which puts a rule in the index, most selective first.
INDEXED_FIELDS = ("id", "uuid", "host_id", "host_email", "payload.account_id", "participant.email",
                  "participant.user_id", "topic")


@dataclass(frozen=True)
class Verdict:
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
        digest = hashlib.sha256(repr([(r.name, r.source, r.events, r.condition, r.actions, r.enabled)
                                      for r in self.rules]).encode()).hexdigest()[:12]
        object.__setattr__(self, "version", digest)
        object.__setattr__(self, "_by_event", _build_index(self.rules))

    def candidates(self, event: Event) -> list[tuple[int, Rule]]:
        """Rules on this event that could match it: the unindexed ones and the index hits, in file order."""
        entry = self._by_event.get(event.name)
        if entry is None:
            return []
        scan, index = entry
        found = list(scan)
        for path, buckets in index.items():
            value = event.field(path)
            if value is MISSING or isinstance(value, (dict, list)):
                continue
            found.extend(buckets.get(eq_key(value), ()))
        found.sort(key=lambda pair: pair[0])
        return found

    def evaluate(self, event: Event) -> list[Verdict]:
        """A verdict for every enabled candidate rule of this event."""
        return [Verdict(rule, rule.condition.failure(event)) for _, rule in self.candidates(event)]

    def matching(self, event: Event) -> list[Rule]:
        return [v.rule for v in self.evaluate(event) if v.matched]

    def explain(self, event: Event) -> list[Verdict]:
        """A verdict for every rule, indexed or not, with the first failing check of each miss."""
        return [Verdict(rule, rule.failure(event)) for rule in self.rules]


def _build_index(rules: tuple) -> dict:
    by_event: dict[str, tuple[list, dict]] = {}
    for position, rule in enumerate(rules):
        if not rule.enabled:
            continue
        key = _index_key(rule.condition)
        for name in rule.events:
            scan, index = by_event.setdefault(name, ([], {}))
            if key is None:
                scan.append((position, rule))
            else:
                path, keys = key
                buckets = index.setdefault(path, {})
                for k in keys:
                    buckets.setdefault(k, []).append((position, rule))
    return by_event


def _index_key(condition: Any) -> tuple[str, frozenset] | None:
    """(path, equality keys) when the condition requires that field to equal one of a few values."""
    parts = condition.conditions if isinstance(condition, AllConditions) else (condition,)
    best = None
    for part in parts:
        if not isinstance(part, FieldCondition) or part.path not in INDEXED_FIELDS:
            continue
        keys = _equality_keys(part.matcher)
        if keys is not None and (best is None or INDEXED_FIELDS.index(part.path) < INDEXED_FIELDS.index(best[0])):
            best = (part.path, keys)
    return best


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
