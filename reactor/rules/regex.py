"""Pure: a rule's `regex:` compiled with RE2, whose matching time is linear in the text whatever the
pattern, so no event text (a topic, an attendee's display name) can make a match backtrack.

RE2 reads Python's syntax except for what needs backtracking; those patterns fail at load with the fix.
"""
from __future__ import annotations

import re

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print each refused pattern on stderr; the load error says it

# (what RE2 said starts with, what the pattern used, what to do instead)
_FIXES = (
    (("invalid perl operator: (?=", "invalid perl operator: (?!", "invalid perl operator: (?<"),
     "a lookahead or lookbehind",
     "test the other part with a second condition, or use not: {regex: ...} for a negative"),
    (("invalid perl operator: (?P=",), "a backreference", "match the repeated text explicitly"),
    (("invalid perl operator: (?>",), "an atomic group", "drop the (?>...) group: RE2 never backtracks"),
    (("invalid perl operator: (?x", "invalid perl operator: (?a", "invalid perl operator: (?u",
      "invalid perl operator: (?L", "invalid perl operator: (?#"),
     "a Python-only flag or comment", "RE2 knows the flags i, m, s and U only (e.g. (?i) for any case)"),
    (("bad repetition operator: ++", "bad repetition operator: *+", "bad repetition operator: ?+"),
     "a possessive quantifier", "use a plain + or *: RE2 never backtracks"),
    (("invalid repetition size",), "a counted repetition above 1000", "use + or * or a smaller {n}"),
    (("pattern too large",), "a pattern too large to compile", "simplify it (fewer or smaller {n} counts)"),
)


class RegexRefused(ValueError):
    """A regex RE2 cannot run; the message says what to write instead."""


def compile_regex(text: str):
    """An RE2 regexp for `text` (search semantics, as re.search); raise RegexRefused with the fix."""
    try:
        return re2.compile(text, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) \
            else str(exc)
    raise RegexRefused(_explain(text, reason))


def _explain(text: str, reason: str) -> str:
    if re.search(r"\\[1-9]", text) and "invalid escape sequence: \\" in reason and reason[-1:].isdigit():
        return f"{reason}: RE2 (linear time, so event text cannot stall a match) has no backreferences: " \
               f"match the repeated text explicitly"
    if reason.startswith("invalid escape sequence: \\Z"):
        return f"{reason}: write \\z for the end of the text"
    for starts, what, fix in _FIXES:
        if reason.startswith(starts):
            return f"{reason}: {what} is not available in RE2 (linear time, so event text cannot stall " \
                   f"a match): {fix}"
    return reason
