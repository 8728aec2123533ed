"""Pure: a loaded set of rules, indexed so an event meets only the rules that could match it."""
from __future__ import annotations

import hashlib
import json
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


def encode_verdict(rule: str, matched: bool, why: str) -> str:
    """A verdict as the history stores it: a JSON object {"rule", "matched", "why"}."""
    return json.dumps({"rule": rule, "matched": matched, "why": why})


def encode_verdicts(encoded: list[str]) -> str:
    """encode_verdict's objects as the JSON array the history stores."""
    return "[" + ", ".join(encoded) + "]"


@dataclass(frozen=True)
class RuleSet:
    rules: tuple
    warnings: tuple = ()
    files: tuple = ()
    version: str = field(init=False)
    _by_event: dict = field(init=False, repr=False, compare=False)
    _groups: dict = field(init=False, repr=False, compare=False)  # id of an index list -> its _group(), made when first met

    def __post_init__(self):
        digest = hashlib.sha256(repr([(r.name, r.source, r.events, r.condition, r.actions, r.enabled, r.accounts)
                                      for r in self.rules]).encode()).hexdigest()[:12]
        object.__setattr__(self, "version", digest)
        object.__setattr__(self, "_by_event", _build_index(self.rules))
        object.__setattr__(self, "_groups", {})

    def candidates(self, event: Event) -> list[tuple[int, Rule, Any]]:
        """Rules on this event that could match it: the unindexed ones and the index hits, in file order,
        each as (position, rule, the part of its condition left to test: see _build_index)."""
        found = [entry for entries in self._lists(event) for entry in entries]
        found.sort(key=_position)
        return found

    def _lists(self, event: Event) -> list[list]:
        """The index's lists of candidates for this event: the rules to scan, then its buckets' and globs'."""
        entry = self._by_event.get(event.name)
        if entry is None:
            return []
        scan, index, globs = entry
        lists = [scan]
        for path, buckets in index.items():
            value = event.field(path)
            if value is MISSING or isinstance(value, (dict, list)):
                continue
            bucket = buckets.get(eq_key(value))
            if bucket:
                lists.append(bucket)
        for path, (by_prefix, lengths, members) in globs.items():
            text = pattern_text(event.field(path))
            if text is None:
                continue
            if not text.isascii():  # case folding beyond ASCII: test every glob on this field
                lists.append(members)
                continue
            folded = text.lower()
            for length in lengths:  # only globs whose literal prefix the value starts with
                if length > len(folded):
                    break
                bucket = by_prefix.get(folded[:length])
                if bucket:
                    lists.append(bucket)
        return lists

    def evaluate(self, event: Event, account: str | None = None) -> list[Verdict]:
        """A verdict for every enabled candidate rule of this event, which came from `account` (a rule
        with `account:` applies to the events of those accounts only; None: every rule applies)."""
        return [Verdict(rule, rule.account_failure(account) or condition.failure(event))
                for _, rule, condition in self.candidates(event)]

    def encoded(self, event: Event, account: str | None = None, matched_why: str = "") -> tuple[list[Rule], list[str]]:
        """evaluate() as the history stores it: the rules that matched, and every candidate's verdict as
        encode_verdict's text, in file order (`matched_why`: the why of a matched rule's verdict).

        The same verdicts, made faster: a 10,000-rule delivery meets tens of candidates, most written from
        a few templates (20 rules on one host, each with the same duration bound). Candidates with the same
        checks are tested once, as a group; a miss is each rule's verdict text, encoded once, around the
        value seen, encoded once per event: no Failure, Verdict or dict is made for it."""
        found: list[tuple[int, str]] = []
        matched: list[tuple[int, Rule]] = []
        seen_json: dict[str, str] = {}  # path -> the value seen, as a miss's verdict shows it, JSON-escaped
        compiled = self._groups
        for entries in self._lists(event):
            groups = compiled.get(id(entries))  # the lists live as long as the rule set: their ids are theirs
            if groups is None:
                groups = compiled[id(entries)] = _group(entries)
            for checks, members in groups:
                if checks is None:  # tested one by one
                    for position, rule, condition in members:
                        failure = rule.account_failure(account) or condition.failure(event)
                        if failure is None:
                            matched.append((position, rule))
                        found.append((position, encode_verdict(rule.name, failure is None,
                                                               matched_why if failure is None else str(failure))))
                    continue
                for n, path, test, part in checks:
                    if test is None:  # not a field check
                        failure = part.failure(event)
                        if failure is None:
                            continue
                        why = str(failure)
                        for position, rule, _ in members:
                            found.append((position, encode_verdict(rule.name, False, why)))
                        break
                    if test(event.field(path)):  # (a group is tested once: no need of the event's cache)
                        continue
                    seen = seen_json.get(path)
                    if seen is None:
                        seen = seen_json[path] = json.dumps(part.shown(event))[1:-1]
                    for position, _, texts in members:
                        found.append((position, texts[n][0] + seen + texts[n][1]))
                    break
                else:
                    for position, rule, _ in members:
                        matched.append((position, rule))
                        found.append((position, encode_verdict(rule.name, True, matched_why)))
        found.sort()  # by position: a rule is in one list
        matched.sort(key=_position)
        return [rule for _, rule in matched], [text for _, text in found]

    def matching(self, event: Event, account: str | None = None) -> list[Rule]:
        return [v.rule for v in self.evaluate(event, account) if v.matched]

    def explain(self, event: Event, account: str | None = None) -> list[Verdict]:
        """A verdict for every rule, indexed or not, with the first failing check of each miss."""
        return [Verdict(rule, rule.failure(event, account)) for rule in self.rules]


_SEEN = "\x00seen\x00"  # where the value seen goes in a miss's verdict text (see _texts)
_SEEN_JSON = json.dumps(_SEEN)[1:-1]


def _position(entry: tuple) -> int:
    return entry[0]


def _group(entries: list) -> tuple:
    """An index list's candidates as encoded() tests them: those whose conditions are the same checks
    (all of them, in the same order: a field check the same matcher on the same path, any other check the
    same object, such as a file's `unless`), and so fail on the same first check, as one group: (its
    checks as (n, path, the matcher's test, the check), or (n, None, None, the check) for one not on a
    field; its members as (position, rule, _texts())); the others, each tested on its own, as (None, their
    entries)."""
    groups: dict[tuple, tuple] = {}
    alone = []
    for position, rule, condition in entries:
        parts = _parts(condition)
        texts = _texts(rule, parts) if not rule.accounts else None
        if texts is None:
            alone.append((position, rule, condition))
        else:
            key = tuple(part.check() if type(part) is FieldCondition else id(part) for part in parts)
            groups.setdefault(key, (parts, []))[1].append((position, rule, texts))
    out = [(tuple((n, part.path, _test(part.matcher), part) if type(part) is FieldCondition else (n, None, None, part)
                  for n, part in enumerate(parts)), tuple(members)) for parts, members in groups.values()]
    if alone:
        out.append((None, tuple(alone)))
    return tuple(out)


def _test(matcher: Any):
    """A matcher's test; a lone operator's own (`{glob: ...}` is all of one operator: a call less)."""
    return (matcher.matchers[0] if type(matcher) is AllOf and len(matcher.matchers) == 1 else matcher).test


def _parts(condition: Any) -> tuple:
    """The checks a condition needs all of, in order (`all` within `all` flattened: the first to fail is
    the same)."""
    if type(condition) is not AllConditions:
        return (condition,)
    return tuple(part for inner in condition.conditions for part in _parts(inner))


def _texts(rule: Rule, parts: tuple) -> tuple | None:
    """For each field check of a condition, the JSON text of the rule's verdict when that check is the
    first to fail, cut where the value seen goes (JSON escapes character by character, so the text around
    it is the same whatever the value), as (before, after); None for another check. None: no check."""
    if not parts:
        return None
    texts = []
    for part in parts:
        if type(part) is not FieldCondition:
            texts.append(None)
            continue
        pieces = encode_verdict(rule.name, False, str(Failure(part.should, part.path, _SEEN, part.line))).split(_SEEN_JSON)
        if len(pieces) != 2:  # the rule's own text holds the marker: tested on its own
            return None
        texts.append(tuple(pieces))
    return tuple(texts)


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
