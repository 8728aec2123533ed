"""Pure: a loaded set of rules, indexed so an event meets only the rules that could match it."""
from __future__ import annotations

import hashlib
import json
import re
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
    _plans: dict = field(init=False, repr=False, compare=False)  # id of an index list -> its _Plan, made when first met

    def __post_init__(self):
        digest = hashlib.sha256(repr([(r.name, r.source, r.events, r.condition, r.actions, r.enabled, r.accounts)
                                      for r in self.rules]).encode()).hexdigest()[:12]
        object.__setattr__(self, "version", digest)
        object.__setattr__(self, "_by_event", _build_index(self.rules))
        object.__setattr__(self, "_plans", {})

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
        lists = [scan] if scan else []
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
        encode_verdict's text, in file order (`matched_why`: the why of a matched rule's verdict). An item
        of the texts may hold several verdicts, joined as encode_verdicts joins them: encode_verdicts of the
        texts is the same JSON.

        The same verdicts, made faster: a 10,000-rule delivery meets tens of candidates, most written from
        a few templates (20 rules on one host, each with the same duration bound). Candidates with the same
        checks are tested once, as a group (see _Plan); a miss is its rule's verdict text, encoded once,
        around the value seen, encoded once per event. An index list's verdicts for one outcome of its
        groups are made once too, as text pieces between the values seen (_Filled): a list then costs
        one join, not a string, a tuple and a sort place per candidate."""
        parts: list[tuple] = []  # (first position, last position, text, _Filled or None, its values seen)
        matched: list[tuple[int, Rule]] = []
        seen_json: dict[str, str] = {}  # path -> the value seen, as a miss's verdict shows it, JSON-escaped
        plans = self._plans
        for entries in self._lists(event):
            plan = plans.get(id(entries))  # the lists live as long as the rule set: their ids are theirs
            if plan is None:
                plan = plans[id(entries)] = _Plan.of(entries)
            outcome = plan.outcome(event)
            filled = plan.filled(outcome)
            if filled is None or matched_why and filled.matched:  # one verdict at a time
                for position, text in plan.verdicts(event, outcome, account, matched_why, seen_json, matched):
                    parts.append((position, position, text, None, None))
                continue
            seen = tuple([_seen(part, event, seen_json) for part in filled.cuts])
            matched += filled.matched
            parts.append((filled.first, filled.last, filled.text(seen), filled, seen))
        parts.sort(key=_position)
        matched.sort(key=_position)
        rules = [rule for _, rule in matched]
        for k in range(1, len(parts)):
            if parts[k - 1][1] > parts[k][0]:  # a list's candidates fall between another's: verdict by verdict
                found = [(position, text) for first, _, text, filled, seen in parts
                         for position, text in ([(first, text)] if filled is None else filled.verdicts(seen))]
                found.sort(key=_position)
                return rules, [text for _, text in found]
        return rules, [part[2] for part in parts]

    def matching(self, event: Event, account: str | None = None) -> list[Rule]:
        return [v.rule for v in self.evaluate(event, account) if v.matched]

    def explain(self, event: Event, account: str | None = None) -> list[Verdict]:
        """A verdict for every rule, indexed or not, with the first failing check of each miss."""
        return [Verdict(rule, rule.failure(event, account)) for rule in self.rules]


_SEEN = "\x00seen\x00"  # where the value seen goes in a miss's verdict text (see _texts)
_SEEN_JSON = json.dumps(_SEEN)[1:-1]


def _position(entry: tuple) -> int:
    return entry[0]


def _seen(part: FieldCondition, event: Event, seen_json: dict) -> str:
    """The value at part's path as a miss's verdict shows it, JSON-escaped (worked out once per event)."""
    seen = seen_json.get(part.path)
    if seen is None:
        seen = seen_json[part.path] = json.dumps(part.shown(event))[1:-1]
    return seen


TEMPLATES = 32  # outcomes of an index list's groups whose verdicts are kept as pieces (_Plan.templates); others
                # are made one at a time


@dataclass(frozen=True)
class _Plan:
    """An index list's candidates as encoded() tests them. Those whose conditions are the same checks (all
    of them, in the same order: a field check the same matcher on the same path, any other check the same
    object, such as a file's `unless`), and so fail on the same first check, form a group, tested once:
    `groups`, each as its checks, (n, path, the matcher's test, the check) or (n, None, None, the check)
    for one not on a field; many groups that are one glob on the same path (rules on topics sharing a
    prefix) are tested together, as one regular expression (_Globs: `families`). `members`: the grouped
    candidates in file order, as (position, rule, its group's number, _texts(), its matched verdict).
    `alone`: the others (a rule for some accounts only, or whose text holds the marker), each tested on
    its own. `templates`: an outcome of the groups -> the list's verdicts for it (_Filled)."""

    groups: tuple
    members: tuple
    alone: tuple
    templates: dict
    families: tuple = ()  # (path, _Globs) for the groups that are one glob on the same path (FAMILY or more)
    base: tuple = ()      # an outcome before testing: 0 for a family's groups (their one check fails), else -1
    tested: tuple = ()    # the other groups, as (number, checks)

    @classmethod
    def of(cls, entries: list) -> "_Plan":
        keyed: dict[tuple, int] = {}
        groups, members, alone = [], [], []
        for position, rule, condition in entries:
            parts = _parts(condition)
            texts = _texts(rule, parts) if not rule.accounts else None
            if texts is None:
                alone.append((position, rule, condition))
                continue
            key = tuple(part.check() if type(part) is FieldCondition else id(part) for part in parts)
            if key not in keyed:
                keyed[key] = len(groups)
                groups.append(tuple((n, part.path, _test(part.matcher), part) if type(part) is FieldCondition
                                    else (n, None, None, part) for n, part in enumerate(parts)))
            members.append((position, rule, keyed[key], texts, encode_verdict(rule.name, True, "")))
        by_path: dict[str, list[tuple[int, Pattern]]] = {}  # groups that are one glob on a path, by path
        for number, checks in enumerate(groups):
            if len(checks) == 1 and (glob := _lone_glob(checks[0][3])) is not None:
                by_path.setdefault(checks[0][1], []).append((number, glob))
        families = tuple((path, _Globs(*zip(*found))) for path, found in by_path.items() if len(found) >= FAMILY)
        in_family = {n for _, globs in families for n in globs.groups}
        base = tuple(0 if n in in_family else -1 for n in range(len(groups)))
        tested = tuple((n, checks) for n, checks in enumerate(groups) if n not in in_family)
        return cls(tuple(groups), tuple(members), tuple(alone), {}, families, base, tested)

    def outcome(self, event: Event) -> list:
        """For each group: the number of its first failing field check, -1 when all passed, or the text of
        why its first failing check not on a field failed (such a why is the event's own)."""
        out = list(self.base)
        for path, globs in self.families:
            for number in globs.matching(event.field(path)):
                out[number] = -1
        for number, checks in self.tested:
            for n, path, test, part in checks:
                if test is None:  # not a field check
                    failure = part.failure(event)
                    if failure is None:
                        continue
                    out[number] = str(failure)
                    break
                if not test(event.field(path)):  # (a group is tested once: no need of the event's cache)
                    out[number] = n
                    break
        return out

    def filled(self, outcome: list) -> "_Filled | None":
        """The list's verdicts for this outcome of its groups; None: they are made one at a time (a rule
        is tested on its own, a check not on a field failed, or TEMPLATES other outcomes are kept)."""
        if self.alone:
            return None
        key = tuple(outcome)
        filled = self.templates.get(key)
        if filled is None and len(self.templates) < TEMPLATES and not any(type(n) is str for n in key):
            filled = self.templates[key] = _Filled.of(self.members, self.groups, key)
        return filled

    def verdicts(self, event: Event, outcome: list, account: str | None, matched_why: str, seen_json: dict,
                 matched: list) -> list[tuple[int, str]]:
        """Each candidate's verdict as (position, text), one at a time, for this event and the outcome of
        its groups; adds the matched to `matched`."""
        found = []
        for position, rule, condition in self.alone:
            failure = rule.account_failure(account) or condition.failure(event)
            if failure is None:
                matched.append((position, rule))
            found.append((position, encode_verdict(rule.name, failure is None,
                                                   matched_why if failure is None else str(failure))))
        for position, rule, group, texts, _ in self.members:
            n = outcome[group]
            if type(n) is str:
                found.append((position, encode_verdict(rule.name, False, n)))
            elif n < 0:
                matched.append((position, rule))
                found.append((position, encode_verdict(rule.name, True, matched_why)))
            else:
                part = self.groups[group][n][3]
                found.append((position, texts[n][0] + _seen(part, event, seen_json) + texts[n][1]))
        return found


FAMILY = 4    # globs on one path in an index list, at least, tested as one regular expression
SUFFIXES = 8  # expressions a _Globs keeps: for the globs after one that matched (then, the rest one by one)


def _lone_glob(part: Any) -> Pattern | None:
    """The glob of a field check that is one glob, else None."""
    if type(part) is not FieldCondition:
        return None
    matcher = _lone(part.matcher)
    return matcher if type(matcher) is Pattern and matcher.op == "glob" else None


class _Globs:
    """Globs tested together: one regular expression, each glob's own (as Pattern compiles it) a branch,
    which tells the first glob that matches; the globs after it are tested again from there."""

    def __init__(self, groups: tuple, globs: tuple):
        self.groups, self.globs = groups, globs
        self._from: dict[int, Any] = {}  # k -> the expression of globs[k:], made when first needed

    def matching(self, seen: Any) -> list[int]:
        """The numbers of the groups whose glob matches `seen` (as Pattern.test decides)."""
        text = pattern_text(seen)
        if text is None:
            return []
        found, start = [], 0
        while start < len(self.globs):
            expression = self._from.get(start)
            if expression is None:
                if len(self._from) >= SUFFIXES:  # many globs match the same values: test the rest one by one
                    return found + [n for n, glob in zip(self.groups[start:], self.globs[start:]) if glob.test(text)]
                expression = self._from[start] = re.compile(
                    "|".join(f"({glob.compiled.pattern})" for glob in self.globs[start:]), re.IGNORECASE | re.DOTALL)
            match = expression.match(text)
            if match is None:
                break
            start += match.lastindex
            found.append(self.groups[start - 1])
        return found


class _Filled(NamedTuple):
    """An index list's verdicts for one outcome of its groups, as encode_verdicts joins them, cut where a
    value seen goes: pieces[0] + seen[slots[0]] + pieces[1] + ..., seen[k] being the value at cuts[k]'s
    path (a list's misses mostly fail on one field: then one str.join)."""

    pieces: tuple
    cuts: tuple            # a failing field check for each path whose value goes in a cut
    slots: tuple           # for each cut in order, the number in cuts of its path
    first: int             # the first and last candidates' positions
    last: int
    matched: tuple         # (position, rule) of the rules that matched
    each: tuple            # per candidate: (position, before, its cut's number in cuts or -1 for none, after)

    @classmethod
    def of(cls, members: tuple, groups: tuple, outcome: tuple) -> "_Filled":
        each, cuts, paths, matched = [], [], {}, []
        for position, rule, group, texts, matched_text in members:
            n = outcome[group]
            if n < 0:
                matched.append((position, rule))
                each.append((position, matched_text, -1, ""))
                continue
            part = groups[group][n][3]
            if part.path not in paths:
                paths[part.path] = len(cuts)
                cuts.append(part)
            each.append((position, texts[n][0], paths[part.path], texts[n][1]))
        pieces, text = [], ""
        for k, (_, before, cut, after) in enumerate(each):
            text += (", " if k else "") + before
            if cut >= 0:
                pieces.append(text)
                text = ""
            text += after
        pieces.append(text)
        slots = tuple(cut for _, _, cut, _ in each if cut >= 0)
        return cls(tuple(pieces), tuple(cuts), slots, each[0][0], each[-1][0], tuple(matched), tuple(each))

    def text(self, seen: tuple) -> str:
        """The verdicts' text; `seen`: the value at each of cuts' paths, JSON-escaped."""
        if len(seen) == 1:
            return seen[0].join(self.pieces)
        if not seen:
            return self.pieces[0]
        return "".join(piece for pair in zip(self.pieces, [seen[k] for k in self.slots] + [""]) for piece in pair)

    def verdicts(self, seen: tuple) -> list[tuple[int, str]]:
        """Each candidate's verdict as (position, text)."""
        return [(position, before + seen[cut] + after if cut >= 0 else before) for position, before, cut, after in self.each]


def _lone(matcher: Any) -> Any:
    """A matcher, or its one operator when it is all of one (`{glob: ...}`)."""
    return matcher.matchers[0] if type(matcher) is AllOf and len(matcher.matchers) == 1 else matcher


def _test(matcher: Any):
    """A matcher's test; a lone operator's own (a call less)."""
    return _lone(matcher).test


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
