"""Pure: the rule language as immutable values. Testing a condition never raises.

A condition answers `failure(event)`: None when it holds, else a Failure saying which check
failed, on which field path, with which value seen. That is both the evaluator and `explain`.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from ..events import MISSING, Event
from ..redact import REDACTED, masked_ref, redact_at

FIELD_PATH = re.compile(r"^[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*$")  # topic, participant.email, payload.account_id
REGEX_INPUT_LIMIT = 1000  # characters of a field a regex or glob looks at; bounds any pattern's cost
_NUMERIC = re.compile(r"^-?[0-9]{1,40}(?:\.[0-9]{1,40})?$")


CACHED_TEXT = 200  # characters: a field value this short has its number and equality key kept (below)


def number_of(value: Any) -> Decimal | None:
    """The decimal a value stands for (int, float or numeric string), never through float parsing of text."""
    return _number_of(value) if _cacheable(value) else _number_of.__wrapped__(value)


_SCALARS = frozenset({int, float, bool, type(None)})


def _cacheable(value: Any) -> bool:
    """Whether a field value may be kept in the caches below: a JSON scalar, text of CACHED_TEXT at most.
    (By exact type: this runs for every check of every candidate rule.)"""
    kind = type(value)
    return kind in _SCALARS or kind is str and len(value) <= CACHED_TEXT


# The candidates of one event test the same few fields, each against its own rule (20 rules on one host_id,
# each with its own duration bound): each value's number and key are worked out once, not once per rule.
# typed: True, 1 and 1.0 are kept apart, as rule equality keeps them.
@lru_cache(maxsize=4096, typed=True)
def _number_of(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, str) and _NUMERIC.match(value):
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


def pattern_text(value: Any) -> str | None:
    """What glob and regex look at: a string or integer field, cut to REGEX_INPUT_LIMIT characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return (value if isinstance(value, str) else str(value))[:REGEX_INPUT_LIMIT]


def forget_values() -> None:
    """Empty the caches of field values' numbers and keys (rules.load, before it compacts a large rule set:
    a cached value from parsing would pin the parser's memory)."""
    _number_of.cache_clear()
    _eq_key.cache_clear()


def eq_key(value: Any) -> tuple:
    """The key two values share exactly when rule equality says they are equal."""
    kind = type(value)
    # A whole number (a meeting id, as a number or as ASCII digits) keyed by its int: equal to, and hashed
    # as, the Decimal _eq_key makes (up to 18 digits, within Decimal's 28 of precision), without the cache
    # (each delivery brings its own meeting id: a cache miss, a Decimal and an eviction).
    if kind is int and -10**18 < value < 10**18 or kind is str and 0 < len(value) <= 18 and value.isascii() and value.isdigit():
        return ("n", int(value))
    return _eq_key(value) if _cacheable(value) else _eq_key.__wrapped__(value)


@lru_cache(maxsize=4096, typed=True)
def _eq_key(value: Any) -> tuple:
    number = number_of(value)
    if number is not None:
        return ("n", number.normalize() if number else Decimal(0))
    if isinstance(value, bool):
        return ("b", value)
    if value is None:
        return ("z",)
    if isinstance(value, str):
        return ("s", value)
    return ("x", repr(value))


def show(value: Any, path: str = "") -> str:
    """A value as explain and the verdicts print it; a secret-bearing field (by `path`, or inside an
    object) is shown redacted, as the stored body shows it."""
    if value is MISSING:
        return "missing"
    if path:
        value = redact_at(path, value)
        if value == REDACTED:
            return REDACTED
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- matchers: test one field's value --------------------------------------------------------


@dataclass(frozen=True)
class Equals:
    value: Any
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "key", eq_key(self.value))

    def test(self, seen: Any) -> bool:
        return seen is not MISSING and eq_key(seen) == self.key

    def describe(self) -> str:
        return f"equal {self.value!r}"

    def states(self) -> str:
        return f"equals {self.value!r}"


@dataclass(frozen=True)
class In:
    values: tuple
    keys: frozenset = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "keys", frozenset(eq_key(v) for v in self.values))

    def test(self, seen: Any) -> bool:
        return seen is not MISSING and not isinstance(seen, (dict, list)) and eq_key(seen) in self.keys

    def describe(self) -> str:
        return f"be one of {list(self.values)!r}"

    def states(self) -> str:
        return f"is one of {list(self.values)!r}"


@dataclass(frozen=True)
class Pattern:
    """glob (case-insensitive shell pattern, the whole value; Python's re, whose translation of a glob
    cannot backtrack) or regex (search anywhere in the value, with RE2: linear time in the text,
    whatever the pattern), on strings and numbers."""

    op: str
    source: str
    compiled: Any = field(repr=False, compare=False)  # re.Pattern (glob) or an RE2 regexp (regex)

    def test(self, seen: Any) -> bool:
        # pattern_text's case for text, inline: encoded() on a crowded 10,000-rule delivery (21 glob tests)
        # took 35 µs with it, 37 µs without (3 alternating runs)
        text = seen[:REGEX_INPUT_LIMIT] if type(seen) is str else pattern_text(seen)
        if text is None:
            return False
        if self.op == "glob":
            return self.compiled.match(text) is not None
        try:
            return self.compiled.search(text) is not None
        except UnicodeEncodeError:  # a lone surrogate (a text cut mid-emoji): RE2 reads UTF-8
            return self.compiled.search(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")) is not None

    def describe(self) -> str:
        return f"match {self.op} {self.source!r}"

    def states(self) -> str:
        return f"matches {self.op} {self.source!r}"


@dataclass(frozen=True)
class Contains:
    """A case-insensitive substring, on strings and numbers."""

    text: str
    folded: str = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "folded", self.text.casefold())

    def test(self, seen: Any) -> bool:
        text = pattern_text(seen)
        return text is not None and self.folded in text.casefold()

    def describe(self) -> str:
        return f"contain {self.text!r}"

    def states(self) -> str:
        return f"contains {self.text!r}"


@dataclass(frozen=True)
class Exists:
    expected: bool

    def test(self, seen: Any) -> bool:
        return (seen is not MISSING) == self.expected

    def describe(self) -> str:
        return "exist" if self.expected else "not exist"

    def states(self) -> str:
        return "exists" if self.expected else "does not exist"


_SIGNS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


_COMPARE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


@dataclass(frozen=True)
class Compare:
    op: str  # gt | gte | lt | lte
    bound: Decimal
    holds: Any = field(init=False, repr=False, compare=False)  # the operator of `op`

    def __post_init__(self):
        object.__setattr__(self, "holds", _COMPARE[self.op])

    def test(self, seen: Any) -> bool:
        number = number_of(seen)
        return number is not None and self.holds(number, self.bound)

    def describe(self) -> str:
        return f"be {_SIGNS[self.op]} {self.bound}"

    def states(self) -> str:
        return f"is {_SIGNS[self.op]} {self.bound}"


@dataclass(frozen=True)
class NotMatcher:
    inner: Any

    def test(self, seen: Any) -> bool:
        return seen is not MISSING and not self.inner.test(seen)

    def describe(self) -> str:
        return f"not {self.inner.describe()}"

    def states(self) -> str:
        return f"does not {self.inner.describe()}"


@dataclass(frozen=True)
class AllOf:
    """A mapping of operators: every one must hold."""

    matchers: tuple

    def test(self, seen: Any) -> bool:
        for matcher in self.matchers:  # a loop, not all() over a generator: this runs for every candidate rule
            if not matcher.test(seen):
                return False
        return True

    def describe(self) -> str:
        return " and ".join(m.describe() for m in self.matchers)

    def states(self) -> str:
        return " and ".join(m.states() for m in self.matchers)


# --- conditions: test an event ---------------------------------------------------------------


class Failure(NamedTuple):
    """Why a condition did not hold. `also` holds the other failing conditions of the same rule,
    for explain: str() is then one line per failing condition. A named tuple, not a frozen dataclass:
    every candidate rule a delivery misses makes one, and this is four times cheaper to make."""

    check: str
    path: str = ""
    seen: str = ""
    line: int = 0
    also: tuple = ()

    def line_text(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        if self.path:
            return f"{self.path} {self.check}: saw {self.seen}{where}"
        return f"{self.check}{where}"

    def __str__(self) -> str:
        if not self.also:
            return self.line_text()
        every = (self, *self.also)
        return f"{len(every)} conditions failed:" + "".join(f"\n{INDENT}- {f.line_text()}" for f in every)


INDENT = " " * 12  # under the rule name in explain's "  no match  NAME" lines


def all_failures(condition: Any, event: Event) -> list[Failure]:
    """Every failing part of a condition (the parts of `all`, flattened), not only the first."""
    if isinstance(condition, AllConditions):
        out: list[Failure] = []
        for part in condition.conditions:
            out.extend(all_failures(part, event))
        return out
    failed = condition.failure(event)
    return [failed] if failed else []


@dataclass(frozen=True)
class FieldCondition:
    path: str
    matcher: Any
    line: int = 0

    def holds(self, event: Event) -> bool:
        # Rules written from one template share their matchers (rules.load interns them): whether this
        # field passes this matcher is worked out once per event, not once per candidate rule.
        # The entry keeps its matcher: an id is only unique while its object lives (an event explained
        # against rules reloaded meanwhile must not read a freed matcher's result under a reused id).
        key = self.check()
        held = event.cache.get(key)
        if held is None or held[0] is not self.matcher:
            held = event.cache[key] = (self.matcher, self.matcher.test(event.field(self.path)))
        return held[1]

    def check(self) -> tuple:
        """What this condition checks, as a key: conditions with the same key pass or fail together on any
        event (the same matcher object on the same path). Made on demand: kept on each of 10,000 rules'
        conditions, such keys cost megabytes."""
        return id(self.matcher), self.path

    def failure(self, event: Event) -> Failure | None:
        if self.holds(event):
            return None
        return Failure(self.should, self.path, self.shown(event), self.line)

    def shown(self, event: Event) -> str:
        """The field's value as a failure shows it (worked out once per event)."""
        shown = event.cache.get(("shown", self.path))
        if shown is None:
            shown = event.cache[("shown", self.path)] = show(event.field(self.path), self.path)
        return shown

    @cached_property
    def should(self) -> str:
        return f"should {self.matcher.describe()}"

    def describe(self) -> str:
        return f"{self.path} {self.matcher.states()}"


@dataclass(frozen=True)
class AllConditions:
    conditions: tuple
    line: int = 0

    def failure(self, event: Event) -> Failure | None:
        for condition in self.conditions:
            failed = condition.failure(event)
            if failed:
                return failed
        return None

    def describe(self) -> str:
        if len(self.conditions) == 1:
            return self.conditions[0].describe()
        return "all of (" + "; ".join(c.describe() for c in self.conditions) + ")"


@dataclass(frozen=True)
class AnyCondition:
    conditions: tuple
    line: int = 0

    def failure(self, event: Event) -> Failure | None:
        failures = []
        for condition in self.conditions:
            failed = condition.failure(event)
            if failed is None:
                return None
            failures.append(failed)
        return Failure("any: none held: " + "; ".join(str(f) for f in failures), line=self.line)

    def describe(self) -> str:
        return "any of (" + "; ".join(c.describe() for c in self.conditions) + ")"


@dataclass(frozen=True)
class NotCondition:
    inner: Any
    line: int = 0

    def failure(self, event: Event) -> Failure | None:
        if self.inner.failure(event) is None:
            return Failure(f"not: {self.inner.describe()}{_witness(self.inner, event)} (it should not)", line=self.line)
        return None

    def describe(self) -> str:
        return f"not ({self.inner.describe()})"


@dataclass(frozen=True)
class Unless:
    """A rules file's top-level `unless:`: every rule in the file fails while it holds."""

    inner: Any
    where: str  # file:line of the unless

    def failure(self, event: Event) -> Failure | None:
        if self.inner.failure(event) is None:
            return Failure(f"excluded by file-level unless ({self.where}): {self.inner.describe()}"
                           f"{_witness(self.inner, event)}")
        return None

    def describe(self) -> str:
        return f"unless ({self.inner.describe()})"


def _witness(condition: Any, event: Event) -> str:
    """': saw VALUE' for a single field condition, so explain shows what made it hold."""
    if isinstance(condition, FieldCondition):
        return f": saw {show(event.field(condition.path), condition.path)}"
    return ""


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class During:
    """A weekly time window in a timezone, tested at the event's event_ts.

    A window whose `to` is before its `from` spans midnight and belongs to the day it started on:
    {days: [fri], from: "22:00", to: "02:00"} holds on Saturday at 01:00. from == to means all day.
    """

    days: frozenset        # weekday numbers, Monday 0
    start: int             # minutes after midnight
    end: int
    tz: str
    line: int = 0

    def failure(self, event: Event) -> Failure | None:
        if event.ts_ms is None:
            return Failure("during: the event has no usable event_ts", "event_ts", show(event.field("event_ts")), self.line)
        local = datetime.fromtimestamp(event.ts_ms / 1000, tz=timezone.utc).astimezone(ZoneInfo(self.tz))
        minute, day = local.hour * 60 + local.minute, local.weekday()
        if self.start < self.end:
            inside = self.start <= minute < self.end
        elif self.start > self.end:
            inside = minute >= self.start or minute < self.end
            if minute < self.end:
                day = (day - 1) % 7
        else:
            inside = True
        if inside and day in self.days:
            return None
        return Failure(f"should be during {self.window()}", "event_ts", local.strftime("%a %H:%M %Z"), self.line)

    def describe(self) -> str:
        return f"during {self.window()}"

    def window(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"{days} {self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d} {self.tz}"


TRUE = AllConditions(())


# --- rules and actions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Secret:
    """A value resolved only at the moment of the call: '${NAME}' templates or 'enc:' tokens."""

    ref: str

    def masked(self) -> str:
        return masked_ref(self.ref)


@dataclass(frozen=True)
class Template:
    """A string with {{ field.path }} placeholders, filled from the event."""

    parts: tuple  # str literals and ("field", path) pairs


@dataclass(frozen=True)
class ActionSpec:
    kind: str           # livestream.start | livestream.stop | livestream.configure
    args: tuple         # ((name, value), ...) where value is a scalar, Template or Secret
    line: int = 0


@dataclass(frozen=True)
class Example:
    event: dict
    expect: bool
    line: int = 0


@dataclass(frozen=True)
class Rule:
    name: str
    events: tuple
    condition: Any
    actions: tuple
    enabled: bool = True
    source: str = ""      # file:line
    examples: tuple = ()
    accounts: tuple = ()  # the names of the accounts it applies to; (): every account

    def account_failure(self, account: str | None) -> Failure | None:
        """Why the rule does not apply to an event of `account` (None: the account is not known, as in
        `explain` without --account), or None when it does."""
        if not self.accounts or account is None or account in self.accounts:
            return None
        return Failure(f"the event is account {account}'s, the rule is for {', '.join(self.accounts)}")

    def failure(self, event: Event, account: str | None = None) -> Failure | None:
        if not self.enabled:
            return Failure("the rule is disabled (enabled: false)")
        if event.name not in self.events:
            return Failure(f"the event is {event.name}, the rule is on {', '.join(self.events)}")
        wrong_account = self.account_failure(account)
        if wrong_account:
            return wrong_account
        failures = all_failures(self.condition, event)
        if not failures:
            return None
        return failures[0]._replace(also=tuple(failures[1:])) if len(failures) > 1 else failures[0]
